"""What the commands print, and how lokal's errors and warnings reach the terminal."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
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
        warnings.simplefilter("always")  # every warning is shown, whatever filters are set
        try:
            yield
        finally:
            for w in caught:
                click.echo(f"warning: {w.category.__name__}: {w.message}", err=True)


#: Seconds between two plain progress lines when stderr is not a terminal (test seam: the env var).
PROGRESS_SECONDS_ENV = "LOKAL_PROGRESS_SECONDS"
PROGRESS_SECONDS = 10.0


class ProgressBars:
    """``progress(stage, done, total, work=None)`` as one bar per stage on a terminal's stderr
    (done of total, the rate, the time left); when stderr is not a terminal (piped, a log,
    systemd), one plain line every ``LOKAL_PROGRESS_SECONDS`` (10 s) and one when a stage ends.

    ``unit`` names what ``done`` counts (files, texts); ``work`` optionally counts the work
    done so far in ``work_unit`` (chunks), whose rate is then shown instead. ``lines``
    receives the plain lines (default: stderr; the agent passes its logger)."""

    def __init__(
        self,
        unit: str = "",
        work_unit: str | None = None,
        *,
        lines: Callable[[str], None] | None = None,
        tty: bool | None = None,
    ) -> None:
        self.enabled = sys.stderr.isatty() if tty is None else tty
        self.unit = unit
        self.work_unit = work_unit
        self._lines = lines or (lambda line: click.echo(line, err=True))
        self.interval = _progress_seconds()
        self._bar: Any = None
        self._stage: str | None = None
        self._done = self._total = 0
        self._work: int | None = None
        self._started = self._last_line = 0.0

    def __call__(self, stage: str, done: int, total: int, work: int | None = None) -> None:
        now = time.monotonic()
        if stage != self._stage:
            self.close()
            self._stage, self._started, self._last_line = stage, now, now
            if self.enabled:
                self._bar = click.progressbar(
                    length=max(total, 1),
                    label=stage,
                    file=sys.stderr,
                    show_pos=True,
                    show_eta=True,
                    item_show_func=lambda _: self._rate_text(),
                )
                self._bar.__enter__()
            else:
                self._lines(f"{stage}: {total} {self.unit}" if self.unit else stage)
            self._done = 0
        self._total, self._work = total, work
        step, self._done = done - self._done, done  # before the bar draws its rate
        if self._bar is not None:
            self._bar.update(step, stage)
        elif now - self._last_line >= self.interval and done < total:
            self._last_line = now
            self._lines(self.line(done))

    def line(self, done: int) -> str:
        """``stage: 120 of 5000 files, 340 chunks (52.1 chunks/s), about 1m 34s left``."""
        text = f"{self._stage}: {done} of {self._total} {self.unit}".rstrip()
        rate = self._rate_text()
        text += f", {rate}" if rate else ""
        elapsed = time.monotonic() - self._started
        if 0 < done < self._total and elapsed > 0:
            text += f", about {_duration(elapsed / done * (self._total - done))} left"
        elif done >= self._total:
            text += f", done in {_duration(elapsed)}"
        return text

    def _rate_text(self) -> str:
        elapsed = time.monotonic() - self._started
        if elapsed <= 0:
            return ""
        if self._work is not None and self.work_unit:
            return f"{self._work} {self.work_unit} ({self._work / elapsed:.1f} {self.work_unit}/s)"
        return f"{self._done / elapsed:.1f} {self.unit}/s".replace(" /s", "/s")

    def close(self) -> None:
        """End the current stage: the bar's last state, or the stage's last line."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        elif self._stage is not None:
            self._lines(self.line(self._done))
        self._stage = None


def _progress_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(PROGRESS_SECONDS_ENV, PROGRESS_SECONDS)))
    except ValueError:
        return PROGRESS_SECONDS


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class DownloadBar:
    """``progress(bytes_done, bytes_total)`` of a download: a bar on a terminal's stderr,
    nothing otherwise (the command prints what it placed when it is done)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled or not total:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=total,
                label=self.label,
                file=sys.stderr,
                show_eta=True,
                item_show_func=lambda _: f"{self._done / 1e6:.1f} of {total / 1e6:.1f} MB",
            )
            self._bar.__enter__()
        step, self._done = done - self._done, done  # before the bar draws the count
        self._bar.update(step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


# ---- logging (only the CLI configures it) ------------------------------------------------------

#: syslog priorities journald reads from a ``<N>`` line prefix (sd-daemon(3)).
_JOURNAL_PRIORITY = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Prefixes each line with its journald priority: ``<3>`` error and critical, ``<4>``
    warning, ``<6>`` info, ``<7>`` debug, so ``journalctl -p warning`` shows the warnings."""

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _JOURNAL_PRIORITY if record.levelno >= level), 7)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines() or [""])


def stderr_is_journal() -> bool:
    """Whether stderr is systemd's journal stream: ``JOURNAL_STREAM`` (``DEVICE:INODE``, set by
    systemd when it connects stdout or stderr to the journal) names the very stream stderr
    is. ``INVOCATION_ID`` alone is not enough: a unit whose stderr goes to a file or a pipe has
    it too, and ``<4>`` prefixes would land in that file as text (systemd.exec(5))."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def configure_logging(level: int, fmt: str, *, replace: bool = False) -> None:
    """The root logger: one stderr handler at ``level``; journald priorities under systemd,
    where the journal stamps the time itself (so ``%(asctime)s`` is left out).

    Like ``logging.basicConfig``, nothing changes when the root logger already has handlers
    someone else installed (a program calling ``cli`` in-process, pytest) unless ``replace``."""
    root = logging.getLogger()
    foreign = [h for h in root.handlers if not getattr(h, "_lokal", False)]
    if foreign and not replace:
        return
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._lokal = True  # type: ignore[attr-defined]  # ours: replaced by the next call
    if stderr_is_journal():
        fmt = fmt.replace("%(asctime)s ", "")
        handler.setFormatter(JournalFormatter(fmt))
    else:
        handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
