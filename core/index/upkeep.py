"""Checking an index file: does it tell the truth about itself?

:func:`check` never raises on a damaged file: every SQLite error becomes a reported problem, so
``lokal check`` names what is wrong where a search would fail. It looks at:

- SQLite's own ``PRAGMA integrity_check`` (pages, b-trees, indexes) and foreign keys;
- the one-to-one agreement of chunks, vectors and full-text rows (no orphans, no duplicates);
- every stored vector: readable, the index's dimension, finite, and unit length where the
  model normalizes (random bytes in a vector page make norms infinite or absurd);
- the search copy (what :class:`~lokal.index.vectors.VectorCache` loads) and the stored
  compact copy (:mod:`lokal.index.stored`) against those rows;
- the full-text index against the chunks' text (FTS5 ``integrity-check``);
- free space: pages SQLite keeps free, and vector slots left empty by deletions.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lokal.errors import IndexFileError
from lokal.identity import ModelIdentity
from lokal.index import lifecycle, search, sqlite, stored, vectors
from lokal.index.records import CheckReport
from lokal.index.search import bad_vectors, describe_rows


class Index(Protocol):
    """What the check needs of :class:`lokal.index.Index`."""

    path: Path
    dimension: int
    quantization: str
    memory_budget: int
    identity: ModelIdentity
    writable: bool


log = logging.getLogger(__name__)


# Each query counts rows that break the one-to-one agreement of chunks, vectors and full text.
AGREEMENT = {
    "chunks without a vector": (
        "SELECT count(*) FROM chunks WHERE id NOT IN (SELECT rowid FROM chunks_vec)"
    ),
    "vectors without a chunk": (
        "SELECT count(*) FROM chunks_vec WHERE rowid NOT IN (SELECT id FROM chunks)"
    ),
    "chunks missing from full-text": (
        "SELECT count(*) FROM chunks WHERE id NOT IN (SELECT id FROM chunks_fts_docsize)"
    ),
    "full-text rows without a chunk": (
        "SELECT count(*) FROM chunks_fts_docsize WHERE id NOT IN (SELECT id FROM chunks)"
    ),
    "chunks of a missing document": (
        "SELECT count(*) FROM chunks WHERE document_id IS NOT NULL AND "
        "document_id NOT IN (SELECT id FROM documents)"
    ),
    "duplicate chunk positions": (
        "SELECT count(*) FROM (SELECT 1 FROM chunks WHERE document_id IS NOT NULL "
        "GROUP BY document_id, ordinal HAVING count(*) > 1)"
    ),
}

_COUNTS = {
    "documents": "SELECT count(*) FROM documents",
    "chunks": "SELECT count(*) FROM chunks",
    "vectors": "SELECT count(*) FROM chunks_vec",
    "fulltext": "SELECT count(*) FROM chunks_fts_docsize",
}


class _Findings:
    """Problems found so far; :meth:`guard` turns a SQLite error into one more."""

    def __init__(self, database_error: type[Exception]) -> None:
        self.problems: list[str] = []
        self._error = database_error

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def guard(self, what: str, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except self._error as exc:
            self.add(f"{what}: SQLite error: {exc}")
        except IndexFileError as exc:
            self.add(f"{what}: {exc}")
        return None


def check(index: Index, conn: Any) -> CheckReport:
    """See the module's docstring. ``conn`` is the index's open connection (not in a
    transaction); the caller holds the index's lock."""
    found = _Findings(sqlite.sqlite_module(index.path).DatabaseError)
    counts: dict[str, int] = {}
    try:
        found.guard("reading", lambda: conn.execute("BEGIN"))
        _sqlite_checks(conn, found)
        for name, sql in _COUNTS.items():
            n = found.guard(f"counting {name}", functools.partial(_scalar, conn, sql))
            if n is not None:
                counts[name] = int(n)
        stored = _stored_vectors(conn, index.dimension, index.identity.normalize, found)
        if stored is not None:
            _compare_search_copy(index, conn, stored, found)
        counts.update(found.guard("free space", lambda: free_space(conn)) or {})
    finally:
        _end_read(conn, found)
    _fulltext_check(index, conn, found)
    return CheckReport(not found.problems, found.problems, counts)


