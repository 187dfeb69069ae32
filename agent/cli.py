"""The ``lokal`` command: thin commands over the library.

Only this module configures logging and turns lokal's errors into messages and exit codes.
``lokal --help`` imports neither torch nor llama_cpp.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
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
    hub id; a reranker (cross-encoder) shows its reranker profile. Nothing is loaded: this
    reads the files only.

    \b
    Example:
      lokal models info ~/.cache/lokal/models/all-MiniLM-L6-v2.q8_0.gguf
    """
    from lokal import models as m
    from lokal.packing import source_sha256

    with _friendly_errors():
        r = m.resolve(model, backend)
        reranker = _reranker_profile(r)
        info: dict[str, Any] = {
            "name": reranker.name if reranker else r.name,
            "kind": "reranker" if reranker else "embedding",
            "backend": r.backend,
            "location": r.location,
            "reason": r.reason,
            "quantization": r.quantization,
            "profile": dataclasses.asdict(reranker) if reranker else r.profile.to_dict(),
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
    rows = [
        ["name", info["name"]],
        ["kind", info["kind"]],
        ["backend", r.backend],
        ["location", r.location],
        ["chosen because", r.reason],
        ["quantization", r.quantization],
    ]
    if reranker is not None:
        rp = reranker
        gguf_support = rp.gguf + (f" ({rp.gguf_note})" if rp.gguf_note else "")
        rows += [
            ["family", rp.family + ("" if rp.known else " (unknown reranker)")],
            ["architecture", rp.architecture or "-"],
            ["context (tokens)", str(rp.context_length)],
            ["activation", rp.activation],
            ["input", rp.input_format],
            ["on GGUF", gguf_support],
            ["profile source", rp.source],
        ]
    else:
        rows += _embedding_profile_rows(r.profile)
    for key in ("size", "sha256", "source_sha256"):
        if key in info:
            rows.append([key, str(info[key])])
    _table(rows, ["field", "value"])


def _reranker_profile(r: Any) -> Any:
    """The reranker profile of a resolved model that is a cross-encoder, else None."""
    from lokal import profiles

    return profiles.reranker_profile(r) if profiles.model_kind(r) == profiles.RERANKER else None


def _embedding_profile_rows(p: Any) -> list[list[str]]:
    return [
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


def index_option(f: F) -> F:
    return click.option(
        "--index",
        "index_path",
        required=True,
        envvar="LOKAL_INDEX",
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The index file.",
    )(f)


@cli.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@index_option
@click.option(
    "--model",
    help="Embedding model (default: the embedded default, as a GGUF when "
    "packed). Must match the model an existing index records.",
)
@click.option(
    "--chunk-tokens",
    type=click.IntRange(16),
    help="Chunk size in tokens (default: the model's context).",
)
@click.option(
    "--overlap",
    type=click.IntRange(0),
    default=32,
    show_default=True,
    help="Tokens repeated between neighbouring chunks.",
)
@click.option(
    "--exclude",
    multiple=True,
    help="gitignore-style pattern to leave out "
    "(repeatable; added to the defaults: .git/, editor swap and temp files...).",
)
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="Follow symlinks inside the roots (loops are cut; nothing outside the roots is read).",
)
@click.option(
    "--max-file-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="A file not parsed, chunked and embedded within this long is recorded as failed.",
)
@json_option
def index_cmd(
    paths: tuple[Path, ...],
    index_path: Path,
    model: str | None,
    chunk_tokens: int | None,
    overlap: int,
    exclude: tuple[str, ...],
    follow_symlinks: bool,
    max_file_seconds: float,
    as_json: bool,
) -> None:
    """Index PATHS once into an index file, then exit.

    Unchanged files cost nothing (size, times and inode first, then a hash); changed files are
    re-chunked and re-embedded, each in one transaction; files gone from disk leave the index
    (unless their whole root is missing, e.g. an unmounted disk).

    \b
    Example:
      lokal index /srv/manuals --index /var/lib/lokal/index.db
      lokal index docs/ --index docs.db --json | jq .indexed
    """
    from lokal.agent import access
    from lokal.agent.ingest import DEFAULT_EXCLUDE, Ingest, Settings, writer_lock
    from lokal.embedder import Embedder
    from lokal.index import Index

    settings = Settings(
        chunk_tokens=chunk_tokens,
        overlap=overlap,
        exclude=DEFAULT_EXCLUDE + exclude,
        follow_symlinks=follow_symlinks,
        max_file_seconds=max_file_seconds,
    )
    with _friendly_errors():
        embedder = Embedder(model)
        # the agent's rule for its directory and files: the group `lokal` may read them
        access.prepare_directory(index_path.absolute().parent, access.DEFAULT_GROUP)
        with writer_lock(index_path):
            if index_path.exists():
                index = Index.open(index_path, embedder.identity, writable=True, agent=True)
            else:
                index = Index.create(index_path, embedder.identity, managed_by="agent")
            with index:
                access.share_with_group(index_path, access.DEFAULT_GROUP)
                summary = Ingest(index, embedder, settings).run(list(paths))
            access.share_with_group(index_path, access.DEFAULT_GROUP)
    if as_json:
        _emit_json(summary.to_dict())
    else:
        _table(
            [
                [k, str(getattr(summary, k))]
                for k in ("seen", "indexed", "unchanged", "skipped", "failed", "removed", "chunks")
            ],
            ["files", "count"],
        )
        for p in summary.problems:
            click.echo(f"  {p['path']}: {p['reason']}", err=True)
        for root in summary.missing_roots:
            click.echo(f"  root not available (documents kept): {root}", err=True)
    if summary.failed:
        sys.exit(1)


def _open_for_search(
    index_path: Path | str, site: tuple[str, ...] = (), schema: str | None = None
) -> tuple[Any, Any]:
    from lokal.central.reader import open_for_search

    return open_for_search(index_path, site=list(site) or None, schema=schema)


class IndexLocation(click.ParamType):
    """An index file, or a central store's postgresql:// URL (kept as a string)."""

    name = "FILE|URL"

    def convert(self, value: Any, param: Any, ctx: Any) -> Path | str:
        from lokal.central.reader import is_central

        if isinstance(value, Path) or not is_central(str(value)):
            return Path(value)  # Index.open says what is wrong with it
        return str(value)


def searchable_index_option(f: F) -> F:
    """--index FILE|URL, --site and --schema: an index file or a central store."""
    f = click.option(
        "--schema",
        help="The central store's schema (collection); default: lokal. URL only.",
    )(f)
    f = click.option(
        "--site",
        "sites",
        multiple=True,
        help="Search only this site's chunks (repeatable). URL only.",
    )(f)
    return click.option(
        "--index",
        "index_path",
        required=True,
        envvar="LOKAL_INDEX",
        show_envvar=True,
        type=IndexLocation(),
        help="The index file, or a central store: postgresql://USER@HOST/DB (password from "
        "PGPASSWORD or ~/.pgpass).",
    )(f)


def _central_only(index_path: Path | str, sites: tuple[str, ...], schema: str | None) -> None:
    if (sites or schema) and not isinstance(index_path, str):
        msg = "--site and --schema apply to a central store (--index postgresql://...) only"
        raise click.UsageError(msg)


def _rank_with_warnings(reranker: Any) -> Any:
    def rank(query: str, texts: list[str], top_n: int | None) -> Any:
        with _warnings_to_stderr():
            return reranker.rank(query, texts, top_n=top_n)

    return rank


@cli.command("search")
@click.argument("query")
@searchable_index_option
@click.option("-k", "k", type=click.IntRange(1), default=5, show_default=True)
@click.option(
    "--filter",
    "filter_json",
    help='Metadata filter as JSON, e.g. \'{"kind": {"$in": ["md", "txt"]}}\'.',
)
@click.option("--hybrid", is_flag=True, help="Fuse vector and full-text (BM25) rankings.")
@click.option(
    "--rerank",
    "rerank",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[MODEL]",
    help="Rerank the retrieved chunks with a local cross-encoder and keep the best k. MODEL: a "
    "cross-encoder directory, a packed .gguf, a name in the model cache or a hub id; alone: "
    "$LOKAL_RERANKER, else the one reranker packed in the model cache.",
)
@click.option(
    "--candidates",
    type=click.IntRange(1),
    help="Chunks retrieved for --rerank to reorder (default: max(4k, 20)).",
)
@json_option
def search_cmd(
    query: str,
    index_path: Path | str,
    sites: tuple[str, ...],
    schema: str | None,
    k: int,
    filter_json: str | None,
    hybrid: bool,
    rerank: str | None,
    candidates: int | None,
    as_json: bool,
) -> None:
    """Search an index: path, line range and score of the best chunks for QUERY.

    The model the index records is loaded (no model to name). With --rerank, the best
    max(4k, 20) chunks are reordered by a cross-encoder that reads the query and each chunk
    together; its score is shown first, the retrieval rank and score after it.

    \b
    Examples:
      lokal search "how do I reset the pump?" --index index.db -k 3
      lokal search "how do I reset the pump?" --index index.db -k 3 --rerank bge-reranker-base
      lokal search "pump fault" --index postgresql://reader@central/fleet --site plant-7
    """
    flt = None
    if filter_json:
        try:
            flt = json.loads(filter_json)
        except ValueError as exc:
            msg = f"not JSON: {exc}"
            raise click.BadParameter(msg, param_hint="--filter") from exc
    from lokal.retrieval import retrieve

    if candidates is not None and rerank is None:
        msg = "--candidates only applies with --rerank"
        raise click.UsageError(msg)
    _central_only(index_path, sites, schema)
    with _friendly_errors():
        reranker = None
        if rerank is not None:  # a wrong reranker fails here, before any model loads
            from lokal.reranker import Reranker

            with _warnings_to_stderr():
                reranker = Reranker(rerank or None)
        index, embedder = _open_for_search(index_path, sites, schema)
        with index:
            results = retrieve(
                index,
                query,
                k,
                embedder=embedder,
                hybrid=hybrid,
                filter=flt,
                reranker=None if reranker is None else _rank_with_warnings(reranker),
                candidates=candidates,
            )
    rows = []
    for res in results:
        h = res.hit
        row = {
            **({"site": h.site} if getattr(h, "site", None) else {}),
            "path": h.document,
            "lines": [h.line_start, h.line_end],
            "score": round(h.score, 4),
            "id": h.id,
            "text": h.text,
            "metadata": h.metadata,
        }
        if res.rerank_score is not None:
            row.update(rerank_score=round(res.rerank_score, 4), retrieval_rank=res.retrieval_rank)
        rows.append(row)
    if as_json:
        _emit_json(rows)
        return
    for r in rows:
        where = r["path"] or r["id"]
        if "site" in r:
            where = f"{r['site']}:{where}"
        if r["lines"][0] is not None:
            where += f":{r['lines'][0]}-{r['lines'][1]}"
        snippet = " ".join(str(r["text"]).split())[:160]
        if "rerank_score" in r:
            head = f"{r['rerank_score']:.3f}  {where}  (retrieved #{r['retrieval_rank']}, "
            click.echo(f"{head}{r['score']:.3f})\n       {snippet}")
        else:
            click.echo(f"{r['score']:.3f}  {where}\n       {snippet}")


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Warnings (a chunk cut to fit the reranker's context, a GGUF parity caveat) as one
    'warning:' line each on stderr, not Python's two-line format with a source line."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            for w in caught:
                click.echo(f"warning: {w.category.__name__}: {w.message}", err=True)


@cli.command("check")
@index_option
@json_option
def check_cmd(index_path: Path, as_json: bool) -> None:
    """Check an index: SQLite's integrity, chunks, vectors and full text agreeing, every
    vector readable, finite and unit length (where the model normalizes), and every indexed
    document still matching its file; reports free space (free pages and bytes, unused vector
    slots). A damaged file is reported, never a traceback. Exits 1 when something is wrong.

    \b
    Example:
      lokal check --index /var/lib/lokal/index.db --json
    """
    _check(index_path, as_json)


def _check(index_path: Path, as_json: bool) -> None:
    import hashlib

    from lokal.agent.filenames import path_of
    from lokal.index import Index

    with _friendly_errors(), Index.open(index_path) as index:
        report = index.check()
        stale = []
        try:
            documents = list(index.documents())
        except LokalError as exc:  # a damaged documents table: one more problem
            documents = []
            report.problems.append(f"documents: {exc}")
        for doc in documents:
            path = path_of(doc.uri)
            if doc.status != "indexed":
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                stale.append({"path": doc.uri, "problem": f"cannot read: {exc.strerror}"})
                continue
            if hashlib.sha256(data).hexdigest() != doc.content_hash:
                stale.append({"path": doc.uri, "problem": "content changed since indexed"})
    result = {
        "ok": not report.problems and not stale,
        "problems": report.problems,
        "stale": stale,
        "counts": report.counts,
    }
    if as_json:
        _emit_json(result)
    else:
        click.echo("OK" if result["ok"] else "PROBLEMS")
        for key, value in report.counts.items():
            click.echo(f"  {key}: {value}")
        for problem in report.problems:
            click.echo(f"  integrity: {problem}")
        for s in stale:
            click.echo(f"  stale: {s['path']}: {s['problem']}")
    if not result["ok"]:
        sys.exit(1)


# ---- lokal agent ---------------------------------------------------------------------------

DEFAULT_CONFIG = "/etc/lokal/agent.toml"


def config_option(f: F) -> F:
    return click.option(
        "--config",
        "config_path",
        default=DEFAULT_CONFIG,
        envvar="LOKAL_AGENT_CONFIG",
        show_default=True,
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The agent's TOML configuration (see agent/agent.toml).",
    )(f)


def _load_config(path: Path) -> Any:
    from lokal.agent import config

    with _friendly_errors():
        return config.load(path)


@cli.group()
def agent() -> None:
    """The edge agent: watch directories and keep an index in step with them.

    \b
    Examples:
      lokal agent run --config /etc/lokal/agent.toml
      lokal agent status --json
      lokal agent check
    """


@agent.command("run")
@config_option
def agent_run(config_path: Path) -> None:
    """Run the agent in the foreground until SIGTERM or Ctrl-C (systemd runs it so).

    It first brings the index in step with the files (changes made while it was stopped
    included), then watches the roots, rescanning them now and then. SIGTERM writes the
    current batch and exits 0.
    """
    from lokal.agent.daemon import Agent

    cfg = _load_config(config_path)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    # systemd's journal stamps lines itself; elsewhere a time helps
    fmt = (
        "%(levelname)s %(message)s"
        if "JOURNAL_STREAM" in os.environ
        else "%(asctime)s %(levelname)s %(message)s"
    )
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    with _friendly_errors():
        code = Agent(cfg).run()
    sys.exit(code)


@agent.command("status")
@config_option
@json_option
def agent_status(config_path: Path, as_json: bool) -> None:
    """Files indexed, pending and failed (with reasons), the model, index size, last scan,
    and whether the agent is running. Exits 1 when the agent is not running."""
    from lokal.agent.status import read_status

    cfg = _load_config(config_path)
    with _friendly_errors():
        status = read_status(cfg)
    if as_json:
        _emit_json(status)
    else:
        running = f"running (pid {status['pid']})" if status["running"] else "not running"
        click.echo(f"agent: {running}; state {status['state']}")
        if status["problem"]:
            click.echo(f"problem: {status['problem']}")
        click.echo(f"index: {status['index']} ({status['index_bytes'] / 2**20:.1f} MB)")
        click.echo(f"model: {status['model']}")
        counts = status["documents"]
        click.echo(
            f"files: {counts.get('indexed', 0)} indexed, {status['pending']} pending, "
            f"{counts.get('skipped', 0)} skipped, {counts.get('failed', 0)} failed; "
            f"{status['chunks']} chunks"
        )
        for r in status["roots"]:
            state = (
                f"watched ({r['watch']})" if r.get("available") else f"unavailable: {r.get('why')}"
            )
            click.echo(f"root: {r['path']}: {state}")
        if status["last_scan"]:
            click.echo(f"last scan: {status['last_scan']}")
        for p in status["problems"]:
            click.echo(f"  {p['status']}: {p['path']}: {p['reason']}")
        if "sync" in status:
            from lokal.agent.sync_cli import sync_status_line

            click.echo(sync_status_line(status["sync"]))
    if not status["running"]:
        sys.exit(1)


@agent.command("check")
@config_option
@json_option
def agent_check(config_path: Path, as_json: bool) -> None:
    """``lokal check`` on the configured index, and its directory's permissions."""
    from lokal.agent import access

    cfg = _load_config(config_path)
    for problem in access.directory_problems(cfg.index.parent, cfg.group):
        click.echo(f"warning: {problem}", err=True)
    _check(cfg.index, as_json)


@cli.command("snapshot")
@index_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def snapshot_cmd(index_path: Path, out: Path) -> None:
    """Write a consistent single-file copy of an index to OUT, safe while a writer runs
    (copying the file by hand can lose what is still in its write-ahead log).

    \b
    Example:
      lokal snapshot --index /var/lib/lokal/index.db /backup/index-$(date +%F).db
    """
    from lokal.index import Index

    with _friendly_errors(), Index.open(index_path) as index:
        index.snapshot(out)
    click.echo(f"snapshot written to {out}")


# ---- lokal serve ---------------------------------------------------------------------------


@cli.command("serve")
@click.option(
    "--model", help="Embedding model (default: the embedded default, as a GGUF when packed)."
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "sentence-transformers", "gguf"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--name",
    "names",
    multiple=True,
    help="A name clients may use for the model (repeatable; the first is listed). The "
    "model's own names always work.",
)
@click.option("--query-prefix", help="Override the profile's query prefix ('' disables).")
@click.option("--document-prefix", help="Override the profile's document prefix ('' disables).")
@click.option("--reranker", help="Cross-encoder for /v1/rerank, /v2/rerank and search reranking.")
@click.option("--reranker-name", "reranker_names", multiple=True, help="A name for the reranker.")
@click.option(
    "--index",
    "index_path",
    envvar="LOKAL_INDEX",
    show_envvar=True,
    type=IndexLocation(),
    help="A lokal index file, or a central store's postgresql:// URL, for POST /v1/search "
    "(read with the model it records).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=11435,
    show_default=True,
    help="Port (0: any free port; the address is printed when ready).",
)
@click.option(
    "--api-key",
    envvar="LOKAL_API_KEY",
    show_envvar=True,
    help="Require 'Authorization: Bearer KEY' (needed to bind a non-loopback address).",
)
@click.option(
    "--api-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the API key from a file (e.g. a systemd credential).",
)
@click.option(
    "--input-type",
    type=click.Choice(["document", "query"]),
    default="document",
    show_default=True,
    help="Prefix path for requests that give no input_type.",
)
@click.option(
    "--truncation",
    type=click.Choice(["warn", "error"]),
    default="warn",
    show_default=True,
    help="Texts over the context when a request does not say: cut and report, or refuse.",
)
@click.option(
    "--force-dimensions", is_flag=True, help="Allow any 'dimensions' (not only Matryoshka sizes)."
)
@click.option("--max-body-mb", type=click.FloatRange(0.001), default=8.0, show_default=True)
@click.option(
    "--max-inputs",
    type=click.IntRange(1),
    default=2048,
    show_default=True,
    help="Texts or documents per request.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Most texts per model call.",
)
@click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp.")
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="Embedding calls that run at once, each in its own llama.cpp context with its share of "
    "--threads (GGUF only; default: 2 where 2 or more threads, else 1).",
)
@click.option("--access-log", is_flag=True, help="Log each request line (never its body).")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve on this Unix socket instead of --host/--port; it gets the index file's group, "
    "and group/others may connect where the index lets them read (no key needed).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the key that guards an index others may not read is kept (default: beside "
    "the index, INDEX.key); written if absent, readable like the index.",
)
@click.option(
    "--no-key",
    is_flag=True,
    help="Serve an index that is not world-readable on TCP without a key: any local user can "
    "then search it.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Another host name clients may use in URLs (repeatable; '*': any). The bind address "
    "(and on loopback localhost, 127.0.0.1, [::1]) always works.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="A web origin whose pages may call the server, e.g. https://app.example (repeatable; "
    "'*': any). Browsers' requests from other origins get 403.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds a connection has to send its request headers (then 408, closed).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1),
    default=60.0,
    show_default=True,
    help="Seconds a request has to send its whole body.",
)
@click.option(
    "--max-connections-per-client",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Open connections one address may hold; a new one closes its oldest connection "
    "still waiting for a request (503).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Open connections in all; requests beyond get 503.",
)
def serve_cmd(
    model: str | None,
    backend: str,
    names: tuple[str, ...],
    query_prefix: str | None,
    document_prefix: str | None,
    reranker: str | None,
    reranker_names: tuple[str, ...],
    index_path: Path | str | None,
    host: str,
    port: int,
    api_key: str | None,
    api_key_file: Path | None,
    input_type: str,
    truncation: str,
    force_dimensions: bool,
    max_body_mb: float,
    max_inputs: int,
    batch_size: int,
    threads: int | None,
    workers: int | None,
    access_log: bool,
    socket_path: Path | None,
    key_file: Path | None,
    no_key: bool,
    allowed_hosts: tuple[str, ...],
    allowed_origins: tuple[str, ...],
    header_timeout: float,
    body_timeout: float,
    max_connections_per_client: int,
    max_connections: int,
) -> None:
    """Serve embeddings, reranking and search over HTTP: Ollama's and OpenAI's embedding APIs,
    Cohere's rerank API, and /v1/search over a lokal index. Runs until SIGTERM or Ctrl-C.

    Binds loopback unless told; a non-loopback --host needs an API key, which every request
    (except GET /health) must then send as a bearer token. An --index that others may not
    read is served only to those who may: with a key written beside it (readable like the
    index; the path is printed), or over a Unix socket (--socket) with the index's group and
    mode. JSON requests must send Content-Type: application/json.

    \b
    Examples:
      lokal serve                                   # http://127.0.0.1:11435
      lokal serve --name nomic-embed-text --index /var/lib/lokal/index.db
      LOKAL_API_KEY=... lokal serve --host 0.0.0.0 --reranker BAAI/bge-reranker-base
      lokal serve --socket /run/lokal/serve.sock --index /var/lib/lokal/index.db
      curl -s localhost:11435/api/embed --json '{"model": "all-MiniLM-L6-v2", "input": "hi"}'
    """
    from lokal.agent import serve

    if api_key_file is not None:
        api_key = api_key_file.read_text(encoding="utf-8").strip()
    if api_key is not None and not api_key.strip():
        msg = "the API key is empty"
        raise click.BadParameter(msg, param_hint="--api-key")
    if not api_key and socket_path is None and not serve.is_loopback(host):
        msg = (
            f"refusing to bind {host}: it is not a loopback address, and without an API key "
            "anyone who can reach it could use the server. Set --api-key (or LOKAL_API_KEY, or "
            "--api-key-file), or bind 127.0.0.1."
        )
        raise click.UsageError(msg)
    settings = serve.ServeSettings(
        host=host,
        port=port,
        api_key=api_key or None,
        input_type=input_type,  # type: ignore[arg-type]
        truncation=truncation,  # type: ignore[arg-type]
        force_dimensions=force_dimensions,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_inputs=max_inputs,
        max_batch=batch_size,
        access_log=access_log,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        unix_socket=socket_path is not None,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections_per_client=max_connections_per_client,
        max_connections=max_connections,
    )
    if index_path is not None and not api_key and socket_path is None and not no_key:
        settings = _index_key(settings, index_path, key_file)
    listener = None
    if socket_path is not None:  # before the models load: a taken path fails at once
        from lokal.agent.door import bind_unix_socket

        try:
            listener = bind_unix_socket(socket_path, index_path)
        except OSError as exc:
            msg = f"cannot serve on {socket_path}: {exc}"
            raise click.ClickException(msg) from exc
    index = index_embedder = None
    try:
        with _friendly_errors():
            from lokal.backends.llama_cpp import default_threads
            from lokal.embedder import Embedder

            if workers is None:
                workers = min(2, threads or default_threads())
            embedder = Embedder(
                model,
                backend=backend,
                query_prefix=query_prefix,
                document_prefix=document_prefix,
                n_threads=threads,
                concurrency=workers,
            )
            # one worker per llama.cpp context; PyTorch runs one call on all its threads (two
            # calls would fight for them)
            workers = embedder.contexts
            settings = dataclasses.replace(settings, workers=workers)
            embedder.embed_documents(["warm up"])  # load now, not on the first request
            rr = None
            if reranker:
                from lokal.reranker import Reranker

                rr = Reranker(reranker, n_threads=threads)
                rr.score("warm up", ["warm up"])
            if index_path is not None:
                index, index_embedder = _open_for_search(index_path)
                index_embedder.embed_queries(["warm up"])
            service = serve.Service(
                settings,
                embedder,
                names=names,
                reranker=rr,
                reranker_names=reranker_names,
                index=index,
                index_embedder=index_embedder,
            )

        def ready(url: str) -> None:
            click.echo(f"lokal serve: listening on {url}")
            sys.stdout.flush()

        try:
            serve.run(service, ready, listener)
        finally:
            if index is not None:
                index.close()
    finally:
        if listener is not None:
            listener.close()


