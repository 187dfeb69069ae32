"""Options several commands share, declared once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

BACKENDS = ("auto", "sentence-transformers", "gguf", "onnx")


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


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


class IndexLocation(click.ParamType):  # type: ignore[type-arg]  # generic in newer click only
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


def central_only(index_path: Path | str, sites: tuple[str, ...], schema: str | None) -> None:
    """Refuse --site/--schema for an index file."""
    if (sites or schema) and not isinstance(index_path, str):
        msg = "--site and --schema apply to a central store (--index postgresql://...) only"
        raise click.UsageError(msg)


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


def backend_option(f: F) -> F:
    """``--backend``: which runtime loads the model (auto: an ONNX int8 pack on a CPU with int8
    dot products, else GGUF when packed)."""
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default="auto",
        show_default=True,
    )(f)


def backends_option(f: F) -> F:
    """``-b/--backend``, repeatable: every backend a measurement runs on."""
    return click.option(
        "-b",
        "--backend",
        "backends",
        multiple=True,
        type=click.Choice(BACKENDS),
        help="Backend(s) to measure (repeatable; default auto).",
    )(f)


def prefix_options(f: F) -> F:
    """``--query-prefix`` and ``--document-prefix``: override the model profile's prefixes."""
    f = click.option(
        "--document-prefix", help="Override the profile's document prefix ('' disables)."
    )(f)
    return click.option(
        "--query-prefix", help="Override the profile's query prefix ('' disables)."
    )(f)


def threads_option(f: F) -> F:
    return click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp.")(f)


def budget_options(what: str) -> Callable[[F], F]:
    """--candidates and --doc-tokens with lokal search --rerank's defaults for k=10 (kept equal
    to lokal.retrieval's constants by tests/test_retrieval.py; not imported: numpy)."""

    def add(f: F) -> F:
        f = click.option(
            "--doc-tokens",
            type=click.IntRange(0),
            default=128,
            show_default=True,
            help="Read each candidate's first N tokens only, as lokal search --rerank does "
            "(max_document_tokens; 0: all that fit the reranker's context).",
        )(f)
        return click.option(
            "--candidates",
            type=click.IntRange(1),
            default=20,
            show_default=True,
            help=f"{what} (lokal search --rerank's default for k=10).",
        )(f)

    return add
