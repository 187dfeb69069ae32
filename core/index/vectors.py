"""The search copy: an index's vectors in memory, in one representation, and its vector math.

sqlite-vec 0.1.9 searches by brute force inside SQLite (measured: 69 ms at 100k rows where
numpy takes 15 ms). lokal keeps a search copy of the vectors in memory instead — float32, or
int8 / 1-bit for large indexes on small boxes — loaded on first search and reloaded when the
file changes. :mod:`lokal.index.search` runs the searches over it.

Quantized modes find ``k * oversample`` candidates in the compact copy and rescore them with
the stored float32 vectors, so returned scores are always exact cosines.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from lokal.errors import IndexFileError, MemoryBudgetError
from lokal.index import stored

log = logging.getLogger(__name__)

#: What an index may record as its search copy: ``auto`` picks one from the index's size and
#: the memory budget each time the copy is loaded (:func:`choose_mode`).
QUANTIZATIONS = ("auto", "float", "int8", "bit")
#: The search copies themselves.
MODES = ("float", "int8", "bit")
#: The search copy's memory an ``auto`` index may take by default: room for a float copy of
#: 170k x 384 dims, an int8 copy of 680k; above that the 1-bit copy (56 bytes a row with its
#: rowid) with exact float rescoring.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
MEMORY_BUDGET_ENV = "LOKAL_MEMORY_BUDGET"
#: Candidates per wanted result in the quantized modes, before float rescoring.
OVERSAMPLE = {"float": 1, "int8": 4, "bit": 40}
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_budget(value: int | str) -> int:
    """Bytes of a memory budget: an int, or text such as ``512M``, ``1.5G``, ``300MB``."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)i?b?\s*", str(value).lower())
        if found is None:
            msg = f"a memory budget is a size such as 256M or 1G, not {value!r}"
            raise MemoryBudgetError(msg)
        number, unit = float(found.group(1)), found.group(2)
    budget = int(number * _UNITS[unit])
    if budget <= 0:
        msg = f"a memory budget must be positive, not {value!r}"
        raise MemoryBudgetError(msg)
    return budget


def memory_budget(value: int | str | None = None) -> int:
    """The search copy's memory budget: ``value``, else ``$LOKAL_MEMORY_BUDGET``, else
    :data:`DEFAULT_MEMORY_BUDGET`."""
    if value is None:
        found = os.environ.get(MEMORY_BUDGET_ENV)
        if found:
            try:
                return parse_budget(found)
            except MemoryBudgetError as exc:
                msg = f"${MEMORY_BUDGET_ENV}: {exc}"
                raise MemoryBudgetError(msg) from exc
        value = DEFAULT_MEMORY_BUDGET
    return parse_budget(value)


def copy_bytes(rows: int, dimension: int, mode: str) -> int:
    """Memory of a search copy of ``rows`` vectors (codes and rowids)."""
    width = {"float": 4 * dimension, "int8": dimension, "bit": (dimension + 7) // 8}[mode]
    return rows * (width + 8)


def choose_mode(recorded: str, rows: int, dimension: int, budget: int) -> str:
    """The search copy for an index recording ``recorded``: that one, or for ``auto`` the
    first of exact float, int8 (only with NumKong's SIMD kernels: numpy's int8 is slower
    than its float) and 1-bit that fits ``budget`` (the last two rescored exactly)."""
    if recorded in MODES:
        return recorded
    if recorded != "auto":
        msg = f"unknown quantization {recorded!r}; choose from {QUANTIZATIONS}"
        raise IndexFileError(msg)
    candidates = ("float", "int8") if simd() is not None else ("float",)
    for mode in candidates:
        if copy_bytes(rows, dimension, mode) <= budget:
            return mode
    return "bit"


def describe_copy(info: dict[str, Any]) -> str:
    """One line for :meth:`Index.search_copy`'s figures: ``bit (auto; memory budget 256 MiB;
    1,000,000 rows: 53.4 MiB, float would take 1.44 GiB)``."""
    why = "auto" if info["quantization"] == "auto" else "recorded"
    return (
        f"{info['mode']} ({why}; memory budget {_size(info['memory_budget'])}; "
        f"{info['rows']:,} rows: {_size(info['bytes'])}"
        + ("" if info["mode"] == "float" else f", float would take {_size(info['float_bytes'])}")
        + ")"
    )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def stored_count(conn: Any) -> int:
    """How many vectors the file stores (vec0's rowid list; the chunks where unreadable)."""
    try:
        return int(conn.execute("SELECT count(*) FROM chunks_vec_rowids").fetchone()[0])
    except Exception as exc:  # another vec0 layout
        if "no such" not in str(exc):
            raise
        return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])


_BLOCK = 65_536
_LOAD_ROWS = 8_192
#: A stored vector of a normalizing model is unit length to float32 rounding; this is generous.
UNIT_TOLERANCE = 1e-3
_EXAMPLES = 5


