"""An application's handle on an index file: the one lifecycle both vector-store adapters use.

- opened read-only on first use, the model checked against the one the file records;
- created race-free when it does not exist yet (two processes creating at once both end up
  using the one complete file);
- reopened writable on the first write, which is when an agent-managed file is refused
  (:class:`~lokal.errors.IndexReadOnly`) and a writer of another model variant
  (:class:`~lokal.errors.ModelMismatch`).

The model to check is given as a function of the vectors' dimension, so an embedding model
lokal does not load (identified by its class and name) can be checked against an existing
file before its dimension is known.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from lokal.errors import IndexFileError, IndexReadOnly
from lokal.identity import ModelIdentity
from lokal.index.store import Index

#: The model for vectors of a given dimension (None: whatever the file records).
IdentityFor = Callable[[int], ModelIdentity | None]


class IndexHandle:
    """Lazy, upgradeable access to one index file. Thread-safe: hold :attr:`lock` across a
    read that must see one connection (a first write swaps in a writable one)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        identity: IdentityFor,
        *,
        quantization: str = "auto",
        who: str = "applications",
    ) -> None:
        self.path = Path(path)
        self.quantization = quantization
        self.lock = threading.RLock()
        self.index: Index | None = None
        self._identity = identity
        self._who = who

    def reader(self) -> Index | None:
        """The open index (read-only until the first write); None while there is no file."""
        with self.lock:
            if self.index is None and self.path.is_file():
                self.index = self._open()
            return self.index

    def create(self, dimension: int) -> Index:
        """The index, creating the file for vectors of ``dimension`` if there is none (when
        another process creates it meanwhile, that file is opened instead)."""
        with self.lock:
            if self.index is not None:
                return self.index
            identity = self._identity(dimension)
            if identity is None:
                msg = f"no index file at {self.path} and no model to create one with"
                raise IndexFileError(msg)
            try:
                self.index = Index.create(self.path, identity, quantization=self.quantization)
            except IndexFileError:
                if not self.path.exists():
                    raise
                self.index = self._open()
            return self.index

    def writer(self, dimension: int | None) -> Index | None:
        """The index open for writing, created when missing (``dimension`` known); None when
        there is no file and nothing to create it with."""
        with self.lock:
            index = self.reader()
            if index is None:
                if dimension is None:
                    return None
                index = self.create(dimension)
            if not index.writable:
                self.refuse_agent_managed()
                writer = Index.open(self.path, self._identity(index.dimension), writable=True)
                index.close()
                self.index = index = writer
            return index

    def refuse_agent_managed(self) -> None:
        """Raise IndexReadOnly when the open file is the agent's (before any work to write)."""
        index = self.index
        if index is not None and index.managed_by == "agent":
            msg = (
                f"{self.path} is managed by the lokal agent: {self._who} may search it, not "
                "write it. Add to an index of your own (another path)."
            )
            raise IndexReadOnly(msg)

    def close(self) -> None:
        with self.lock:
            if self.index is not None:
                self.index.close()

    def _open(self) -> Index:
        index = Index.open(self.path)
        try:
            identity = self._identity(index.dimension)
            if identity is not None:
                index.check_identity(identity)
        except BaseException:
            index.close()
            raise
        return index
