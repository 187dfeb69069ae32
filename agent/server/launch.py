"""Assembling ``lokal serve``: load the models (and the index) its settings name, warm them,
and run the server until SIGTERM or Ctrl-C."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal.agent.server.app import Service, run
from lokal.agent.server.door import UnixListener
from lokal.agent.server.settings import ServeSettings


@dataclass(frozen=True)
class ServedModels:
    """What ``lokal serve`` loads: the embedding model, a reranker, an index to search."""

    model: str | None = None
    backend: str = "auto"
    names: tuple[str, ...] = ()
    query_prefix: str | None = None
    document_prefix: str | None = None
    reranker: str | None = None
    reranker_names: tuple[str, ...] = ()
    #: an index file, or a central store's postgresql:// URL
    index: Path | str | None = None
    #: CPU threads for llama.cpp (default: its own choice)
    threads: int | None = None
    #: embedding calls at once (default: 2 where 2 or more threads, else 1)
    workers: int | None = None
    #: the agent's config (``--config``): its roots and sync shown on the page
    agent_config: Any = None


def serve(
    settings: ServeSettings,
    models: ServedModels,
    on_ready: Callable[[str], None],
    listener: UnixListener | None = None,
) -> None:
    """Load and warm ``models`` (a wrong model fails here, before any port is bound), then
    serve until SIGTERM or Ctrl-C; ``on_ready`` gets the URL."""
    from lokal.backends.llama_cpp import default_threads
    from lokal.central.reader import open_for_search
    from lokal.embedder import Embedder

    workers = models.workers
    if workers is None:
        workers = min(2, models.threads or default_threads())
    embedder = Embedder(
        models.model,
        backend=models.backend,
        query_prefix=models.query_prefix,
        document_prefix=models.document_prefix,
        n_threads=models.threads,
        concurrency=workers,
    )
    # one worker per llama.cpp context; PyTorch runs one call on all its threads (two calls
    # would fight for them)
    settings = dataclasses.replace(settings, workers=embedder.contexts)
    embedder.embed_documents(["warm up"])  # load now, not on the first request
    reranker: Any = None
    if models.reranker:
        from lokal.reranker import Reranker

        reranker = Reranker(models.reranker, n_threads=models.threads)
        reranker.score("warm up", ["warm up"])
    index = index_embedder = None
    if models.index is not None:
        index, index_embedder = open_for_search(models.index)
    try:
        if index_embedder is not None:
            index_embedder.embed_queries(["warm up"])
        service = Service(
            settings,
            embedder,
            names=models.names,
            reranker=reranker,
            reranker_names=models.reranker_names,
            index=index,
            index_embedder=index_embedder,
            agent_config=models.agent_config,
        )
        run(service, on_ready, listener)
    finally:
        if index is not None:
            index.close()