def normalize(v: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows (a new array; zero rows stay zero)."""
    return normalize_in_place(np.array(v, dtype=np.float32))


def squared_lengths(v: np.ndarray) -> np.ndarray:
    """Each row's squared length (one pass; the same arithmetic wherever lokal normalizes, so
    a copy normalized a batch at a time equals the whole matrix normalized at once)."""
    out: np.ndarray = np.einsum("...i,...i->...", v, v)
    return out


def normalize_in_place(v: np.ndarray, squares: np.ndarray | None = None) -> np.ndarray:
    """Divide each float32 row by its length, in ``v`` itself; returns ``v``. ``squares``:
    the rows' squared lengths when already computed."""
    if squares is None:
        squares = squared_lengths(v)
    norms = np.sqrt(squares)[..., None]
    with np.errstate(invalid="ignore", over="ignore"):  # damaged rows: refused elsewhere
        v /= np.where(norms == 0, 1.0, norms)
    return v


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
        """Read every vector straight into the cache's representation, in large pieces
        (:mod:`lokal.index.stored`): the bit copy from its stored codes, float and int8 from
        vec0's vector blobs; row by row only for a file whose layout is unknown.

        A damaged vector (not finite; not unit length where ``unit``: the model normalizes)
        is :class:`~lokal.errors.IndexFileError`: search never scores garbage or NaN (the bit
        copy holds no floats: its candidates' floats are checked when they are rescored)."""
        if quantization not in MODES:
            msg = f"unknown search copy {quantization!r}; choose from {MODES}"
            raise ValueError(msg)
        if quantization == "bit" and stored.has_bits(conn):
            rowids, data = stored.read_bits(conn, dimension)
            if len(rowids) == stored_count(conn):
                return cls(quantization, rowids, data, version)
            log.warning(
                "the stored bit copy holds %d rows, the vectors %d: reading the vectors",
                len(rowids),
                stored_count(conn),
            )

        def transform(block: np.ndarray, ids: np.ndarray) -> np.ndarray:
            squares = squared_lengths(block)
            refuse_damaged(block, ids, unit, squares)
            return encode(normalize_in_place(block, squares), quantization)

        found = stored.read_floats(
            conn,
            dimension,
            encoded_shape(dimension, quantization),
            encoded_dtype(quantization),
            transform,
        )
        if found is None:
            return cls.load_rows(conn, dimension, quantization, version, unit=unit)
        return cls(quantization, found[0], found[1], version)

    @classmethod
    def load_rows(
        cls,
        conn: Any,
        dimension: int,
        quantization: str,
        version: tuple[int, int],
        *,
        unit: bool = False,
    ) -> VectorCache:
        """:meth:`load` through vec0's row-by-row interface (13-20 s at 1M rows), a block at
        a time (peak memory: the cache plus one block)."""
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


def refuse_damaged(
    block: np.ndarray, rowids: np.ndarray, unit: bool, squares: np.ndarray | None = None
) -> None:
    """:class:`IndexFileError` naming the rows of ``block`` that are not finite or (where
    ``unit``) not unit length. One float32 pass (``squares``: the rows' squared lengths, when
    already computed); only suspect rows are looked at again in float64 (a finite value whose
    square overflows float32 is no damage)."""
    if squares is None:
        squares = squared_lengths(block)
    with np.errstate(invalid="ignore"):
        suspect = ~np.isfinite(squares)
        if unit:
            suspect |= np.abs(np.sqrt(squares) - 1.0) > UNIT_TOLERANCE
    if not suspect.any():
        return
    block, rowids = block[suspect], rowids[suspect]
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
    msg = f"unknown search copy {quantization!r}; choose from {MODES}"
    raise ValueError(msg)


def simd() -> Any:
    """NumKong (SIMD int8 dot products and Hamming distances) when installed, else None."""
    global _NUMKONG
    if _NUMKONG is None:
        try:
            import numkong
        except ImportError:
            _NUMKONG = False
        else:
            _NUMKONG = numkong
    return _NUMKONG or None


_NUMKONG: Any = None


def approximate_scores(cache: VectorCache, query: np.ndarray, pos: np.ndarray | None) -> np.ndarray:
    """Scores for the rows at ``pos`` (all rows if None), higher is closer.

    float: exact cosine (numpy's matrix-vector product: NumKong's float kernel was slower).
    int8: the int8 dot product with the int8 query (a cosine times 127 squared, up to
    rounding). bit: minus the Hamming distance. The last two run in NumKong's SIMD kernels
    (avx512_vnni / avx_vnni / NEON dot products; 4-8x numpy's), with numpy as the fallback.
    """
    data = cache.data if pos is None else cache.data[pos]
    if cache.quantization == "float":
        return data @ query  # type: ignore[no-any-return]
    nk = simd()
    if cache.quantization == "int8":
        if nk is not None and len(data):
            q8 = encode(query[None, :], "int8")
            return np.asarray(nk.cdist(data, q8, "dot", out_dtype="float32")).reshape(-1)
        q = query.astype(np.float32) * 127.0
        out = np.empty(len(data), dtype=np.float32)
        for start in range(0, len(data), _BLOCK):
            block = data[start : start + _BLOCK]
            out[start : start + len(block)] = block.astype(np.float32) @ q
        return out
    qbits = np.packbits(query > 0)
    if nk is not None and len(data):
        far = nk.cdist(data, qbits[None, :], "hamming", dtype="uint1", out_dtype="float32")
        return -np.asarray(far).reshape(-1)
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
