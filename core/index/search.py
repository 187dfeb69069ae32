"""Search over the index: exact top-k, quantized candidates, hybrid fusion, MMR.

The search copy of the vectors and its math (:class:`VectorCache`, encodings, scores) live in
:mod:`lokal.index.vectors`; the names are re-exported here. Filters are evaluated in SQL
first; the vector math then runs over exactly the rows that match, so k results come back
whenever k rows match.

This module owns search: :class:`Searching`, the search methods of :class:`~lokal.index.Index`
(vector, full-text, hybrid, MMR), and rank fusion.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lokal.errors import IndexFileError
from lokal.index import fulltext, sqlite, vectors
from lokal.index.filters import compile_filter
from lokal.index.reading import Reading, reading
from lokal.index.records import RECORD_COLUMNS, Hit, record
from lokal.index.vectors import (
    MODES,
    OVERSAMPLE,
    QUANTIZATIONS,
    UNIT_TOLERANCE,
    VectorCache,
    approximate_scores,
    bad_vectors,
    describe_rows,
    encode,
    encoded_dtype,
    encoded_shape,
    normalize,
    refuse_damaged,
    top_positions,
)

__all__ = [
    "MODES",
    "OVERSAMPLE",
    "QUANTIZATIONS",
    "UNIT_TOLERANCE",
    "Searching",
    "VectorCache",
    "approximate_scores",
    "bad_vectors",
    "candidate_depth",
    "describe_rows",
    "encode",
    "encoded_dtype",
    "encoded_shape",
    "fuse",
    "hybrid_depth",
    "mmr",
    "normalize",
    "refuse_damaged",
    "relevance",
    "top_positions",
]

#: Hybrid search takes this many candidates from each of its two rankings (``k`` when more),
#: and :func:`fuse` weighs the vector ranking so (the full text: one minus it). Chosen by
#: measurement: min-max score fusion at depth 100 beat reciprocal rank fusion (k = 5 ... 100,
#: depth 20 ... 200) on all three eval sets of docs/choosing-a-model.md
#: (benchmarks/hybrid_fusion.py), and weights 0.5 and 0.7 were within 0.003 of each other.
HYBRID_DEPTH = 100
VECTOR_WEIGHT = 0.5

#: The candidate depth for ``k`` results, ``max(2 * k, 20)``: what a reranker reorders by
#: default (:func:`lokal.retrieval.candidate_depth`). With
#: :data:`lokal.retrieval.DOCUMENT_TOKENS`, a MiniLM-size cross-encoder's CPU budget, measured:
#: docs/benchmarks.md, "Reranking budget".
CANDIDATE_FACTOR = 2
CANDIDATE_MIN = 20

#: Quantized hybrid search rescores at most ``max(4 * k, 20)`` x the mode's oversampling
#: candidates with their float vectors (see :meth:`Searching.hybrid_search`).
RESCORE_FACTOR = 4


def candidate_depth(k: int, candidates: int | None = None) -> int:
    """``candidates`` when given, else ``max(2 * k, 20)``; never fewer than ``k``."""
    return max(k, candidates or max(CANDIDATE_FACTOR * k, CANDIDATE_MIN))


def relevance(cosine: np.ndarray | float) -> Any:
    """lokal's documented relevance score: (1 + cosine) / 2, in [0, 1], higher is better."""
    return np.clip((1.0 + np.asarray(cosine)) / 2.0, 0.0, 1.0)


def hybrid_depth(k: int, fetch_k: int | None = None) -> int:
    """Candidates hybrid search takes from each ranking: ``fetch_k`` when given, else
    :data:`HYBRID_DEPTH`; never fewer than ``k``."""
    return max(k, fetch_k or HYBRID_DEPTH)


