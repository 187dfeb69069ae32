"""The ``lokal`` command: thin commands over the library.

Only this module configures logging and turns lokal's errors into messages and exit codes.
``lokal --help`` imports neither torch nor llama_cpp.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from lokal import __version__
from lokal.errors import LokalError

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _friendly_errors() -> Iterator[None]:
    """lokal's own errors become one-line messages with exit code 1 (at the CLI boundary only)."""
    try:
        yield
    except LokalError as exc:
        msg = f"{type(exc).__name__}: {exc}"
        raise click.ClickException(msg) from exc


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    click.echo(line.rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lokal")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug) to stderr.")
def cli(verbose: int) -> None:
    """lokal: local embeddings and reranking for retrieval. No text leaves the machine.

    \b
    Examples:
      lokal models list                      # what is on disk, and what to shortlist
      lokal models pack all-MiniLM-L6-v2     # make the default q8_0 GGUF from bundled weights
      lokal models info all-MiniLM-L6-v2     # profile, dimension, context, sha256
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@cli.group()
def models() -> None:
    """List, inspect, pack and verify models."""


@models.command("list")
@json_option
def models_list(as_json: bool) -> None:
    """Models on disk, and a catalog of recommended models to shortlist from.

    \b
    Example:
      lokal models list --json
    """
    from lokal import catalog, packing
    from lokal import models as m

    on_disk = []
    for path in packing.cached_models():
        try:
            manifest = packing.read_manifest(path)
        except LokalError:
            manifest = {}
        on_disk.append(
            {
                "name": path.name,
                "path": str(path),
                "size": path.stat().st_size,
                "quantization": manifest.get("quantization", "?"),
                "source": manifest.get("source", "?"),
            }
        )
    bundled = m.bundled_default_dir()
    entries = [
        {
            "hub_id": e.hub_id,
            "dimension": e.dimension,
            "context": e.context,
            "params_m": e.params_m,
            "licence": e.licence,
            "mteb_retrieval": e.mteb_retrieval,
            "source": e.source,
            "note": e.note,
        }
        for e in catalog.CATALOG
    ]
    if as_json:
        _emit_json(
            {
                "model_cache": str(m.models_dir()),
                "on_disk": on_disk,
                "bundled": str(bundled) if bundled else None,
                "catalog": entries,
            }
        )
        return
    click.echo(f"On disk (model cache {m.models_dir()}):")
    if on_disk:
        _table(
            [
                [d["name"], d["quantization"], f"{d['size'] / 1e6:.1f} MB", d["source"]]
                for d in on_disk
            ],
            ["file", "quant", "size", "source"],
        )
    else:
        click.echo("  (none yet: lokal models pack all-MiniLM-L6-v2)")
    if bundled:
        click.echo(f"Bundled sentence-transformers weights: all-MiniLM-L6-v2 at {bundled}")
    click.echo("\nCatalog (published English MTEB retrieval nDCG@10; check with lokal eval):")
    _table(
        [
            [
                e["hub_id"],
                str(e["dimension"]),
                str(e["context"]),
                f"{e['params_m']:g}M",
                e["licence"],
                "-" if e["mteb_retrieval"] is None else f"{e['mteb_retrieval']:.2f}",
                e["note"],
            ]
            for e in entries
        ],
        ["model", "dim", "context", "size", "licence", "MTEB retr.", "note"],
    )


@models.command("info")
@click.argument("model", required=False)
@click.option(
    "--backend",
    type=click.Choice(["auto", "sentence-transformers", "gguf"]),
    default="auto",
    show_default=True,
)
@json_option
def models_info(model: str | None, backend: str, as_json: bool) -> None:
    """Profile, dimension, context, sha256 and size of MODEL (default: the embedded default).

    MODEL is a .gguf path, a sentence-transformers directory, a name in the model cache or a
    hub id. Nothing is loaded: this reads the files only.

    \b
    Example:
      lokal models info ~/.cache/lokal/models/all-MiniLM-L6-v2.q8_0.gguf
    """
    from lokal import models as m
    from lokal.packing import source_sha256

    with _friendly_errors():
        r = m.resolve(model, backend)
        info: dict[str, Any] = {
            "name": r.name,
            "backend": r.backend,
            "location": r.location,
            "reason": r.reason,
            "quantization": r.quantization,
            "profile": r.profile.to_dict(),
        }
        if r.path is not None:
            files = [r.path] if r.path.is_file() else [p for p in r.path.rglob("*") if p.is_file()]
            info["size"] = sum(p.stat().st_size for p in files)
            info["source_sha256"] = source_sha256(r)
            if r.path.is_file():
                info["sha256"] = m.file_sha256(r.path)
    if as_json:
        _emit_json(info)
        return
    p = r.profile
    rows = [
        ["name", r.name],
        ["backend", r.backend],
        ["location", r.location],
        ["chosen because", r.reason],
        ["quantization", r.quantization],
        ["family", p.family + ("" if p.known else " (unknown model)")],
        ["query prefix", repr(p.query_prefix)],
        ["document prefix", repr(p.document_prefix)],
        ["context (tokens)", str(p.context_length)],
        ["dimension", str(p.dimension)],
        ["pooling", str(p.pooling)],
        ["normalized", str(p.normalize)],
        ["matryoshka dims", ", ".join(map(str, p.matryoshka_dims)) or "-"],
        ["profile source", p.source],
    ]
    for key in ("size", "sha256", "source_sha256"):
        if key in info:
            rows.append([key, str(info[key])])
    _table(rows, ["field", "value"])


@models.command("pack")
@click.argument("source")
@click.option(
    "-q",
    "--quantize",
    "quantization",
    default="q8_0",
    show_default=True,
    help="q8_0 (default: near-lossless), f16, f32, or a smaller type such as q5_0 "
    "or q4_k_m (measure with lokal eval: small models lose quality at 4 bits).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of lokal's model cache.",
)
@click.option("--name", help="Name in the model cache (default: the source's name).")
@json_option
def models_pack(
    source: str, quantization: str, output: Path | None, name: str | None, as_json: bool
) -> None:
    """Pack SOURCE (a sentence-transformers/HF directory or hub id) into a GGUF.

    The file records the source weights' sha256 and the model's profile, and gets a manifest
    beside it (FILE.json) for `lokal models verify`. Pack on a connected machine, copy the
    .gguf and its .json to an offline box, verify there.

    \b
    Examples:
      lokal models pack all-MiniLM-L6-v2            # bundled weights -> model cache, q8_0
      lokal models pack BAAI/bge-small-en-v1.5 -o bge-small.q8_0.gguf
    """
    from lokal import packing

    with _friendly_errors():
        try:
            packed = packing.pack(source, quantization=quantization, output=output, name=name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--quantize") from exc
    if as_json:
        _emit_json({"path": str(packed.path), **packed.manifest})
    else:
        mb = packed.manifest["size"] / 1e6
        click.echo(
            f"packed {source} -> {packed.path} ({quantization}, {mb:.1f} MB, "
            f"sha256 {packed.manifest['sha256'][:16]}...)"
        )


@models.command("verify")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def models_verify(files: tuple[Path, ...], as_json: bool) -> None:
    """Check packed GGUF files against their manifests (size and sha256).

    With no FILES, checks every model in lokal's model cache. Exits 1 if any file fails.

    \b
    Example:
      lokal models verify /srv/models/bge-small.q8_0.gguf
    """
    from lokal import packing

    targets = list(files) or packing.cached_models()
    results = []
    for path in targets:
        try:
            manifest = packing.verify(path)
            results.append({"path": str(path), "ok": True, "sha256": manifest["sha256"]})
        except (LokalError, OSError) as exc:
            results.append({"path": str(path), "ok": False, "error": str(exc)})
    if as_json:
        _emit_json(results)
    else:
        if not results:
            click.echo("no models to verify")
        for r in results:
            click.echo(
                f"{'OK  ' if r['ok'] else 'FAIL'} {r['path']}"
                + ("" if r["ok"] else f": {r['error']}")
            )
    if any(not r["ok"] for r in results):
        sys.exit(1)


def main() -> None:
    cli(prog_name="lokal")


if __name__ == "__main__":
    main()
