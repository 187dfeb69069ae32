"""lokal.retrieval (the one retrieve-then-rerank and open-with-the-recorded-model) and the
index handle the vector stores share."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lokal.embedder import Embedder
from lokal.errors import IndexReadOnly, ModelMismatch
from lokal.identity import ModelIdentity
from lokal.index import Chunk, Index, IndexHandle, open_indexes
from lokal.reranker import Ranked
from lokal.retrieval import (
    CANDIDATE_FACTOR,
    CANDIDATE_MIN,
    DOCUMENT_TOKENS,
    candidate_depth,
    open_recorded,
    retrieve,
)

TEXTS = [
    "Reset the pump: hold the red button for five seconds.",
    "The filter is changed every 500 operating hours.",
    "Error ERR-4711 means the water inlet is blocked.",
    "Pumps are painted blue at the factory.",
    "Store the manual in a dry place.",
]


def test_candidate_depth_is_one_rule() -> None:
    assert candidate_depth(1) == 20
    assert candidate_depth(10) == 20
    assert candidate_depth(5, 7) == 7
    assert candidate_depth(5, 2) == 5  # never fewer than k


def test_the_reranking_budget_is_one_number_everywhere() -> None:
    """The CLI states the budget in its help without importing numpy; each place agrees with
    lokal.retrieval's constants (docs/benchmarks.md, "Reranking budget")."""
    from lokal.agent.cli.evaluate import bench_cmd, eval_cmd
    from lokal.agent.cli.index import search_cmd
    from lokal.evaluation.runner import Setup
    from lokal.integrations.shared import RerankerSettings

    options = {c.name: {p.name: p for p in c.params} for c in (search_cmd, eval_cmd, bench_cmd)}
    search = options["search"]
    assert f"default: {DOCUMENT_TOKENS};" in (search["doc_tokens"].help or "")
    assert f"max({CANDIDATE_FACTOR}k, {CANDIDATE_MIN})" in (search["candidates"].help or "")
    for name in ("eval", "bench"):
        assert options[name]["doc_tokens"].default == DOCUMENT_TOKENS, name
        assert options[name]["candidates"].default == candidate_depth(10), name
    assert (Setup().candidates, Setup().doc_tokens) == (candidate_depth(10), DOCUMENT_TOKENS)
    assert RerankerSettings.model_fields["max_document_tokens"].default == DOCUMENT_TOKENS


@pytest.fixture
def index_file(tmp_path: Path, st_embedder: Embedder) -> Path:
    path = tmp_path / "index.db"
    with Index.create(path, st_embedder.identity) as index:
        index.upsert([Chunk(t, id=f"c{i}") for i, t in enumerate(TEXTS)],
                     st_embedder.embed_documents(TEXTS).vectors)  # fmt: skip
    return path


def test_open_recorded_and_retrieve(index_file: Path) -> None:
    index, embedder = open_recorded(index_file)
    with index:
        assert not index.writable
        plain = retrieve(index, "how do I reset the pump?", 2, embedder=embedder)
        assert [r.hit.id for r in plain][:1] == ["c0"] and len(plain) == 2
        assert all(r.rerank_score is None and r.score == r.hit.score for r in plain)
        hybrid = retrieve(index, "ERR-4711", 1, embedder=embedder, hybrid=True)
        assert hybrid[0].hit.id == "c2"
        filtered = retrieve(index, "pump", 5, embedder=embedder, filter={"missing": 1})
        assert filtered == []

        seen: list[int] = []

        def by_length(query: str, texts: list[str], top_n: int | None) -> list[Ranked]:
            seen.append(len(texts))
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            return [Ranked(i, float(-len(texts[i]))) for i in order][:top_n]

        reranked = retrieve(index, "pump", 2, embedder=embedder, reranker=by_length)
        assert seen == [len(TEXTS)]  # candidate_depth(2) = 20 > the 5 chunks there are
        shortest = min(TEXTS, key=len)
        assert reranked[0].hit.text == shortest and len(reranked) == 2
        assert reranked[0].rerank_score == -len(shortest) and reranked[0].retrieval_rank


def test_open_recorded_closes_the_file_when_the_model_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "external.db"
    Index.create(path, ModelIdentity.external("t", "T", "m", 4)).close()
    with pytest.raises(Exception, match="cannot load"):
        open_recorded(path)
    assert not [i for i in open_indexes() if i.path == path]


def test_open_indexes_lists_what_is_not_closed(tmp_path: Path) -> None:
    index = Index.create(tmp_path / "x.db", ModelIdentity.external("t", "T", "m", 4))
    assert index in open_indexes() and not index.closed
    index.close()
    assert index not in open_indexes() and index.closed


def test_handle_creates_race_free_and_upgrades_on_write(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    ident = ModelIdentity.external("t", "T", "m", 4)
    handles = [IndexHandle(path, lambda d: ident) for _ in range(4)]
    barrier = threading.Barrier(len(handles))
    errors: list[BaseException] = []

    def create(h: IndexHandle) -> None:
        barrier.wait()
        try:
            h.create(4)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    try:
        writer = handles[1].writer(4)
        assert writer is not None and writer.writable
        writer.upsert([Chunk("a", id="a")], np.ones((1, 4), dtype=np.float32))
        reader = handles[2].reader()
        assert reader is not None and len(reader) == 1  # every handle sees the one file
    finally:
        for h in handles:
            h.close()


def test_handle_checks_the_model_and_refuses_agent_files(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    ident = ModelIdentity.external("t", "T", "m", 4)
    Index.create(path, ident, managed_by="agent").close()
    other = IndexHandle(path, lambda d: ModelIdentity.external("t", "T", "other", d))
    with pytest.raises(ModelMismatch):
        other.reader()
    handle = IndexHandle(path, lambda d: ident, who="Tests")
    try:
        assert handle.reader() is not None
        with pytest.raises(IndexReadOnly, match="Tests may search it"):
            handle.writer(4)
    finally:
        handle.close()


def test_lokal_search_is_hybrid_unless_told_not_to_be(index_file: Path) -> None:
    """``lokal search`` (a real process) fuses vector and full text by default, exactly as
    ``retrieve(hybrid=True)``; ``--no-hybrid`` ranks by the vectors alone."""
    lokal = str(Path(sys.executable).parent / "lokal")

    def run(*flags: str) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [lokal, "search", "ERR-4711 pump", "--index", str(index_file), "-k", "3", "--json",
             *flags],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        found: list[dict[str, Any]] = json.loads(proc.stdout)
        return found

    index, embedder = open_recorded(index_file)
    with index:
        hybrid = retrieve(index, "ERR-4711 pump", 3, embedder=embedder, hybrid=True)
        vector = retrieve(index, "ERR-4711 pump", 3, embedder=embedder)
    # the test can tell them apart: fused scores (first in both lists: 1.0) are not cosines
    assert hybrid[0].score == 1.0 and vector[0].score < 0.99
    for flags, want in (((), hybrid), (("--hybrid",), hybrid), (("--no-hybrid",), vector)):
        got = run(*flags)
        assert [g["id"] for g in got] == [w.hit.id for w in want], flags
        assert [g["score"] for g in got] == pytest.approx([w.score for w in want], abs=1e-3)
