"""The one writer of an index file: its lock, and opening the file for writing with a model.

Both ``lokal agent run`` and ``lokal index`` write through :func:`open_writable`, so both
behave the same when the model changes: a new index is built beside the old one
(``INDEX.rebuild``, resumable after a crash) and renamed over it when complete; readers keep
the old file until then.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from lokal.errors import LokalError

if TYPE_CHECKING:
    from lokal.embedder import Embedder
    from lokal.index import Index

log = logging.getLogger("lokal.agent")


class AgentLockError(LokalError):
    """Another lokal agent (or ``lokal index``) is writing this index."""


@contextmanager
def writer_lock(index_path: Path) -> Iterator[None]:
    """One writer per index file: an exclusive, non-blocking lock on ``INDEX.lock``, released
    by the kernel if the process dies (no stale lock after kill -9 or a power cut)."""
    import fcntl

    lock_path = Path(f"{index_path}.lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            msg = (
                f"{index_path} is being written by another lokal agent (pid {holder}); "
                "only one writer may run per index"
            )
            raise AgentLockError(msg) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def open_writable(
    path: Path, embedder: Embedder, build: Callable[[Index], bool] | None
) -> Index | None:
    """The index at ``path`` open for writing with ``embedder``'s model (created if absent).

    If it records another model, a new index is built beside it: ``build(new)`` fills it and
    says whether it completed; then it replaces the old file and is returned. An incomplete
    build returns None and resumes on the next call. Without ``build`` (``lokal index``, whose
    paths may be only part of what the index holds: a rebuild from them would drop the rest)
    another model is refused with ModelMismatch naming both. Hold :func:`writer_lock` around
    this.
    """
    from lokal.index import Index, lifecycle

    if not path.exists():
        return Index.create(path, embedder.identity, managed_by="agent")
    recorded = Index.recorded_identity(path)
    if recorded.compare(embedder.identity) == "same" or build is None:
        return Index.open(path, embedder.identity, writable=True, agent=True)
    log.warning(
        "the index holds vectors from %s; the model now is %s. Building a new index beside "
        "it (%s); the old one serves readers until the new one is complete.",
        recorded.describe(),
        embedder.identity.describe(),
        lifecycle.build_path(path).name,
    )
    return _rebuild(path, embedder, build)


def _rebuild(path: Path, embedder: Embedder, build: Callable[[Index], bool]) -> Index | None:
    from lokal.index import Index, lifecycle

    builder = lifecycle.Build(path, resumable=True)  # an interrupted rebuild resumes
    new = builder.open(embedder.identity, managed_by="agent")
    try:
        complete = build(new)
    except BaseException:
        new.close()
        raise
    if not complete:
        new.close()
        log.info("rebuild interrupted; it resumes on the next start")
        return None
    builder.swap(new)
    log.info("new index with %s is in place", embedder.identity.describe())
    return Index.open(path, embedder.identity, writable=True, agent=True)
