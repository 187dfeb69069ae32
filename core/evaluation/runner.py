"""Runs retrieval setups over an evaluation set and scores them.

A :class:`Setup` is one way to retrieve: a model (and backend, quantization, prefixes,
Matryoshka dimensions), vector or hybrid search, and optionally a reranker over the first
``candidates`` results. :func:`evaluate` runs several on the same set, each through lokal's own
index code (the same search users get), and scores them with :mod:`lokal.evaluation.metrics`.

Corpus embeddings are cached as lokal index files under ``$LOKAL_HOME/eval-cache``, one per
corpus (sha256 of its texts) and model fingerprint (identity key + variant): a second setup with
the same model, or a second run, does not re-embed. An evaluation against a lokal index uses
the index itself when the setup's model is exactly the one it records.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lokal import models, retrieval
from lokal.embedder import Embedder, TruncationWarning
from lokal.errors import ModelNotFound, ProfileError
from lokal.evaluation import metrics
from lokal.evaluation.data import EvalSet
from lokal.evaluation.metrics import QueryScores
from lokal.index import Chunk, Hit, Index, lifecycle

log = logging.getLogger(__name__)

#: ``progress(stage, done, total)``: called as work advances (the CLI draws bars with it).
Progress = Callable[[str, int, int], None]
#: ``vector``: the model's vectors; ``text``: full text alone (BM25); ``hybrid``: both, fused
#: as lokal.retrieval fuses them for every caller.
SEARCHES = ("vector", "hybrid", "text")
_BATCH = 64


@dataclass(frozen=True)
class Setup:
    """One way to retrieve. ``None`` means the model's own setting (prefixes) or lokal's
    default (model, quantization)."""

    model: str | None = None
    backend: str = "auto"
    quantization: str | None = None
    dimensions: int | None = None
    query_prefix: str | None = None
    document_prefix: str | None = None
    search: str = "vector"
    reranker: str | None = None
    #: results a reranker reorders: ``lokal search --rerank``'s default for k=10
    candidates: int = retrieval.candidate_depth(10)
    #: cut each candidate to this many tokens before reranking (``max_document_tokens``;
    #: None: all that fit the reranker's context), by default as ``lokal search --rerank`` does
    doc_tokens: int | None = retrieval.DOCUMENT_TOKENS
    label: str = "base"

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            msg = f"search must be one of {SEARCHES}, got {self.search!r}"
            raise ProfileError(msg)
        if self.candidates < 1:
            msg = f"candidates must be at least 1, got {self.candidates}"
            raise ProfileError(msg)
        if self.doc_tokens is not None and self.doc_tokens < 1:
            msg = f"doc_tokens must be at least 1, got {self.doc_tokens}"
            raise ProfileError(msg)
        if self.backend not in models.BACKENDS:
            msg = f"backend must be one of {models.BACKENDS}, got {self.backend!r}"
            raise ProfileError(msg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_KEYS = {
    "model": "model",
    "backend": "backend",
    "quant": "quantization",
    "quantization": "quantization",
    "dims": "dimensions",
    "dimensions": "dimensions",
    "query-prefix": "query_prefix",
    "document-prefix": "document_prefix",
    "search": "search",
    "rerank": "reranker",
    "reranker": "reranker",
    "candidates": "candidates",
    "doc-tokens": "doc_tokens",
    "label": "label",
}


def parse_setup(spec: str, base: Setup) -> Setup:
    """A ``--compare`` spec: ``key=value`` pairs separated by commas, changing ``base``.

    Keys: model, backend, quant, dims, prefixes (on|off), query-prefix, document-prefix,
    search (vector|hybrid|text), rerank (a model, or off), candidates, doc-tokens (a number, or
    full), label. The bare words
    ``hybrid``, ``vector`` and ``text`` set the search. The label defaults to the spec itself.
    """
    changes: dict[str, Any] = {"label": spec.strip()}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in SEARCHES:
            changes["search"] = part
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if not sep:
            msg = f"--compare {spec!r}: {part!r} is not key=value"
            raise ProfileError(msg)
        if key == "prefixes":
            if value not in ("on", "off"):
                msg = f"--compare {spec!r}: prefixes is on or off, not {value!r}"
                raise ProfileError(msg)
            on = value == "on"
            changes.update(query_prefix=None if on else "", document_prefix=None if on else "")
            continue
        if key not in _KEYS:
            known = ", ".join(sorted({"prefixes", *_KEYS}))
            msg = f"--compare {spec!r}: unknown key {key!r} (known: {known})"
            raise ProfileError(msg)
        changes[_KEYS[key]] = _value(_KEYS[key], value, spec)
    return replace(base, **changes)


def _value(field_name: str, value: str, spec: str) -> Any:
    if field_name in ("dimensions", "candidates", "doc_tokens"):
        try:
            return int(value) if value not in ("", "none", "full") else None
        except ValueError as exc:
            msg = f"--compare {spec!r}: {field_name} must be a whole number, not {value!r}"
            raise ProfileError(msg) from exc
    if field_name in ("reranker", "quantization", "model") and value in ("", "off", "none"):
        return None
    return value


def make_embedder(setup: Setup, **options: Any) -> Embedder:
    """The setup's embedder (resolved, not yet loaded). ``quantization`` picks the packed
    ``NAME.QUANT.gguf`` in lokal's model cache (with ``backend="onnx"`` the pack
    ``NAME.onnx-QUANT``); ``options`` go to :class:`Embedder`
    (``batch_size``, ``n_threads``)."""
    model, backend = setup.model, setup.backend
    if setup.quantization:
        if backend == models.ST:
            msg = f"quant={setup.quantization} needs the GGUF backend, not {backend}"
            raise ProfileError(msg)
        name = model or models.DEFAULT_MODEL
        if name.lower().endswith(".gguf") or Path(name).exists():
            msg = f"quant= picks a packed file by model name; give {name} without quant="
            raise ProfileError(msg)
        short = name.rsplit("/", 1)[-1]
        if backend == models.ONNX:
            from lokal import packing_onnx

            pack = packing_onnx.cached_path(short, setup.quantization)
            if not packing_onnx.is_pack(pack):
                msg = (
                    f"no ONNX {setup.quantization} pack of {short} in lokal's model cache "
                    f"({pack}); make it with: lokal models pack {name} --format onnx "
                    f"--quantize {setup.quantization}"
                )
                raise ModelNotFound(msg)
            model = str(pack)
        else:
            path = models.cached_gguf_path(short, setup.quantization)
            if not path.is_file():
                msg = (
                    f"no {setup.quantization} GGUF of {short} in lokal's model cache ({path}); "
                    f"get it with: {models.bring_command(name, setup.quantization)}"
                )
                raise ModelNotFound(msg)
            model, backend = str(path), models.GGUF
    return Embedder(
        model,
        backend=backend,
        query_prefix=setup.query_prefix,
        document_prefix=setup.document_prefix,
        dimensions=setup.dimensions,
        force_dimensions=True,
        **options,
    )


@dataclass(frozen=True)
class CorpusStats:
    """How a setup's corpus vectors were made (or found)."""

    texts: int
    tokens: int
    #: Texts longer than the model's context, cut before embedding.
    truncated: int
    context: int
    seconds: float
    #: "embedded" now, "cache" (an earlier run), or "index" (the evaluated index itself).
    source: str
    path: str


