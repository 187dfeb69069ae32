"""lokal eval and lokal bench: metrics against hand-computed cases and ranx, evaluation sets and
their errors, and the real CLI on a set generated from this machine's manual pages."""

from __future__ import annotations

import json
import math
import random
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lokal.embedder import Embedder, TruncationWarning
from lokal.errors import EvalDataError, ModelNotFound, ProfileError
from lokal.evaluation import data, metrics, runner
from lokal.evaluation.metrics import ndcg, ranking, recall, reciprocal_rank, score_query
from lokal.index import Chunk, Index

from .conftest import build_cross_encoder, paragraphs

LOKAL = str(Path(sys.executable).parent / "lokal")


def lokal(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [LOKAL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lokal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


# ---- metrics: hand-computed -------------------------------------------------------------------


def test_one_relevant_document_at_rank_three() -> None:
    ranked = ["x", "y", "a", "z"]
    qrels = {"a": 1}
    assert recall(ranked, qrels, 1) == 0.0
    assert recall(ranked, qrels, 5) == 1.0
    assert reciprocal_rank(ranked, qrels, 10) == pytest.approx(1 / 3)
    assert ndcg(ranked, qrels, 10) == pytest.approx(1 / math.log2(4))  # 0.5


def test_several_relevant_documents() -> None:
    ranked = ["a", "x", "b", "y", "z", "w"]  # c, also relevant, never retrieved
    qrels = {"a": 1, "b": 1, "c": 1, "x": 0}
    assert recall(ranked, qrels, 1) == pytest.approx(1 / 3)
    assert recall(ranked, qrels, 5) == pytest.approx(2 / 3)
    assert reciprocal_rank(ranked, qrels, 10) == 1.0
    # DCG = 1 + 1/log2(4); ideal = 1 + 1/log2(3) + 1/log2(4)
    assert ndcg(ranked, qrels, 10) == pytest.approx(1.5 / (1.5 + 1 / math.log2(3)))
    assert ndcg(ranked, qrels, 10) == pytest.approx(0.703918, abs=1e-6)


def test_graded_relevance_in_ndcg() -> None:
    qrels = {"a": 2, "b": 1}
    ideal = 2 + 1 / math.log2(3)
    assert ndcg(["a", "b"], qrels, 10) == pytest.approx(1.0)
    assert ndcg(["b", "a"], qrels, 10) == pytest.approx((1 + 2 / math.log2(3)) / ideal)
    assert ndcg(["b", "a"], qrels, 10) == pytest.approx(0.859719, abs=1e-6)
    # the grade matters, not only relevance: a grade-2 document first beats a grade-1 one
    assert ndcg(["a", "x"], qrels, 10) > ndcg(["b", "x"], qrels, 10)
    # cut at k: the ideal is cut too
    assert ndcg(["x", "a"], qrels, 1) == 0.0
    assert ndcg(["a", "x"], qrels, 1) == pytest.approx(1.0)
    # negative judgments count as not relevant, not as a penalty
    assert ndcg(["n", "a"], {"a": 1, "n": -2}, 10) == pytest.approx(1 / math.log2(3))


def test_ties_follow_trec_eval_whatever_the_input_order() -> None:
    scores = {"a": 0.5, "b": 0.9, "c": 0.5, "d": 0.1}
    assert ranking(scores) == ["b", "c", "a", "d"]  # equal scores: the greater id first
    shuffled = dict(reversed(list(scores.items())))
    assert ranking(shuffled) == ranking(scores)
    assert reciprocal_rank(ranking(scores), {"a": 1}, 10) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranking(scores), {"c": 1}, 10) == pytest.approx(1 / 2)


def test_cut_offs_and_first_relevant() -> None:
    ranked = [f"d{i}" for i in range(60)]
    qrels = {"d10": 1}  # rank 11
    s = score_query("q", ranked, qrels)
    assert s.first_relevant == 11
    assert s.values["mrr@10"] == 0.0 and s.values["recall@10"] == 0.0
    assert s.values["recall@50"] == 1.0 and s.values["ndcg@10"] == 0.0
    assert score_query("q", ranked, {"zz": 1}).first_relevant is None
    assert recall(ranked, {"d0": 0}, 5) == 0.0  # nothing relevant: 0, not a division by zero
    with pytest.raises(ValueError, match="once"):
        recall(["a", "a"], {"a": 1}, 5)
    with pytest.raises(ValueError, match="positive"):
        recall(["a"], {"a": 1}, 0)


def test_mean_weighs_every_query_alike() -> None:
    a = score_query("a", ["x", "y"], {"x": 1})
    b = score_query("b", ["x", "y"], {"y": 1})
    m = metrics.mean([a, b])
    assert m["mrr@10"] == pytest.approx(0.75)
    assert m["recall@1"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no queries"):
        metrics.mean([])


# ---- metrics: against ranx, a reference implementation ----------------------------------------


def _ranx_per_query(qrels: dict[str, dict[str, int]], runs: dict[str, list[str]]) -> dict:
    """ranx's scores for rankings given best first (scores 1/rank: no ties to break)."""
    import warnings

    names = ["recall@1", "recall@5", "recall@10", "recall@50", "mrr@10", "ndcg@10"]
    with warnings.catch_warnings():
        # ranx's dependencies warn on import, and numba about its own casts the first time it
        # compiles ranx: none of it is ours
        warnings.simplefilter("ignore")
        from ranx import Qrels, Run, evaluate

        run = Run({q: {d: 1.0 / (i + 1) for i, d in enumerate(r)} for q, r in runs.items()})
        values = evaluate(Qrels(qrels), run, names, return_mean=False, make_comparable=True)
    order = sorted(qrels)  # ranx reports queries in sorted order
    return {name: dict(zip(order, values[name], strict=True)) for name in names}


def test_metrics_agree_with_ranx_on_random_graded_runs() -> None:
    rng = random.Random(7)
    pool = [f"doc{i:03d}" for i in range(120)]
    qrels: dict[str, dict[str, int]] = {}
    runs: dict[str, list[str]] = {}
    for q in range(300):
        qid = f"q{q:03d}"
        judged = rng.sample(pool, rng.randint(1, 8))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        qrels[qid][judged[0]] = rng.randint(1, 3)  # at least one relevant
        runs[qid] = rng.sample(pool, rng.randint(5, 70))
    reference = _ranx_per_query(qrels, runs)
    mine = {q: score_query(q, runs[q], qrels[q]).values for q in qrels}
    for name, by_query in reference.items():
        got = np.array([mine[q][name] for q in sorted(qrels)])
        want = np.array([by_query[q] for q in sorted(qrels)])
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=name)
        assert want.std() > 0, f"{name}: the random runs must not all score alike"


# ---- evaluation sets and their errors ---------------------------------------------------------


def _beir(root: Path, corpus: str, queries: str, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(corpus)
    (root / "queries.jsonl").write_text(queries)
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


CORPUS = (
    '{"_id": "d1", "title": "Pump", "text": "Hold the red button for five seconds."}\n'
    '{"_id": "d2", "title": "", "text": "Filters are changed every 500 hours."}\n'
    '{"_id": 3, "text": "The valve opens clockwise."}\n'
)
QUERIES = (
    '{"_id": "q1", "text": "how do I reset the pump?"}\n'
    '{"_id": "q2", "text": "when to change filters"}\n'
    '{"_id": "q3", "text": "an unjudged question"}\n'
)


def test_load_beir_reads_title_text_grades_and_header(tmp_path: Path) -> None:
    root = _beir(
        tmp_path / "set",
        CORPUS,
        QUERIES,
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t3\t0\nq2\td2\t1\nq3\td1\t0\n",
    )
    es = data.load(root)
    assert [u.text for u in es.units] == [
        "Pump Hold the red button for five seconds.",  # title + " " + text, as MTEB
        "Filters are changed every 500 hours.",
        "The valve opens clockwise.",
    ]
    assert es.qrels == {"q1": {"d1": 2, "3": 0}, "q2": {"d2": 1}}
    assert list(es.queries) == ["q1", "q2"] and es.unjudged == 1
    # TREC's four-column qrels read the same
    (root / "qrels" / "trec.tsv").write_text("q1 0 d1 2\nq2 0 d2 1\n")
    assert data.load(root, split="trec").qrels == {"q1": {"d1": 2}, "q2": {"d2": 1}}
    # the fingerprint follows the texts
    other = _beir(tmp_path / "other", CORPUS.replace("five", "six"), QUERIES, "q1\td1\t1\n")
    assert data.load(other).fingerprint() != es.fingerprint()


@pytest.mark.parametrize(
    ("corpus", "queries", "qrels", "where", "what"),
    [
        (CORPUS, QUERIES, "q1\td1\n", "test.tsv, line 1", "3 tab-separated fields"),
        (CORPUS, QUERIES, "q1\td1\t1\nq2\td2\thigh\n", "test.tsv, line 2", "integer"),
        (CORPUS, QUERIES, "q1\td1\t1\n\nq2\td9\t1\n", "test.tsv, line 3", "'d9' is not in"),
        (CORPUS, QUERIES, "q1\td1\t1\nq7\td1\t1\n", "test.tsv, line 2", "'q7' is not in"),
        (CORPUS, QUERIES, "q1\td1\t0\n", "test.tsv", "no query has a relevant document"),
        (CORPUS, QUERIES, "", "test.tsv", "empty"),
        (CORPUS, '{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": \n', "", "queries.jsonl, line 2", "not valid JSON"),  # noqa: E501
        (CORPUS, '{"_id": "q1"}\n', "", "queries.jsonl, line 1", "'text'"),
        (CORPUS + '{"_id": "d1", "text": "again"}\n', QUERIES, "", "corpus.jsonl, line 4", "also on line 1"),  # noqa: E501
        ("\n\n", QUERIES, "", "corpus.jsonl", "empty"),
        ('["d1", "text"]\n', QUERIES, "", "corpus.jsonl, line 1", "JSON object"),
    ],
)  # fmt: skip
def test_bad_beir_input_names_file_and_line(
    tmp_path: Path, corpus: str, queries: str, qrels: str, where: str, what: str
) -> None:
    root = _beir(tmp_path / "set", corpus, queries, qrels)
    with pytest.raises(EvalDataError) as err:
        data.load(root)
    assert where in str(err.value) and what in str(err.value)


def test_missing_files_and_splits(tmp_path: Path) -> None:
    root = _beir(tmp_path / "set", CORPUS, QUERIES, "q1\td1\t1\n")
    with pytest.raises(EvalDataError, match=r"no qrels/dev.tsv \(splits here: test\)"):
        data.load(root, split="dev")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(EvalDataError, match=r"no corpus.jsonl here"):
        data.load(root)
    with pytest.raises(EvalDataError, match=r"no such file or directory"):
        data.load(tmp_path / "nothing.jsonl", corpus=root / "corpus.jsonl")


def test_questions_files_jsonl_and_csv(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(CORPUS)
    q = tmp_path / "q.jsonl"
    q.write_text(
        '{"question": "reset the pump", "expected": "d1"}\n\n'
        '{"query": "filters or valves", "expected": ["d2", 3]}\n'
    )
    es = data.load(q, corpus=corpus)
    assert list(es.queries.values()) == ["reset the pump", "filters or valves"]
    assert list(es.qrels.values()) == [{"d1": 1}, {"d2": 1, "3": 1}]
    c = tmp_path / "q.csv"
    c.write_text('question,expected\n"reset, the pump",d1\nfilters or valves,d2|3\n')
    assert list(data.load(c, corpus=corpus).qrels.values()) == list(es.qrels.values())

    c.write_text("question,expected\nreset the pump,d1\nvalves,d8\n")
    with pytest.raises(EvalDataError, match=r"q.csv, line 3: no document has this id: 'd8'"):
        data.load(c, corpus=corpus)
    c.write_text("q,answer\nreset,d1\n")
    with pytest.raises(EvalDataError, match="line 1: the first line must name the columns"):
        data.load(c, corpus=corpus)
    q.write_text('{"question": "reset"}\n')
    with pytest.raises(EvalDataError, match=r"q.jsonl, line 1: no 'expected' field"):
        data.load(q, corpus=corpus)
    q.write_text("")
    with pytest.raises(EvalDataError, match="no questions"):
        data.load(q, corpus=corpus)
    with pytest.raises(EvalDataError, match=r"--corpus corpus.jsonl .* or --index"):
        data.load(q)


def test_compare_specs() -> None:
    base = runner.Setup(model="m", candidates=20)
    s = runner.parse_setup("quant=q4_0, hybrid", base)
    assert (s.model, s.quantization, s.search, s.label) == (
        "m",
        "q4_0",
        "hybrid",
        "quant=q4_0, hybrid",
    )
    s = runner.parse_setup("prefixes=off,dims=128,rerank=ce,label=small", base)
    assert (s.query_prefix, s.document_prefix, s.dimensions) == ("", "", 128)
    assert (s.reranker, s.candidates, s.label) == ("ce", 20, "small")
    assert runner.parse_setup("rerank=off", runner.Setup(reranker="ce")).reranker is None
    with pytest.raises(ProfileError, match=r"unknown key 'quantisation'.*known: backend"):
        runner.parse_setup("quantisation=q4_0", base)
    with pytest.raises(ProfileError, match="whole number"):
        runner.parse_setup("dims=many", base)
    with pytest.raises(ProfileError, match="search must be one of"):
        runner.parse_setup("search=fuzzy", base)
    with pytest.raises(ModelNotFound, match="lokal models pack all-MiniLM-L6-v2 --quantize q5_1"):
        runner.make_embedder(runner.Setup(quantization="q5_1"))


def test_bad_input_through_the_cli_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    root = _beir(tmp_path / "set", CORPUS, QUERIES, "q1\td1\t1\nq2 d2\n")
    proc = lokal("eval", str(root), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "EvalDataError" in proc.stderr and "test.tsv, line 2" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = lokal("eval", str(root), "--compare", "colour=blue", check=False)
    assert proc.returncode == 1 and "unknown key 'colour'" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- the real thing: manual pages, the default model, the CLI in a subprocess -----------------


def test_manpage_generator_writes_beir(manpages: Path) -> None:
    es = data.load(manpages)
    assert len(es.units) == 150 and 100 <= len(es.queries) <= 150
    by_id = {u.id: u for u in es.units}
    for qid, judged in es.qrels.items():
        question = es.queries[qid]
        for doc in judged:
            # the question is the page's description, which the document leaves out of its
            # NAME section; roff is gone from the text
            text = by_id[doc].text
            assert not re.search(r"\\f[BIRP(\[]|^\.(SH|TP|PP)\b|\bT[{}]", text, re.M), doc
    ls = next((u for u in es.units if u.id == "ls.1"), None)
    if ls is not None:
        assert "list directory contents" not in ls.text.split("\n")[0]
    assert question.strip() == question and len(question.split()) >= 2


@pytest.mark.slow
def test_lokal_eval_on_manpages_through_the_cli(
    manpages: Path, packed_gguf: Path, gguf_embedder: Embedder, tmp_path: Path
) -> None:
    runs, chart = tmp_path / "runs", tmp_path / "eval.png"
    args = ["eval", str(manpages), "--compare", "hybrid", "--json", "--per-query"]
    first = json.loads(lokal(*args, "--runs", str(runs), "--chart", str(chart)).stdout)
    base, hybrid = first["results"]
    assert base["corpus"]["source"] == "embedded" and hybrid["corpus"]["source"] == "cache"
    assert base["identity"]["backend"] == "gguf" and base["identity"]["quantization"] == "q8_0"
    n = first["evalset"]["queries"]
    for r in (base, hybrid):
        m = r["metrics"]
        assert m["recall@1"] <= m["recall@5"] <= m["recall@10"] <= m["recall@50"] <= 1
        assert 0 <= m["mrr@10"] <= 1 and 0 <= m["ndcg@10"] <= 1
        assert sum(r["first_relevant"].values()) == n == len(r["per_query"])
    # the model finds most pages from their description: far above chance (about 1/150)
    assert base["metrics"]["ndcg@10"] > 0.5
    # texts over the 256-token context were counted, independently of the CLI
    es = data.load(manpages)
    long = sum(n > 256 for n in gguf_embedder.count_tokens([u.text for u in es.units]))
    assert long > 0 and base["truncated"]["documents"] == long
    assert any("were cut" in line for line in first["advice"])
    # per-query numbers average to the reported means
    for name in metrics.NAMES:
        mean = sum(q[name] for q in base["per_query"]) / n
        assert mean == pytest.approx(base["metrics"][name], abs=1e-4)

    # the run file scores the same in ranx
    qrels = {}
    for line in (runs / "qrels.txt").read_text().splitlines():
        qid, _, doc, grade = line.split()
        qrels.setdefault(qid, {})[doc] = int(grade)
    ranked: dict[str, list[str]] = {}
    for line in (runs / "1-base.run").read_text().splitlines():
        qid, _, doc, rank, _score, _tag = line.split()
        assert int(rank) == len(ranked.setdefault(qid, [])) + 1
        ranked[qid].append(doc)
    reference = _ranx_per_query(qrels, {q: ranked.get(q, []) for q in qrels})
    for name, by_query in reference.items():
        assert sum(by_query.values()) / n == pytest.approx(base["metrics"][name], abs=1e-4)

    png = chart.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 300

    # again, as a table: nothing is re-embedded, and the numbers are the same
    table = lokal("eval", str(manpages), "--compare", "hybrid").stdout
    assert "nDCG@10" in table and "What the numbers suggest:" in table
    assert "hybrid vs base: nDCG@10" in table
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.split()}
    for label, r in (("base", base), ("hybrid", hybrid)):
        assert rows[label][-1] == "cache"
        shown = rows[label][-8:-2]  # R@1 R@5 R@10 R@50 MRR@10 nDCG@10
        assert shown == [f"{r['metrics'][name]:.3f}" for name in metrics.NAMES]


@pytest.mark.slow
def test_hybrid_is_at_least_as_good_as_either_of_its_parts(
    manpages: Path, gguf_embedder: Embedder
) -> None:
    """Issue 15: hybrid search (lokal.retrieval's fusion, as every caller gets it) ranks the
    small man-page set at least as well as its vector half and its full-text half alone."""
    es = data.load(manpages)
    base = runner.Setup(backend="gguf", label="vector")
    setups = [base, runner.parse_setup("text", base), runner.parse_setup("hybrid", base)]
    assert [s.search for s in setups] == ["vector", "text", "hybrid"]
    report = runner.evaluate(es, setups)
    m = {r.label: r.metrics for r in report.results}
    for name in ("ndcg@10", "mrr@10", "recall@5"):
        assert m["hybrid"][name] >= max(m["vector"][name], m["text"][name]), (name, m)
    assert m["text"]["ndcg@10"] > 0.3  # the full-text half is a real ranking, not empty


def test_a_cache_file_from_an_older_lokal_gets_the_new_full_text(
    tmp_path: Path, st_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eval cache never measures old search: a cached corpus index made before migration
    4 (full text without stemming) is migrated when it is used, not re-embedded."""
    from lokal.index import fulltext, schema

    texts = ["The pumps were running hot.", "Close the valve slowly.", "Coffee from eight."]
    es = data.EvalSet(
        "tiny", [data.Unit(f"d{i}", t, f"d{i}") for i, t in enumerate(texts)],
        {"q": "pump runs"}, {"q": {"d0": 1}},
    )  # fmt: skip
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        index, stats = runner.corpus_index(es, st_embedder)
        with index:
            assert stats.source == "embedded" and index.text_search("pump runs", k=3) == []
    index, stats = runner.corpus_index(es, st_embedder)
    with index:
        assert stats.source == "cache" and 4 in schema.applied(index._conn)
        assert fulltext.file_tokenizer(index._conn).startswith("porter")
        assert [h.id for h in index.text_search("pump runs", k=3)] == ["d0"]


@pytest.mark.slow
def test_questions_against_an_index_use_the_index_itself(
    gguf_embedder: Embedder, tmp_path: Path
) -> None:
    paras = paragraphs()[:40]
    docs = {f"/srv/docs/topic{i}.txt": paras[i * 4 : i * 4 + 4] for i in range(10)}
    db = tmp_path / "index.db"
    with Index.create(db, gguf_embedder.identity) as index:
        for uri, chunks in docs.items():
            vectors = gguf_embedder.embed_documents(chunks).vectors
            index.replace_document(
                uri, [Chunk(t, ordinal=i) for i, t in enumerate(chunks)], vectors
            )
    questions = tmp_path / "questions.jsonl"
    lines = [
        {"question": docs[f"/srv/docs/topic{i}.txt"][1][:120], "expected": f"docs/topic{i}.txt"}
        for i in range(10)
    ]
    questions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    es = data.load(questions, index=db)
    assert len(es.units) == 40 and es.documents == 10
    assert es.qrels["line-1"] == {"/srv/docs/topic0.txt": 1}  # matched by the path's end
    report = runner.evaluate(
        es,
        [
            runner.Setup(backend="gguf"),
            runner.Setup(backend="gguf", search="hybrid", label="hybrid"),
        ],
    )
    for r in report.results:
        assert r.corpus.source == "index"  # the index's own vectors: nothing embedded
        for ranked in r.rankings.values():
            assert len(ranked) == 10 == len({d for d, _ in ranked})  # chunks -> documents
        # each question is the start of one of its document's chunks
        assert r.metrics["recall@1"] >= 0.8
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"question": "q", "expected": "/srv/docs/topic0.txt"}\n'
        '{"question": "q", "expected": "nowhere.txt"}\n'
    )
    with pytest.raises(
        EvalDataError, match=r"bad.jsonl, line 2: no document in the index has this path"
    ):
        data.load(bad, index=db)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder from the real MiniLM encoder with a fresh head (no reranker weights ship
    on PyPI; MODELS.md): its scores mean nothing, but it is a real model to rerank with."""
    return build_cross_encoder(tmp_path_factory.mktemp("models") / "eval-cross-encoder")


@pytest.mark.slow
def test_reranker_reorders_only_the_candidates(
    manpages: Path, gguf_embedder: Embedder, cross_encoder_dir: Path
) -> None:
    from lokal.reranker import Reranker

    full = data.load(manpages)
    keep = list(full.queries)[:10]
    es = data.EvalSet(
        "subset", full.units, {q: full.queries[q] for q in keep}, {q: full.qrels[q] for q in keep}
    )
    plain = runner.Setup(backend="gguf")
    reranked = runner.Setup(
        backend="gguf", reranker=str(cross_encoder_dir), candidates=5, doc_tokens=24, label="rr"
    )
    report = runner.evaluate(es, [plain, reranked])
    base, rr = report.results
    assert rr.rerank is not None and (rr.rerank["candidates"], rr.rerank["doc_tokens"]) == (5, 24)
    assert rr.corpus.source == "cache"  # the second setup with the same model re-embeds nothing
    # the first five are the same documents, reordered by the cross-encoder; the rest stay
    changed = 0
    reranker = Reranker(str(cross_encoder_dir))
    texts = {u.id: u.text for u in es.units}
    for q in keep:
        before, after = [d for d, _ in base.rankings[q]], [d for d, _ in rr.rankings[q]]
        assert set(before[:5]) == set(after[:5]) and before[5:] == after[5:]
        changed += before[:5] != after[:5]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)  # man pages are long
            head = [texts[d] for d in before[:5]]
            scores = reranker.score(es.queries[q], head, max_document_tokens=24).scores
        assert after[:5] == [before[:5][i] for i in np.argsort(-scores, kind="stable")]
    assert changed > 0
    for k in ("recall@5", "recall@10", "recall@50"):
        assert rr.metrics[k] == base.metrics[k]


@pytest.mark.slow
def test_lokal_bench_measures_each_model_in_its_own_process(packed_gguf: Path) -> None:
    out = lokal(
        "bench", "all-MiniLM-L6-v2", "-b", "sentence-transformers", "-b", "gguf", "-q", "q8_0",
        "--texts", "24", "--json",
    )  # fmt: skip
    st, gg = json.loads(out.stdout)
    assert (st["backend"], gg["backend"], gg["quantization"]) == (
        "sentence-transformers",
        "gguf",
        "q8_0",
    )
    for r in (st, gg):
        assert r["texts"] == 24 and r["tokens"] > 24 * 50
        assert r["tokens_per_s"] > 0 and r["texts_per_s"] > 0 and r["load_seconds"] > 0
        assert r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"], rel=0.01)
    # measured apart: torch's weight is not in the GGUF row
    assert st["peak_rss_mb"] > 2 * gg["peak_rss_mb"] > 0
    bad = lokal("bench", str(packed_gguf.parent / "missing.gguf"), check=False)
    assert bad.returncode == 1 and "ModelNotFound" in bad.stderr and "Traceback" not in bad.stderr
