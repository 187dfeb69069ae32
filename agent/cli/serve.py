"""``lokal serve``: the HTTP server's options; :mod:`lokal.agent.server.launch` assembles it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from lokal.agent.cli.options import IndexLocation, backend_option, prefix_options, threads_option
from lokal.agent.cli.output import friendly_errors

if TYPE_CHECKING:
    from lokal.agent.server.settings import ServeSettings


@click.command("serve")
@click.option(
    "--model", help="Embedding model (default: the embedded default, as a GGUF when packed)."
)
@backend_option
@click.option(
    "--name",
    "names",
    multiple=True,
    help="A name clients may use for the model (repeatable; the first is listed). The "
    "model's own names always work.",
)
@prefix_options
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
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="An agent's TOML configuration: serve its index (unless --index says another), and "
    "show its roots and sync on the page at /.",
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
@threads_option
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
    config_path: Path | None,
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
    Cohere's rerank API, and /v1/search over a lokal index; a page at / shows the status and
    searches the index in a browser. Runs until SIGTERM or Ctrl-C.

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
      lokal serve --config /etc/lokal/agent.toml    # the agent's index; open the page at /
      curl -s localhost:11435/api/embed --json '{"model": "all-MiniLM-L6-v2", "input": "hi"}'
    """
    from lokal.agent.server.settings import ServeSettings, Truncation, is_loopback
    from lokal.agent.server.worker import Kind

    agent_config = None
    if config_path is not None:
        from lokal.agent.config import load

        with friendly_errors():
            agent_config = load(config_path)
        if index_path is None:
            index_path = agent_config.index

    if api_key_file is not None:
        api_key = api_key_file.read_text(encoding="utf-8").strip()
    if api_key is not None and not api_key.strip():
        msg = "the API key is empty"
        raise click.BadParameter(msg, param_hint="--api-key")
    if not api_key and socket_path is None and not is_loopback(host):
        msg = (
            f"refusing to bind {host}: it is not a loopback address, and without an API key "
            "anyone who can reach it could use the server. Set --api-key (or LOKAL_API_KEY, or "
            "--api-key-file), or bind 127.0.0.1."
        )
        raise click.UsageError(msg)
    settings = ServeSettings(
        host=host,
        port=port,
        api_key=api_key or None,
        input_type=cast(Kind, input_type),  # click.Choice checked it
        truncation=cast(Truncation, truncation),  # click.Choice checked it
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
    central = isinstance(index_path, str)
    if index_path is not None and not api_key and socket_path is None and not no_key:
        if central:
            # the server reads the centre with its own credentials: a keyless loopback server
            # would lend them to every local user
            msg = (
                "a central store is served over TCP only with a key (--api-key, LOKAL_API_KEY or "
                "--api-key-file), over a Unix socket only its owner can use (--socket), or "
                "to every local user with --no-key"
            )
            raise click.UsageError(msg)
        assert isinstance(index_path, Path)
        settings = _index_key(settings, index_path, key_file)
    listener = None
    if socket_path is not None:  # before the models load: a taken path fails at once
        from lokal.agent.server.door import bind_unix_socket

        try:
            # a central store's socket is its owner's alone (0600, via the no-read mode below)
            listener = bind_unix_socket(
                socket_path,
                index_path if isinstance(index_path, Path) else None,
                owner_only=central,
            )
        except OSError as exc:
            msg = f"cannot serve on {socket_path}: {exc}"
            raise click.ClickException(msg) from exc
    from lokal.agent.server.launch import ServedModels, serve

    models = ServedModels(
        model=model,
        backend=backend,
        names=names,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        reranker=reranker,
        reranker_names=reranker_names,
        index=index_path,
        threads=threads,
        workers=workers,
        agent_config=agent_config,
    )

    def ready(url: str) -> None:
        click.echo(f"lokal serve: listening on {url}")
        sys.stdout.flush()

    try:
        with friendly_errors():
            serve(settings, models, ready, listener)
    finally:
        if listener is not None:
            listener.close()


def _index_key(settings: ServeSettings, index_path: Path, key_file: Path | None) -> ServeSettings:
    """Settings with the key that guards an index others may not read (keyless otherwise)."""
    from lokal.agent.server.door import index_key, needs_key

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
