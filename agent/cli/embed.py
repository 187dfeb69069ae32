"""``lokal embed``: one vector from the shell."""

from __future__ import annotations

from typing import IO, Any

import click

from lokal.agent.cli.options import backend_option, prefix_options, threads_option
from lokal.agent.cli.output import emit_json, friendly_errors, warnings_to_stderr


@click.command("embed")
@click.argument("text", required=False)
@click.option(
    "-i",
    "--input",
    "input_file",
    type=click.File("r", encoding="utf-8"),
    help="Read the text from FILE ('-': standard input) instead of TEXT.",
)
@click.option("--model", help="Embedding model (default: the embedded default).")
@backend_option
@click.option(
    "--query",
    "side",
    flag_value="query",
    help="Embed TEXT as a search query (with the model's query prefix or instruction).",
)
@click.option(
    "--document",
    "side",
    flag_value="document",
    default=True,
    help="Embed TEXT as a document, as an index stores it (the default).",
)
@prefix_options
@click.option(
    "--dimensions",
    type=click.IntRange(1),
    help="A smaller Matryoshka size the model supports (e.g. 256 for nomic-embed-text-v1.5).",
)
@threads_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print an object: model, dimension, side, tokens, truncated and the vector.",
)
def embed_cmd(
    text: str | None,
    input_file: IO[str] | None,
    model: str | None,
    backend: str,
    side: str,
    query_prefix: str | None,
    document_prefix: str | None,
    dimensions: int | None,
    threads: int | None,
    as_json: bool,
) -> None:
    """Embed one text and print its vector as a JSON array.

    The text is a document unless --query: the two sides of retrieval get the model's own
    prefixes (E5's 'query: '/'passage: ', BGE's query instruction...). A text longer than the
    model's context is cut, with a warning on stderr (--json says so too).

    \b
    Examples:
      lokal embed "Hold the red button for five seconds."
      lokal embed --query "how do I reset the pump?" --model bge-small-en-v1.5
      lokal embed -i manual.txt --json | jq .tokens
    """
    if (text is None) == (input_file is None):
        msg = "give the text as TEXT or with -i FILE (one of them)"
        raise click.UsageError(msg)
    content = text if text is not None else input_file.read()  # type: ignore[union-attr]
    from lokal.embedder import Embedder

    options: dict[str, Any] = {
        "backend": backend,
        "query_prefix": query_prefix,
        "document_prefix": document_prefix,
        "dimensions": dimensions,
    }
    if threads is not None:
        options["n_threads"] = threads
    with friendly_errors(), warnings_to_stderr():
        embedder = Embedder(model, **options)
        if side == "query":
            result = embedder.embed_queries([content])
        else:
            result = embedder.embed_documents([content])
    vector = [float(x) for x in result.vectors[0]]
    if not as_json:
        click.echo("[" + ", ".join(repr(x) for x in _short(vector)) + "]")
        return
    identity = embedder.identity
    emit_json(
        {
            "model": identity.name,
            "backend": identity.backend,
            "quantization": identity.quantization,
            "dimension": len(vector),
            "side": side,
            "prefix": embedder.profile.query_prefix
            if side == "query"
            else embedder.profile.document_prefix,
            "tokens": result.token_counts[0],
            "context": embedder.context_length,
            "truncated": bool(result.truncated),
            "vector": _short(vector),
        }
    )


def _short(vector: list[float]) -> list[float]:
    """Floats as float32 holds them (9 significant digits), not 17 digits of noise."""
    return [float(f"{x:.9g}") for x in vector]