def _end_read(conn: Any, found: _Findings) -> None:
    """End the read transaction; on a damaged file even COMMIT can fail (then roll back)."""
    if not conn.in_transaction:
        return
    if found.guard("ending the read", lambda: conn.execute("COMMIT")) is None:
        try:
            conn.execute("ROLLBACK")
        except Exception:  # nothing left to end
            log.debug("rollback after a failed commit", exc_info=True)


def _scalar(conn: Any, sql: str) -> int:
    return int(conn.execute(sql).fetchone()[0])


def _sqlite_checks(conn: Any, found: _Findings) -> None:
    def integrity() -> None:
        lines = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
        if lines != ["ok"]:
            for line in lines:
                found.add(f"sqlite: {line}")

    found.guard("sqlite integrity_check", integrity)

    def foreign_keys() -> None:
        for row in conn.execute("PRAGMA foreign_key_check"):
            found.add(f"foreign key: {tuple(row)}")

    found.guard("foreign key check", foreign_keys)
    for name, sql in AGREEMENT.items():
        n = found.guard(name, functools.partial(_scalar, conn, sql))
        if n:
            found.add(f"{name}: {n}")


def _stored_vectors(
    conn: Any, dimension: int, unit: bool, found: _Findings
) -> tuple[np.ndarray, np.ndarray] | None:
    """(rowids, vectors) of every readable stored vector, sorted by rowid; damaged ones are
    reported. None when the vector table cannot be read at all."""
    rows = found.guard("reading vectors", lambda: _read_all(conn))
    if rows is None:
        # a scan stops at the first unreadable row: read the rest one by one to say which
        rows, unreadable = _read_each(conn, found)
        if rows is None:
            return None
        if unreadable:
            found.add(f"vectors unreadable: {describe_rows(unreadable)}")
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dimension), dtype=np.float32)
    wrong_size = [r for r, blob in rows if len(blob) != 4 * dimension]
    if wrong_size:
        found.add(f"vectors not of {dimension} floats: {describe_rows(wrong_size)}")
    rows = sorted((r, blob) for r, blob in rows if len(blob) == 4 * dimension)
    rowids = np.array([r for r, _ in rows], dtype=np.int64)
    vectors = np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(
        len(rows), dimension
    )
    not_finite, not_unit = bad_vectors(vectors, unit)
    if not_finite.any():
        found.add(f"vectors not finite (NaN or infinity): {describe_rows(rowids[not_finite])}")
    if not_unit.any():
        found.add(
            "vectors not unit length though the model normalizes: "
            f"{describe_rows(rowids[not_unit])}"
        )
    return rowids, vectors


def _read_all(conn: Any) -> list[tuple[int, bytes]]:
    return [(int(r), bytes(b)) for r, b in conn.execute("SELECT rowid, embedding FROM chunks_vec")]


def _read_each(conn: Any, found: _Findings) -> tuple[list[tuple[int, bytes]] | None, list[int]]:
    ids = found.guard("listing vector rows", lambda: _vector_rowids(conn))
    if ids is None:
        return None, []
    rows, unreadable = [], []
    for rowid in ids:
        try:
            row = conn.execute(
                "SELECT embedding FROM chunks_vec WHERE rowid = ?", (rowid,)
            ).fetchone()
        except Exception:  # the SQLite module's DatabaseError: this row is unreadable
            unreadable.append(rowid)
            continue
        if row is not None:
            rows.append((rowid, bytes(row[0])))
    return rows, unreadable


def _vector_rowids(conn: Any) -> list[int]:
    """Rowids the vector table should hold: the chunks' and, where readable, vec0's own list."""
    ids = {int(r[0]) for r in conn.execute("SELECT id FROM chunks")}
    try:
        ids |= {int(r[0]) for r in conn.execute("SELECT rowid FROM chunks_vec_rowids")}
    except Exception:  # vec0's shadow table is damaged too (or another vec0 layout)
        log.debug("vec0 rowids table unreadable", exc_info=True)
    return sorted(ids)


