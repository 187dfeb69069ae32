"""The search copy: an index's vectors in memory, in one representation, and its vector math.

sqlite-vec 0.1.9 searches by brute force inside SQLite (measured: 69 ms at 100k rows where
numpy takes 15 ms). lokal keeps a search copy of the vectors in memory instead — float32, or
int8 / 1-bit for large indexes on small boxes — loaded on first search and reloaded when the
file changes. :mod:`lokal.index.search` runs the searches over it.

Quantized modes find ``k * oversample`` candidates in the compact copy and rescore them with
the stored float32 vectors, so returned scores are always exact cosines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lokal.errors import IndexFileError

QUANTIZATIONS = ("float", "int8", "bit")
#: Candidates per wanted result in the quantized modes, before float rescoring.
OVERSAMPLE = {"float": 1, "int8": 4, "bit": 40}
_BLOCK = 65_536
_LOAD_ROWS = 8_192
#: A stored vector of a normalizing model is unit length to float32 rounding; this is generous.
UNIT_TOLERANCE = 1e-3
_EXAMPLES = 5


def normalize(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    out: np.ndarray = (v / np.where(norms == 0, 1.0, norms)).astype(np.float32)
    return out


@dataclass
class VectorCache:
    """The in-memory search copy of one index's vectors, in one representation."""

    quantization: str
    rowids: np.ndarray  # int64, sorted
    data: np.ndarray  # float32 (n, d) normalized | int8 (n, d) | uint8 (n, d/8) packed signs
    version: tuple[int, int]

    @classmethod
    def load(
        cls,
        conn: Any,
        dimension: int,
        quantization: str,
        version: tuple[int, int],
        *,
        unit: bool = False,
    ) -> VectorCache:
        """Read every vector, a block at a time, straight into the cache's representation
        (peak memory: the cache plus one block, not every row as Python objects).

        A damaged vector (not finite; not unit length where ``unit``: the model normalizes)
        is :class:`~lokal.errors.IndexFileError`: search never scores garbage or NaN."""
        expected = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
        rowids = np.empty(expected, dtype=np.int64)
        data: np.ndarray = np.empty(
            (expected, *encoded_shape(dimension, quantization)), encoded_dtype(quantization)
        )
        at = 0
        cursor = conn.execute("SELECT rowid, embedding FROM chunks_vec")
        while rows := cursor.fetchmany(_LOAD_ROWS):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            blob = b"".join(r[1] for r in rows)
            if len(blob) != 4 * dimension * len(rows):
                msg = f"stored vectors are not all {dimension} floats: the index is damaged"
                raise IndexFileError(msg)
            block = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dimension)
            refuse_damaged(block, ids, unit)
            encoded = encode(normalize(block), quantization)
            if at + len(rows) > len(rowids):  # rows without a chunk: Index.check() reports them
                grow = at + len(rows) - len(rowids)
                rowids = np.concatenate([rowids, np.empty(grow, dtype=np.int64)])
                data = np.concatenate([data, np.empty((grow, *data.shape[1:]), data.dtype)])
            rowids[at : at + len(rows)] = ids
            data[at : at + len(rows)] = encoded
            at += len(rows)
        rowids, data = rowids[:at], data[:at]
        if np.any(np.diff(rowids) < 0):
            order = np.argsort(rowids, kind="stable")
            rowids, data = rowids[order], data[order]
        return cls(quantization, rowids, data, version)

    def positions(self, rowids: np.ndarray) -> np.ndarray:
        """Positions in the cache of the given rowids (those it holds)."""
        pos = np.searchsorted(self.rowids, rowids)
        inside = pos < len(self.rowids)
        pos, rowids = pos[inside], rowids[inside]
        found: np.ndarray = pos[self.rowids[pos] == rowids]
        return found

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.rowids.nbytes)


def bad_vectors(block: np.ndarray, unit: bool) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the rows of ``block`` (n, d) that are not finite, and (where ``unit``) of the
    finite rows that are not unit length."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.linalg.norm(block.astype(np.float64), axis=1)
    not_finite = ~np.isfinite(block).all(axis=1) | ~np.isfinite(norms)
    if not unit:
        return not_finite, np.zeros(len(block), dtype=bool)
    return not_finite, ~not_finite & (np.abs(norms - 1.0) > UNIT_TOLERANCE)


def describe_rows(rowids: np.ndarray | list[int]) -> str:
    shown = ", ".join(str(int(r)) for r in list(rowids)[:_EXAMPLES])
    more = "" if len(rowids) <= _EXAMPLES else ", ..."
    return f"{len(rowids)} (rows {shown}{more})"


def refuse_damaged(block: np.ndarray, rowids: np.ndarray, unit: bool) -> None:
    not_finite, not_unit = bad_vectors(block, unit)
    if not_finite.any() or not_unit.any():
        bad = rowids[not_finite | not_unit]
        msg = (
            f"the index is damaged: stored vectors {describe_rows(bad)} are not finite or not "
            "unit length; run `lokal check` on it, and rebuild it (or restore a snapshot)"
        )
        raise IndexFileError(msg)


def encoded_shape(dimension: int, quantization: str) -> tuple[int]:
    return ((dimension + 7) // 8,) if quantization == "bit" else (dimension,)


def encoded_dtype(quantization: str) -> type:
    return {"float": np.float32, "int8": np.int8, "bit": np.uint8}[quantization]


def encode(matrix: np.ndarray, quantization: str) -> np.ndarray:
    """Normalized float32 rows in the cache's representation."""
    if quantization == "float":
        return np.ascontiguousarray(matrix, dtype=np.float32)
    if quantization == "int8":
        return np.clip(np.rint(matrix * 127.0), -127, 127).astype(np.int8)
    if quantization == "bit":
        return np.packbits(matrix > 0, axis=-1)
    msg = f"unknown quantization {quantization!r}; choose from {QUANTIZATIONS}"
    raise ValueError(msg)


def approximate_scores(cache: VectorCache, query: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    """Scores for the rows at ``pos`` (all rows if None), higher is closer.

    float: exact cosine. int8: cosine up to rounding. bit: minus the Hamming distance.
    """
    data = cache.data if pos is None else cache.data[pos]
    if cache.quantization == "float":
        return data @ query  # type: ignore[no-any-return]
    if cache.quantization == "int8":
        q = query.astype(np.float32) * 127.0
        out = np.empty(len(data), dtype=np.float32)
        for start in range(0, len(data), _BLOCK):
            block = data[start : start + _BLOCK]
            out[start : start + len(block)] = block.astype(np.float32) @ q
        return out
    qbits = np.packbits(query > 0)
    if data.shape[1] % 8 == 0:
        xor = np.bitwise_xor(data.view(np.uint64), qbits.view(np.uint64))
    else:
        xor = np.bitwise_xor(data, qbits)
    distance = np.bitwise_count(xor).sum(axis=1, dtype=np.int32)
    return -distance.astype(np.float32)  # type: ignore[no-any-return]


def top_positions(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first; ties broken by position."""
    if n <= 0 or len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    if n < len(scores):
        part = np.argpartition(-scores, n - 1)[:n]
    else:
        part = np.arange(len(scores))
    ordered: np.ndarray = part[np.lexsort((part, -scores[part]))]
    return ordered