@dataclass
class SetupResult:
    """One setup's scores and what it cost."""

    setup: Setup
    model: str
    identity: dict[str, Any]
    metrics: dict[str, float]
    per_query: list[QueryScores]
    corpus: CorpusStats
    queries_truncated: int
    seconds: dict[str, float]
    rerank: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: Query id -> [(document, score)], best first, as retrieved (for run files).
    rankings: dict[str, list[tuple[str, float]]] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return self.setup.label

    def buckets(self) -> dict[str, int]:
        """Queries by where their first relevant document came."""
        out = {"top1": 0, "top2_5": 0, "top6_50": 0, "missing": 0}
        for q in self.per_query:
            r = q.first_relevant
            if r is None or r > 50:
                out["missing"] += 1
            elif r == 1:
                out["top1"] += 1
            elif r <= 5:
                out["top2_5"] += 1
            else:
                out["top6_50"] += 1
        return out

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "label": self.label,
            "setup": self.setup.to_dict(),
            "model": self.model,
            "identity": self.identity,
            "metrics": {k: round(v, 4) for k, v in self.metrics.items()},
            "first_relevant": self.buckets(),
            "truncated": {"documents": self.corpus.truncated, "queries": self.queries_truncated},
            "corpus": asdict(self.corpus),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "rerank": self.rerank,
            "notes": self.notes,
        }
        if per_query:
            data["per_query"] = [
                {"query": q.query_id, "first_relevant": q.first_relevant, **q.values}
                for q in self.per_query
            ]
        return data


