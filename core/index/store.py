"""The index file: the contract between the edge agent (writer) and applications (readers).

One SQLite file with sqlite-vec that records which model made its vectors:

- creating it records a :class:`~lokal.identity.ModelIdentity`;
- a writer must match that identity exactly (key and variant);
- a reader must match its *model key*, else :class:`~lokal.errors.ModelMismatch` names both
  models; another variant of the same key (the fp32 model reading what the q8_0 GGUF wrote)
  gets a :class:`~lokal.errors.ModelVariantWarning`;
- an index the agent manages is read-only to everyone else (:class:`IndexReadOnly`).

Every write is one transaction: a document's chunks are replaced all at once, never mixed.

This module opens and creates index files and holds the identity rules; see :class:`Index`
for where each of its other parts lives.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lokal import __version__
from lokal.errors import (
    IndexFileError,
    IndexReadOnly,
    ModelMismatch,
    ModelVariantWarning,
)
from lokal.identity import ModelIdentity
from lokal.index import compaction, lifecycle, schema, search, sqlite, upkeep
from lokal.index.lifecycle import FILE_MODE
from lokal.index.reading import open_indexes
from lokal.index.records import CheckReport, Chunk, DocumentRecord, Hit, Record
from lokal.index.search import Searching
from lokal.index.writing import COMPACT_CHECK_EVERY, Writing

__all__ = [
    "COMPACT_CHECK_EVERY",
    "FILE_MODE",
    "MANAGED_BY",
    "CheckReport",
    "Chunk",
    "DocumentRecord",
    "Hit",
    "Index",
    "Record",
    "open_indexes",
]

MANAGED_BY = ("app", "agent")


class Index(Writing, Searching):
    """A lokal index file. Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`.

    Its parts live by concept: the open file and plain reads in :mod:`lokal.index.reading`,
    search in :mod:`lokal.index.search`, writes in :mod:`lokal.index.writing`, the check in
    :mod:`lokal.index.upkeep`, and the file's life (create, swap, snapshot, follow a swap) in
    :mod:`lokal.index.lifecycle`. This class adds opening and the model identity rules.
    """

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        identity: ModelIdentity,
        *,
        quantization: str = "auto",
        managed_by: str = "app",
        settings: Mapping[str, Any] | None = None,
    ) -> Index:
        """Create a new index file (never world-readable) recording ``identity``."""
        if quantization not in search.QUANTIZATIONS:
            msg = f"quantization must be one of {search.QUANTIZATIONS}, got {quantization!r}"
            raise ValueError(msg)
        if managed_by not in MANAGED_BY:
            msg = f"managed_by must be one of {MANAGED_BY}, got {managed_by!r}"
            raise ValueError(msg)
        p = Path(path)

        def initialize(conn: Any) -> None:
            # before any table: free pages can then go back to the file system without
            # rewriting the file (lokal.index.compaction)
            conn.execute(f"PRAGMA auto_vacuum = {compaction.INCREMENTAL}")
            conn.execute("VACUUM")
            with sqlite.write(conn):
                schema.migrate(conn, {"dimension": identity.dimension})
                meta = {
                    "model": json.dumps(identity.to_dict()),
                    "dimension": str(identity.dimension),
                    "quantization": quantization,
                    "managed_by": managed_by,
                    "settings": json.dumps(dict(settings or {})),
                    "created_at": str(time.time()),
                    "created_by": f"lokal {__version__}",
                }
                conn.executemany("INSERT INTO lokal_meta VALUES (?, ?)", meta.items())

        # built whole under a temporary name, then linked into place (lokal.index.lifecycle)
        lifecycle.create(p, initialize)
        return cls(sqlite.connect(p), p, writable=True)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        identity: ModelIdentity | None = None,
        *,
        writable: bool = False,
        agent: bool = False,
    ) -> Index:
        """Open an existing index, checking ``identity`` against the recorded model.

        ``writable=True`` needs an exact match (key and variant) and, for an agent-managed
        index, ``agent=True``. Readers need the same model key.
        """
        p = Path(path)
        if not p.is_file():
            msg = f"no index file at {p}"
            raise IndexFileError(msg)
        readonly_file = not os.access(p, os.W_OK)
        if writable and readonly_file:
            msg = f"{p} is not writable by this user"
            raise IndexReadOnly(msg)
        sqlite.check_file(p)
        conn = sqlite.connect(p, readonly=readonly_file)
        try:
            try:
                found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'lokal_meta'")
                is_index = found.fetchone() is not None
            except sqlite.sqlite_module(p).DatabaseError as exc:
                if readonly_file and not os.path.exists(f"{p}-shm"):
                    msg = (
                        f"cannot read {p}: it is in WAL mode, its -shm file is missing and this "
                        f"user may not create it ({exc}). Start the agent once (it leaves the "
                        "file readable when it stops), or ask its owner to open it once"
                    )
                    raise IndexReadOnly(msg) from exc
                msg = f"{p} is not a lokal index (not a SQLite database: {exc})"
                raise IndexFileError(msg) from exc
            if not is_index:
                msg = f"{p} is a SQLite file but not a lokal index"
                raise IndexFileError(msg)
            if schema.applied(conn) - {m[0] for m in schema.MIGRATIONS}:
                msg = f"{p} was written by a newer lokal; upgrade lokal to read it"
                raise IndexFileError(msg)
            index = cls(conn, p, writable=writable)
        except BaseException:
            conn.close()
            raise
        try:
            # Refuse before writing anything: no lock is taken and no migration runs for a
            # caller that may not write this file.
            if writable and index.managed_by == "agent" and not agent:
                msg = (
                    f"{p} is managed by the lokal agent: applications may read it, not write "
                    "it. Create an index of your own to write."
                )
                raise IndexReadOnly(msg)
            if identity is not None:
                index._check_identity(identity, writing=writable)
            if writable:
                with sqlite.write(conn):
                    schema.migrate(conn, {"dimension": index.dimension})
            else:
                conn.execute("PRAGMA query_only = ON")
        except BaseException:
            index.close()
            raise
        return index

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike[str], identity: ModelIdentity, **create_args: Any
    ) -> Index:
        """Open ``path`` for writing, creating it if needed (safe when two processes race)."""
        try:
            return cls.create(path, identity, **create_args)
        except IndexFileError:
            if not Path(path).exists():
                raise
        return cls.open(
            path, identity, writable=True, agent=create_args.get("managed_by") == "agent"
        )

    @staticmethod
    def recorded_identity(path: str | os.PathLike[str]) -> ModelIdentity:
        """The model an index file records, without opening it for use."""
        with Index.open(path) as index:
            return index.identity

    def check_identity(self, identity: ModelIdentity) -> None:
        """Check a reader's model against the recorded one, as :meth:`open` does for
        ``identity``: another model raises ModelMismatch, another variant warns."""
        self._check_identity(identity, writing=False)

    def _check_identity(self, identity: ModelIdentity, *, writing: bool) -> None:
        same = self.identity.compare(identity)
        if same == "different":
            msg = (
                f"{self.path} holds vectors from {self.identity.describe()}; they cannot be "
                f"compared with {identity.describe()}. Open it with the recorded model (pass "
                "no model to load it), or build a new index."
            )
            raise ModelMismatch(msg)
        if same == "variant":
            if writing:
                msg = (
                    f"{self.path} was written with {self.identity.describe()}; a writer must "
                    f"use exactly that variant, not {identity.describe()}"
                )
                raise ModelMismatch(msg)
            warnings.warn(
                f"{self.path} was written with {self.identity.describe()} and is read with "
                f"{identity.describe()}: same model, slightly different vectors",
                ModelVariantWarning,
                stacklevel=3,
            )

    # ---- upkeep ----------------------------------------------------------------------------

    def check(self) -> CheckReport:
        """Whether the file tells the truth about itself (:mod:`lokal.index.upkeep`): SQLite's
        integrity, chunks, vectors and full text agreeing one to one, every vector readable,
        finite and (where the model normalizes) unit length, the search copy equal to the
        stored rows, and free space. Never raises on a damaged file: each SQLite error is one
        more problem in the report."""
        with self._lock:
            return upkeep.check(self, self._reader())

    def snapshot(self, dest: str | os.PathLike[str]) -> Path:
        """A consistent single-file copy, safe while a writer is running (SQLite's backup API:
        what is still in the write-ahead log is included): :func:`lifecycle.snapshot`."""
        with self._lock:
            return lifecycle.snapshot(self._reader(), dest)