def _index_key(settings: Any, index_path: Path, key_file: Path | None) -> Any:
    """Settings with the key that guards an index others may not read (keyless otherwise)."""
    from lokal.agent.door import index_key, needs_key

    if not needs_key(index_path):
        return settings
    key_file = key_file or index_path.with_name(index_path.name + ".key")
    try:
        key = index_key(index_path, key_file)
    except OSError as exc:
        msg = (
            f"{index_path} is not world-readable, so lokal serve guards it with a key, but the "
            f"key file {key_file} cannot be used: {exc}. Choose another place with --key-file, "
            "serve over a Unix socket with --socket, or pass --no-key to let every local user "
            "search it"
        )
        raise click.UsageError(msg) from exc
    click.echo(
        f"lokal serve: {index_path} is not world-readable: requests need the key in {key_file} "
        "(header 'Authorization: Bearer KEY'; /health excepted)",
        err=True,
    )
    return dataclasses.replace(settings, api_key=key)


# ---- lokal eval, lokal bench -------------------------------------------------------------


class _ProgressBars:
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


@cli.command("eval")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="BEIR qrels split.")
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False, path_type=Path),
    help="For a questions file: a BEIR corpus.jsonl holding the expected ids.",
)
@click.option(
    "--index",
    "index_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="For a questions file: a lokal index; expected answers are source paths.",
)
@click.option("--model", help="Embedding model (default: the embedded default).")
@click.option(
    "--backend",
    type=click.Choice(["auto", "sentence-transformers", "gguf"]),
    default="auto",
    show_default=True,
)
@click.option("--quant", "quantization", help="A packed GGUF of the model: q8_0, f16, q4_0 ...")
@click.option("--dims", type=click.IntRange(1), help="Matryoshka output dimensions.")
@click.option("--query-prefix", help="Override the profile's query prefix ('' disables).")
@click.option("--document-prefix", help="Override the profile's document prefix ('' disables).")
@click.option("--no-prefixes", is_flag=True, help="Embed without the model's prefixes.")
@click.option("--hybrid", is_flag=True, help="Fuse vector and full-text (BM25) rankings.")
@click.option(
    "--rerank",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[MODEL]",
    help="Rerank the first --candidates results with a cross-encoder (alone: $LOKAL_RERANKER, "
    "else the one reranker packed in the model cache).",
)
@click.option(
    "--candidates",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Results a reranker reorders.",
)
@click.option(
    "--compare",
    "compares",
    multiple=True,
    metavar="SPEC",
    help="Another setup to run on the same data (repeatable): key=value pairs, comma-separated, "
    "changing the options above. Keys: model, backend, quant, dims, prefixes (on|off), "
    "query-prefix, document-prefix, search (vector|hybrid), rerank (MODEL|off), candidates, "
    "label.",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG bar chart of the metrics (needs lokal[eval]).",
)
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write qrels.txt and one TREC run file per setup here (for trec_eval or ranx).",
)
@click.option("--per-query", is_flag=True, help="With --json: every question's scores too.")
@json_option
def eval_cmd(
    source: Path,
    split: str,
    corpus: Path | None,
    index_path: Path | None,
    model: str | None,
    backend: str,
    quantization: str | None,
    dims: int | None,
    query_prefix: str | None,
    document_prefix: str | None,
    no_prefixes: bool,
    hybrid: bool,
    rerank: str | None,
    candidates: int,
    compares: tuple[str, ...],
    chart: Path | None,
    runs_dir: Path | None,
    per_query: bool,
    as_json: bool,
) -> None:
    """Measure retrieval on questions whose answers you know: recall@1/5/10/50, MRR@10,
    nDCG@10 and how many texts were cut, with advice on what to change.

    SOURCE is a BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), or a JSONL/CSV
    file of questions with expected answers ({"question": ..., "expected": id or [ids]}) given
    with --corpus corpus.jsonl or --index index.db (expected answers: source paths). Corpus
    vectors are cached per model in lokal's home: a second run or setup does not re-embed.

    \b
    Examples:
      python benchmarks/make_manpage_eval.py manpages --pages 1000
      lokal eval manpages
      lokal eval manpages --compare hybrid --compare quant=f16 --compare prefixes=off
      lokal eval manpages --compare rerank=bge-reranker-base.q8_0.gguf --chart eval.png
      lokal eval questions.jsonl --index /var/lib/lokal/index.db --compare hybrid --json
    """
    from lokal.evaluation import data, report, runner

    if no_prefixes:
        query_prefix = document_prefix = ""
    bars = _ProgressBars()
    with _friendly_errors():
        if rerank == "":
            from lokal.reranker import default_model

            rerank = default_model()
        base = runner.Setup(
            model=model,
            backend=backend,
            quantization=quantization,
            dimensions=dims,
            query_prefix=query_prefix,
            document_prefix=document_prefix,
            search="hybrid" if hybrid else "vector",
            reranker=rerank,
            candidates=candidates,
        )
        setups = [base, *(runner.parse_setup(spec, base) for spec in compares)]
        evalset = data.load(source, split=split, corpus=corpus, index=index_path)
        try:
            result = runner.evaluate(evalset, setups, progress=bars)
        finally:
            bars.close()
        written = [report.chart(result, chart)] if chart else []
        if runs_dir is not None:
            written += report.write_runs(result, evalset.qrels, runs_dir)
    if as_json:
        _emit_json(report.as_dict(result, per_query=per_query))
        return
    s = evalset.summary()
    click.echo(
        f"{s['name']}: {s['queries']} questions, {s['documents']} documents ({s['texts']} texts)"
        + (
            f"; {s['unjudged_queries']} questions without a relevant document left out"
            if s["unjudged_queries"]
            else ""
        )
    )
    headers, rows = report.table(result)
    _table(rows, headers)
    click.echo("\nWhat the numbers suggest:")
    for line in report.advice(result):
        click.echo(f"  - {line}")
    for path in written:
        click.echo(f"wrote {path}", err=True)