def cache_dir() -> Path:
    return models.lokal_home() / "eval-cache"


def _emit(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def corpus_index(
    evalset: EvalSet, embedder: Embedder, progress: Progress | None = None
) -> tuple[Index, CorpusStats]:
    """An open index of ``evalset``'s units embedded by ``embedder``: the evaluated index
    itself when it records exactly this model, else the cached one (built when missing)."""
    identity = embedder.identity
    if evalset.index_path is not None:
        index = Index.open(evalset.index_path)  # once: its recorded model decides
        if index.identity.compare(identity) == "same":
            tokens = sum(u.tokens or 0 for u in index.get())
            stats = CorpusStats(
                len(evalset.units), tokens, 0, embedder.context_length, 0.0, "index",
                str(evalset.index_path),
            )  # fmt: skip
            return index, stats
        index.close()
    folder = cache_dir() / evalset.fingerprint()[:24]
    path = folder / f"{identity.key[:16]}-{identity.variant[:16]}.db"
    if path.is_file():
        # writable: a cache file made by an older lokal gets the migrations (its full-text
        # table rebuilt with today's tokenizer), so the cache never measures old search
        index = Index.open(path, identity, writable=True)
        done = index.settings.get("lokal_eval", {})
        if done.get("complete") and done.get("texts") == len(evalset.units):
            stats = CorpusStats(
                done["texts"], done["tokens"], done["truncated"], done["context"],
                done["seconds"], "cache", str(path),
            )  # fmt: skip
            return index, stats
        index.close()
    stats = _build(evalset, embedder, path, progress)
    return Index.open(path, identity), stats


def _build(
    evalset: EvalSet, embedder: Embedder, path: Path, progress: Progress | None
) -> CorpusStats:
    """Embed every unit into a new index file at ``path`` (built beside it, then swapped in:
    :class:`lokal.index.lifecycle.Build`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    build = lifecycle.Build(path)
    units = evalset.units
    tokens = truncated = 0
    start = time.perf_counter()
    stage = f"embedding {len(units)} texts ({embedder.profile.name})"
    try:
        index = build.open(embedder.identity)
        try:
            _emit(progress, stage, 0, len(units))
            for at in range(0, len(units), _BATCH):
                batch = units[at : at + _BATCH]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TruncationWarning)
                    result = embedder.embed_documents([u.text for u in batch])
                tokens += sum(min(n, embedder.context_length) for n in result.token_counts)
                truncated += len(result.truncated)
                index.upsert([Chunk(u.text, id=u.id) for u in batch], result.vectors)
                _emit(progress, stage, at + len(batch), len(units))
            seconds = time.perf_counter() - start
            record = {
                "complete": True,
                "texts": len(units),
                "tokens": tokens,
                "truncated": truncated,
                "context": embedder.context_length,
                "seconds": round(seconds, 3),
            }
            index.update_settings({"lokal_eval": record})
            build.swap(index)
        finally:
            index.close()
    finally:
        build.discard()  # nothing left once swapped in
    log.info("embedded %d texts into %s in %.1f s", len(units), path, seconds)
    return CorpusStats(
        len(units), tokens, truncated, embedder.context_length, seconds, "embedded", str(path)
    )


def _documents(hits: Sequence[Hit], owner: dict[str, str]) -> list[tuple[str, float]]:
    """Hits (chunks) to documents, each at the place of its best chunk."""
    out: dict[str, float] = {}
    for h in hits:
        doc = owner.get(h.id) or h.document or h.id
        if doc not in out:
            out[doc] = h.score
    return list(out.items())


def _retrieve(
    index: Index, setup: Setup, vector: Any, text: str, want: int, total: int
) -> list[Hit]:
    """At least ``want`` distinct documents' worth of hits (or all ``total`` chunks), searched
    as every other caller searches (hybrid: lokal.retrieval's default depth and fusion)."""
    fetch = min(want, total)
    while True:
        if setup.search == "text":
            hits: Sequence[Hit] = index.text_search(text, fetch)
            if len(hits) < fetch:  # every text that holds a word of the question
                return list(hits)
        else:
            hybrid = setup.search == "hybrid"
            hits = retrieval.search(index, vector, text, fetch, hybrid=hybrid)
        docs = {h.document or h.id for h in hits}
        if len(docs) >= want or fetch >= total:
            return list(hits)
        fetch = min(total, fetch * 4)


def run_setup(
    evalset: EvalSet,
    setup: Setup,
    embedder: Embedder,
    reranker: Any = None,
    progress: Progress | None = None,
) -> SetupResult:
    """Run one setup over the whole set and score it."""
    index, corpus = corpus_index(evalset, embedder, progress)
    owner = {u.id: u.document for u in evalset.units}
    texts = {u.id: u.text for u in evalset.units}
    qids = list(evalset.queries)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        q_result = embedder.embed_queries([evalset.queries[q] for q in qids])
    seconds = {"embed_corpus": corpus.seconds, "embed_queries": time.perf_counter() - start}
    search_s = rerank_s = 0.0
    rerank_cut = 0
    want = max(metrics.DEPTH, setup.candidates if reranker is not None else 0)
    scores: list[QueryScores] = []
    rankings: dict[str, list[tuple[str, float]]] = {}
    stage = f"searching {len(qids)} queries ({setup.label})"
    with index:
        total = len(index)
        for n, (qid, vector) in enumerate(zip(qids, q_result.vectors, strict=True)):
            t0 = time.perf_counter()
            hits = _retrieve(index, setup, vector, evalset.queries[qid], want, total)
            search_s += time.perf_counter() - t0
            if reranker is not None and hits:
                t0 = time.perf_counter()
                head = hits[: setup.candidates]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TruncationWarning)
                    docs = [texts.get(h.id, h.text) for h in head]
                    scored = reranker.score(
                        evalset.queries[qid], docs, max_document_tokens=setup.doc_tokens
                    )
                rerank_cut += len(scored.truncated)
                reranked = retrieval.rerank(head, scored.ranked())
                head = [replace(r.hit, score=r.score) for r in reranked]
                hits = head + list(hits[setup.candidates :])
                rerank_s += time.perf_counter() - t0
            ranked = _documents(hits, owner)[: metrics.DEPTH]
            rankings[qid] = ranked
            scores.append(metrics.score_query(qid, [d for d, _ in ranked], evalset.qrels[qid]))
            if n % 20 == 0 or n + 1 == len(qids):
                _emit(progress, stage, n + 1, len(qids))
    seconds.update(search=search_s)
    rerank_info = None
    if reranker is not None:
        seconds["rerank"] = rerank_s
        rerank_info = {
            "model": reranker.profile.name,
            "backend": reranker.backend_name,
            "candidates": setup.candidates,
            "doc_tokens": setup.doc_tokens,
            "truncated_pairs": rerank_cut,
        }
    return SetupResult(
        setup=setup,
        model=embedder.identity.describe(),
        identity=embedder.identity.to_dict(),
        metrics=metrics.mean(scores),
        per_query=scores,
        corpus=corpus,
        queries_truncated=len(q_result.truncated),
        seconds=seconds,
        rerank=rerank_info,
        notes=_notes(setup, embedder),
        rankings=rankings,
    )


def _notes(setup: Setup, embedder: Embedder) -> list[str]:
    notes = []
    profile = embedder.resolved.profile
    if setup.dimensions and setup.dimensions not in profile.matryoshka_dims:
        trained = list(profile.matryoshka_dims) or "none"
        notes.append(
            f"{profile.name} was not trained for {setup.dimensions} dimensions (Matryoshka "
            f"sizes: {trained}): its vectors were sliced anyway"
        )
    no_prefix = not profile.query_prefix and not profile.document_prefix
    if no_prefix and (setup.query_prefix == "" or setup.document_prefix == ""):
        notes.append(f"{profile.name} uses no prefixes: turning them off changes nothing")
    return notes


@dataclass
class Report:
    """Every setup's result on one evaluation set."""

    evalset: dict[str, Any]
    results: list[SetupResult]


def evaluate(evalset: EvalSet, setups: Sequence[Setup], progress: Progress | None = None) -> Report:
    """Run ``setups`` over ``evalset``. Every model and reranker is resolved before any loads,
    so a wrong name fails at once; a model shared by several setups loads once."""
    if not setups:
        msg = "no setups to evaluate"
        raise ProfileError(msg)
    embedders = [make_embedder(s) for s in setups]
    rerankers: dict[str, Any] = {}
    for s in setups:
        if s.reranker and s.reranker not in rerankers:
            from lokal.reranker import Reranker

            rerankers[s.reranker] = Reranker(s.reranker)
    results = [
        run_setup(evalset, s, e, rerankers.get(s.reranker or ""), progress)
        for s, e in zip(setups, embedders, strict=True)
    ]
    return Report(evalset.summary(), results)