def fuse(
    rankings: Sequence[Sequence[tuple[Any, float]]],
    k: int,
    weights: Sequence[float] = (VECTOR_WEIGHT, 1.0 - VECTOR_WEIGHT),
) -> list[tuple[Any, float]]:
    """The ``k`` best items of several scored rankings ((item, score), higher is better, best
    first), fused by min-max normalized scores: each ranking's scores are scaled to [0, 1] over
    that ranking (its best 1, its last 0; a single score, or all equal: 1), weighted and
    summed. First in every ranking = 1.0 (the weights sum to 1); ties by item."""
    fused: dict[Any, float] = {}
    for weight, ranking in zip(weights, rankings, strict=True):
        if not ranking:
            continue
        scores = [s for _, s in ranking]
        hi, lo = max(scores), min(scores)
        for item, score in ranking:
            norm = 1.0 if hi == lo else (score - lo) / (hi - lo)
            fused[item] = fused.get(item, 0.0) + weight * norm
    total = sum(weights) or 1.0
    top = sorted(fused.items(), key=lambda t: (-t[1], t[0]))[:k]
    return [(item, score / total) for item, score in top]


def mmr(query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Maximal marginal relevance over normalized candidate vectors; returns their positions."""
    if len(candidates) == 0:
        return []
    to_query = candidates @ query
    chosen = [int(np.argmax(to_query))]
    best_sim = candidates @ candidates[chosen[0]]
    while len(chosen) < min(k, len(candidates)):
        score = lambda_mult * to_query - (1.0 - lambda_mult) * best_sim
        score[chosen] = -np.inf
        nxt = int(np.argmax(score))
        chosen.append(nxt)
        best_sim = np.maximum(best_sim, candidates @ candidates[nxt])
    return chosen


#: Filters whose matching rows an open index remembers (until the file changes).
_FILTER_CACHE_SIZE = 16


class Searching(Reading):
    """The searches of :class:`~lokal.index.Index`, over its in-memory search copy."""

    def __init__(self, conn: Any, path: Path, *, writable: bool) -> None:
        super().__init__(conn, path, writable=writable)
        self._cache: VectorCache | None = None
        #: bytes the search copy of an ``auto`` index may take (lokal.index.vectors)
        self.memory_budget = vectors.memory_budget()
        # filter (canonical JSON) -> positions in self._cache of the rows it matches; emptied
        # whenever the cache is reloaded (the file changed)
        self._filter_positions: OrderedDict[str, np.ndarray] = OrderedDict()
        self._tokenizer: str | None = None

    def _file_replaced(self) -> None:
        super()._file_replaced()
        self._cache = None
        self._filter_positions.clear()
        self._tokenizer = None

    def _fts_tokenizer(self) -> str:
        """The file's full-text tokenizer (read once per file: only a migration changes it)."""
        if self._tokenizer is None:
            self._tokenizer = fulltext.file_tokenizer(self._reader())
        return self._tokenizer

    def _cache_for_search(self) -> VectorCache:
        conn = self._reader()
        version = (int(conn.execute("PRAGMA data_version").fetchone()[0]), self._writes)
        if self._cache is None or self._cache.version != version:
            with sqlite.read(conn):
                self._cache = VectorCache.load(
                    conn,
                    self.dimension,
                    self._search_mode(conn),
                    version,
                    unit=self.identity.normalize,
                )
                self._filter_positions.clear()
        return self._cache

    def _search_mode(self, conn: Any) -> str:
        return vectors.choose_mode(
            self.quantization, vectors.stored_count(conn), self.dimension, self.memory_budget
        )

    @reading
    def search_copy(self) -> dict[str, Any]:
        """Which search copy this index uses and why: the recorded choice, the memory budget,
        the copy chosen for the current size and its memory (what ``lokal check`` shows)."""
        with self._lock, sqlite.read(self._reader()) as conn:
            rows = vectors.stored_count(conn)
            mode = self._search_mode(conn)
        return {
            "quantization": self.quantization,
            "memory_budget": self.memory_budget,
            "rows": rows,
            "mode": mode,
            "bytes": vectors.copy_bytes(rows, self.dimension, mode),
            "float_bytes": vectors.copy_bytes(rows, self.dimension, "float"),
        }

    def _query(self, vector: Any) -> np.ndarray:
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape != (self.dimension,) or not np.all(np.isfinite(q)):
            msg = f"query vector must be {self.dimension} finite numbers, got shape {q.shape}"
            raise ValueError(msg)
        return normalize(q)

    def _filtered_positions(
        self, cache: VectorCache, flt: Mapping[str, Any] | None
    ) -> np.ndarray | None:
        """Positions in ``cache`` of the rows matching ``flt`` (None: no filter). The SQL runs
        once per filter and file version: a retriever's fixed filter costs it once."""
        if not flt:
            return None
        where, params = compile_filter(flt)
        key = json.dumps([where, params], default=str)
        found = self._filter_positions.get(key)
        if found is not None:
            self._filter_positions.move_to_end(key)
            return found
        rows = self._reader().execute(f"SELECT c.id FROM chunks c WHERE {where}", params)
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64)
        found = cache.positions(np.sort(rowids))
        self._filter_positions[key] = found
        while len(self._filter_positions) > _FILTER_CACHE_SIZE:
            self._filter_positions.popitem(last=False)
        return found

    def _float_vectors(self, rowids: Sequence[int]) -> dict[int, np.ndarray]:
        conn = self._reader()
        out = {}
        for rowid in rowids:
            row = conn.execute(
                "SELECT embedding FROM chunks_vec WHERE rowid = ?", (int(rowid),)
            ).fetchone()
            if row is not None:
                vector = np.frombuffer(row[0], dtype=np.float32).reshape(1, -1)
                if vector.shape[1] != self.dimension:
                    msg = f"the index is damaged: stored vector {rowid} has the wrong size"
                    raise IndexFileError(msg)
                refuse_damaged(vector, np.array([rowid]), self.identity.normalize)
                out[int(rowid)] = normalize(vector[0])
        return out

    def _nearest(
        self, q: np.ndarray, n: int, flt: Mapping[str, Any] | None, *, budget: int | None = None
    ) -> list[tuple[int, float]]:
        """(rowid, exact cosine) of the ``n`` nearest rows matching ``flt``, best first. In the
        quantized modes at most ``budget`` candidates (default: ``n`` times the oversampling)
        are rescored with their float vectors."""
        cache = self._cache_for_search()
        pos = self._filtered_positions(cache, flt)
        scores = approximate_scores(cache, q, pos)
        want = n * OVERSAMPLE[cache.quantization]
        if budget is not None:
            want = max(n, min(want, budget))
        best = top_positions(scores, want)
        rows = cache.rowids[best] if pos is None else cache.rowids[pos[best]]
        if cache.quantization == "float":
            return [(int(r), float(s)) for r, s in zip(rows, scores[best], strict=True)]
        exact = self._float_vectors(rows.tolist())
        rescored = sorted(
            ((float(v @ q), r) for r, v in exact.items()), key=lambda t: (-t[0], t[1])
        )
        return [(r, s) for s, r in rescored[:n]]

    def _hits(self, scored: Sequence[tuple[int, float, float | None]]) -> list[Hit]:
        """Hits for (rowid, score, cosine) triples, in the given order."""
        if not scored:
            return []
        if not all(np.isfinite(s) and (c is None or np.isfinite(c)) for _, s, c in scored):
            msg = f"{self.path}: a score is not finite (damaged vectors?); run `lokal check`"
            raise IndexFileError(msg)
        conn = self._reader()
        rows = conn.execute(
            f"SELECT c.id, {RECORD_COLUMNS} FROM chunks c LEFT JOIN documents d ON "
            "d.id = c.document_id WHERE c.id IN (SELECT value FROM json_each(?))",
            (json.dumps([r for r, _, _ in scored]),),
        ).fetchall()
        by_rowid = {r[0]: r[1:] for r in rows}
        return [
            record(
                by_rowid[r],
                Hit,
                score=float(score),
                distance=None if cos is None else float(1.0 - cos),
            )
            for r, score, cos in scored
            if r in by_rowid
        ]

    @reading
    def search(
        self, vector: Any, k: int = 4, *, filter: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """The ``k`` chunks nearest to ``vector`` among those matching ``filter`` (exact in
        float mode: equal to numpy's top-k over the matching rows)."""
        q = self._query(vector)
        with self._lock, sqlite.read(self._reader()):
            nearest = self._nearest(q, k, filter)
            return self._hits([(r, float(relevance(c)), c) for r, c in nearest])

    @reading
    def text_search(
        self, text: str, k: int = 4, *, filter: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Full-text (BM25) matches for any word of ``text``. ``score`` is each hit's BM25
        relative to the best hit's (the best is 1.0); ``distance`` is None."""
        with self._lock, sqlite.read(self._reader()):
            ranked = self._text_ranks(text, k, filter)
            best = ranked[0][1] if ranked else 1.0
            return self._hits([(r, bm25 / best if best else 1.0, None) for r, bm25 in ranked])

    def _text_ranks(
        self, text: str, k: int, filter: Mapping[str, Any] | None
    ) -> list[tuple[int, float]]:
        """(rowid, bm25) of the best full-text matches for any word of ``text`` (FTS5's bm25:
        lower is better), every word searched (:mod:`lokal.index.fulltext`)."""
        query = fulltext.match_query(fulltext.query_words(text), self._fts_tokenizer())
        if query is None or k <= 0:
            return []
        where, params = compile_filter(filter)
        sql = (
            "SELECT f.rowid, bm25(chunks_fts) AS rank FROM chunks_fts f JOIN chunks c ON "
            f"c.id = f.rowid WHERE chunks_fts MATCH ? AND {where} ORDER BY rank, f.rowid LIMIT ?"
        )
        rows = self._reader().execute(sql, [query, *params, k]).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]

    @reading
    def hybrid_search(
        self,
        vector: Any,
        text: str,
        k: int = 4,
        *,
        filter: Mapping[str, Any] | None = None,
        fetch_k: int | None = None,
    ) -> list[Hit]:
        """The vector ranking and the full-text (BM25) ranking, ``fetch_k`` candidates each
        (default :data:`HYBRID_DEPTH`), fused by :func:`fuse` (min-max normalized scores,
        weighted). ``score`` is the fused score: 1.0 for first in both rankings."""
        q = self._query(vector)
        fetch = hybrid_depth(k, fetch_k)
        # quantized modes: rescore no more candidates than a plain search of max(4k, 20)
        # would (100 x 40 float reads in bit mode took 1.4 s at 50k chunks,
        # benchmarks/hybrid_latency.py); the best of them are exact, as before
        with self._lock, sqlite.read(self._reader()):
            # the copy in use: an "auto" index searches float, int8 or bit by its size
            depth = max(RESCORE_FACTOR * k, CANDIDATE_MIN)
            budget = depth * OVERSAMPLE[self._cache_for_search().quantization]
            nearest = self._nearest(q, fetch, filter, budget=budget)
            lexical = self._text_ranks(text, fetch, filter)
            top = fuse([nearest, [(r, -bm25) for r, bm25 in lexical]], k)
            cosines: dict[int, float | None] = {r: c for r, c in nearest}
            missing = [r for r, _ in top if r not in cosines]
            for r, v in self._float_vectors(missing).items():
                cosines[r] = float(v @ q)
            return self._hits([(r, s, cosines.get(r)) for r, s in top])

    @reading
    def mmr_search(
        self,
        vector: Any,
        k: int = 4,
        *,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Maximal marginal relevance: relevant to the query, and different from each other."""
        q = self._query(vector)
        with self._lock, sqlite.read(self._reader()):
            nearest = self._nearest(q, max(fetch_k, k), filter)
            vectors = self._float_vectors([r for r, _ in nearest])
            rowids = [r for r, _ in nearest if r in vectors]
            if not rowids:
                return []
            chosen = mmr(q, np.stack([vectors[r] for r in rowids]), k, lambda_mult)
            cos = dict(nearest)
            return self._hits(
                [(rowids[i], float(relevance(cos[rowids[i]])), cos[rowids[i]]) for i in chosen]
            )
