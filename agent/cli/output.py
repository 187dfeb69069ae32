"""What the commands print, and how lokal's errors and warnings reach the terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from lokal.errors import LokalError


@contextmanager
def friendly_errors() -> Iterator[None]:
    """lokal's own errors become one-line messages with exit code 1 (at the CLI boundary only)."""
    try:
        yield
    except LokalError as exc:
        msg = f"{type(exc).__name__}: {exc}"
        raise click.ClickException(msg) from exc


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    click.echo(line.rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Warnings (a chunk cut to fit the reranker's context, a GGUF parity caveat) as one
    'warning:' line each on stderr, not Python's two-line format with a source line."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            for w in caught:
                click.echo(f"warning: {w.category.__name__}: {w.message}", err=True)


class ProgressBars:
    """``progress(stage, done, total)`` drawn as one bar per stage on a terminal's stderr;
    nothing at all when stderr is not a terminal (piped, in scripts, in tests)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._bar: Any = None
        self._stage: str | None = None
        self._done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            self._bar = click.progressbar(length=total, label=stage, file=sys.stderr)
            self._bar.__enter__()
            self._stage, self._done = stage, 0
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar, self._stage = None, None