@cli.command("bench")
@click.argument("models_", nargs=-1, metavar="[MODEL]...")
@click.option(
    "-b",
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(["auto", "sentence-transformers", "gguf"]),
    help="Backend(s) to measure (repeatable; default auto).",
)
@click.option(
    "-q",
    "--quant",
    "quants",
    multiple=True,
    help="GGUF quantization(s) packed in the model cache (repeatable): q8_0, f16, q4_0 ...",
)
@click.option("--texts", type=click.IntRange(1), default=400, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp.")
@json_option
def bench_cmd(
    models_: tuple[str, ...],
    backends: tuple[str, ...],
    quants: tuple[str, ...],
    texts: int,
    batch_size: int,
    threads: int | None,
    as_json: bool,
) -> None:
    """Speed and weight of models on this machine: tokens/s, texts/s, load time and peak
    memory, each model measured in a fresh process of its own, on real prose (passages of
    Python's documentation, about a chunk each).

    With no MODEL, the embedded default. Every MODEL runs on every --backend; on the GGUF
    backend, once per --quant.

    \b
    Examples:
      lokal bench                                          # the default model as auto picks it
      lokal bench all-MiniLM-L6-v2 -b sentence-transformers -b gguf -q q8_0 -q q4_0
      lokal bench /srv/models/bge-small.q8_0.gguf --texts 1000 --json
    """
    from lokal.benchmark import BenchSpec, run_isolated

    specs = []
    for m in models_ or (None,):
        for b in backends or ("auto",):
            if b == "sentence-transformers" or not quants:
                specs.append(BenchSpec(m, b, None, texts, batch_size, threads))
            else:
                specs.extend(BenchSpec(m, "gguf", q, texts, batch_size, threads) for q in quants)
    bars = _ProgressBars()
    results = []
    with _friendly_errors():
        try:
            for spec in specs:
                results.append(run_isolated(spec, lambda d, t, label=spec.label: bars(label, d, t)))
        finally:
            bars.close()
    if as_json:
        _emit_json(results)
        return
    _table(
        [
            [
                r["model"].rsplit("/", 1)[-1],
                r["backend"],
                r["quantization"],
                str(r["dimension"]),
                f"{r['load_seconds']:.1f}",
                f"{r['tokens_per_s']:,.0f}",
                f"{r['texts_per_s']:.1f}",
                f"{r['peak_rss_mb']:,.0f}",
                f"{r['load_avg'][0]:.1f}/{r['load_avg'][1]:.1f}",
            ]
            for r in results
        ],
        ["model", "backend", "quant", "dim", "load s", "tokens/s", "texts/s", "peak MB", "load"],
    )
    click.echo(
        f"{results[0]['texts']} texts, {results[0]['tokens']:,} tokens for the first model; "
        "load = the machine's 1-minute load average before/after (busy machines measure slower)",
        err=True,
    )


# `lokal sync` and `lokal central` (the fleet) live in their own module
from lokal.agent.sync_cli import central, sync_cmd  # noqa: E402

cli.add_command(sync_cmd)
cli.add_command(central)


def main() -> None:
    cli(prog_name="lokal")


if __name__ == "__main__":
    main()
