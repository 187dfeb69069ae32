"""``lokal index``, ``search``, ``check`` and ``snapshot``: one index file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lokal.agent.cli.options import (
    central_only,
    index_option,
    json_option,
    searchable_index_option,
)
from lokal.agent.cli.output import (
    ProgressBars,
    emit_json,
    friendly_errors,
    table,
    warnings_to_stderr,
)


@click.command("index")
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
    from lokal.agent.ingest import Ingest, Settings
    from lokal.agent.scanner import DEFAULT_EXCLUDE
    from lokal.agent.writer import open_writable, writer_lock
    from lokal.embedder import Embedder

    settings = Settings(
        chunk_tokens=chunk_tokens,
        overlap=overlap,
        exclude=DEFAULT_EXCLUDE + exclude,
        follow_symlinks=follow_symlinks,
        max_file_seconds=max_file_seconds,
    )
    with friendly_errors():
        embedder = Embedder(model)
        # the agent's rule for its directory and files: the group `lokal` may read them
        access.prepare_directory(index_path.absolute().parent, access.DEFAULT_GROUP)
        with writer_lock(index_path):
            # another model is refused (ModelMismatch), never rebuilt from PATHS alone: they
            # may be only part of what the index holds
            index = open_writable(index_path, embedder, None)
            assert index is not None
            with index:
                access.share_with_group(index_path, access.DEFAULT_GROUP)
                bars = ProgressBars("files", "chunks")

                def progress(done: int, total: int, chunks: int) -> None:
                    bars("indexing", done, total, chunks)

                try:
                    summary = Ingest(index, embedder, settings).run(list(paths), progress)
                finally:
                    bars.close()
            access.share_with_group(index_path, access.DEFAULT_GROUP)
    if as_json:
        emit_json(summary.to_dict())
    else:
        table(
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


def _rank_with_warnings(reranker: Any, doc_tokens: int | None) -> Any:
    def rank(query: str, texts: list[str], top_n: int | None) -> Any:
        with warnings_to_stderr():
            return reranker.rank(query, texts, top_n=top_n, max_document_tokens=doc_tokens)

    return rank


@click.command("search")
@click.argument("query")
@searchable_index_option
@click.option("-k", "k", type=click.IntRange(1), default=5, show_default=True)
@click.option(
    "--filter",
    "filter_json",
    help='Metadata filter as JSON, e.g. \'{"kind": {"$in": ["md", "txt"]}}\'.',
)
@click.option(
    "--hybrid/--no-hybrid",
    default=True,
    show_default=True,
    help="Fuse the vector and full-text (BM25) rankings; --no-hybrid: vectors alone.",
)
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
    help="Chunks retrieved for --rerank to reorder (default: max(2k, 20)).",
)
@click.option(
    "--doc-tokens",
    type=click.IntRange(0),
    # the default is lokal.retrieval.DOCUMENT_TOKENS (not imported here: it brings numpy)
    help="Tokens of each chunk --rerank reads (default: 128; 0: all that fit the reranker's "
    "context).",
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
    doc_tokens: int | None,
    as_json: bool,
) -> None:
    """Search an index: path, line range and score of the best chunks for QUERY.

    The model the index records is loaded (no model to name). By default the vector and
    full-text (BM25) rankings are fused (hybrid): exact words, names and codes count as well
    as meaning; --no-hybrid ranks by the vectors alone. With --rerank, the best
    max(2k, 20) chunks are reordered by a cross-encoder that reads the query and each chunk
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
    from lokal.central.reader import open_for_search
    from lokal.retrieval import retrieve

    if (candidates is not None or doc_tokens is not None) and rerank is None:
        msg = "--candidates and --doc-tokens only apply with --rerank"
        raise click.UsageError(msg)
    if doc_tokens is None:
        from lokal.retrieval import DOCUMENT_TOKENS

        doc_tokens = DOCUMENT_TOKENS
    central_only(index_path, sites, schema)
    with friendly_errors():
        reranker = None
        if rerank is not None:  # a wrong reranker fails here, before any model loads
            from lokal.reranker import Reranker

            with warnings_to_stderr():
                reranker = Reranker(rerank or None)
        index, embedder = open_for_search(index_path, site=list(sites) or None, schema=schema)
        with index:
            results = retrieve(
                index,
                query,
                k,
                embedder=embedder,
                hybrid=hybrid,
                filter=flt,
                reranker=None
                if reranker is None
                else _rank_with_warnings(reranker, doc_tokens or None),
                candidates=candidates,
            )
    rows = []
    for res in results:
        h = res.hit
        row: dict[str, Any] = {
            **({"site": site} if (site := getattr(h, "site", None)) else {}),
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
        emit_json(rows)
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


@click.command("check")
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
    check_report(index_path, as_json)


def check_report(index_path: Path, as_json: bool) -> None:
    """Print :func:`lokal.agent.ingest.check_index`'s report; exit 1 when something is wrong."""
    from lokal.agent.ingest import check_index

    with friendly_errors():
        result = check_index(index_path)
    if as_json:
        emit_json(result)
    else:
        click.echo("OK" if result["ok"] else "PROBLEMS")
        for key, value in result["counts"].items():
            click.echo(f"  {key}: {value}")
        if result.get("search_copy"):
            from lokal.index.vectors import describe_copy

            click.echo(f"  search copy: {describe_copy(result['search_copy'])}")
        for problem in result["problems"]:
            click.echo(f"  integrity: {problem}")
        for s in result["stale"]:
            click.echo(f"  stale: {s['path']}: {s['problem']}")
    if not result["ok"]:
        sys.exit(1)


@click.command("snapshot")
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

    with friendly_errors(), Index.open(index_path) as index:
        index.snapshot(out)
    click.echo(f"snapshot written to {out}")