def _compare_search_copy(
    index: Index, conn: Any, rows: tuple[np.ndarray, np.ndarray], found: _Findings
) -> None:
    """The search copy must hold exactly the stored rows, each as search would encode it:
    the copy this index loads now (float / int8 / bit for its size and memory budget) and the
    stored compact copy (``vectors_bits``), which every write keeps in step."""
    mode = vectors.choose_mode(
        index.quantization, len(rows[0]), index.dimension, index.memory_budget
    )

    def load() -> search.VectorCache:
        return search.VectorCache.load(
            conn, index.dimension, mode, (-1, -1), unit=index.identity.normalize
        )

    cache = found.guard("loading the search copy", load)
    if cache is not None:
        _compare_copy(f"search copy ({mode})", cache.rowids, cache.data, rows, mode, found)
    if found.guard("the stored bit copy", lambda: stored.has_bits(conn)):
        codes = found.guard(
            "reading the stored bit copy", lambda: stored.read_bits(conn, index.dimension)
        )
        if codes is not None:
            _compare_copy("stored bit copy", codes[0], codes[1], rows, "bit", found)


def _compare_copy(
    what: str,
    ids: np.ndarray,
    data: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray],
    mode: str,
    found: _Findings,
) -> None:
    rowids, floats = rows
    if not np.array_equal(ids, rowids):
        extra = np.setdiff1d(ids, rowids)
        missing = np.setdiff1d(rowids, ids)
        found.add(
            f"{what} and stored vectors disagree: {len(extra)} rows only in the copy, "
            f"{len(missing)} only stored"
        )
        return
    if not len(rowids):
        return  # an empty index: nothing to compare
    want = search.encode(search.normalize(floats), mode)
    differ = np.flatnonzero((data != want).any(axis=1))  # (n, d) or (n, d/8); n may be 0
    # a vector that is not finite is reported as such; its code says nothing more
    differ = differ[np.isfinite(floats[differ]).all(axis=1)]
    if len(differ):
        found.add(f"{what} differs from the stored vectors: {describe_rows(rowids[differ])}")


def free_space(conn: Any) -> dict[str, int]:
    """Free pages and bytes in the file, and vector slots emptied by deletions (vec0 keeps a
    vector chunk until all of its rows are gone)."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    out = {
        "file_bytes": pages * page_size,
        "free_pages": free,
        "free_bytes": free * page_size,
    }
    try:
        slots_sql = "SELECT coalesce(sum(size), 0) FROM chunks_vec_chunks"
        slots = int(conn.execute(slots_sql).fetchone()[0])
        live = int(conn.execute("SELECT count(*) FROM chunks_vec_rowids").fetchone()[0])
    except Exception:  # another vec0 layout: no slot figures
        log.debug("vec0 chunk table unreadable", exc_info=True)
    else:
        out["vector_slots_unused"] = max(0, slots - live)
    return out


def _fulltext_check(index: Index, conn: Any, found: _Findings) -> None:
    """FTS5's integrity-check is an INSERT: a read-only connection cannot run it. Run it on
    this connection when the file is writable here, else on a private copy of the file."""
    sql = "INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)"
    what = "full-text index does not match the chunks"
    if os.access(index.path, os.W_OK):
        conn.execute("PRAGMA query_only = OFF")
        try:
            found.guard(what, lambda: conn.execute(sql))
        finally:
            if not index.writable:
                conn.execute("PRAGMA query_only = ON")
        return
    with tempfile.TemporaryDirectory(prefix="lokal-check-") as tmp:
        copy = Path(tmp) / "copy.db"

        def backup() -> bool:
            lifecycle.copy(conn, copy)
            return True

        if not found.guard("copying the file for the full-text check", backup):
            return
        other = sqlite.connect(copy)
        try:
            found.guard(what, lambda: other.execute(sql))
        finally:
            other.close()
