"""What an evaluation says: a table, advice in words, a PNG chart and TREC run files.

The advice follows where each question's first relevant document came:

- in the top 50 but not the top 5: the retriever found it, a reranker can move it up;
- not in the top 50: a reranker never sees it; change the model, its prefixes or the chunking;
- texts cut at the model's context: only their beginning was searchable.

Setups are compared with the first one on nDCG@10, query by query: a difference within two
standard errors of the paired differences is called noise.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lokal.errors import MissingDependency
from lokal.evaluation import metrics

if TYPE_CHECKING:
    from lokal.evaluation.runner import Report, SetupResult

#: Share of questions from which a finding is worth a sentence.
NOTABLE = 0.05
HEADERS = ["setup", "model", "R@1", "R@5", "R@10", "R@50", "MRR@10", "nDCG@10", "cut", "corpus"]


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "0%"


def _setup_advice(r: SetupResult) -> list[str]:
    out = []
    n = len(r.per_query)
    b = r.buckets()
    if b["top6_50"] / n >= NOTABLE:
        share = f"{_pct(b['top6_50'], n)} of questions ({b['top6_50']} of {n})"
        if r.setup.reranker:
            out.append(
                f"{share} still have their first relevant document at ranks 6-50 after reranking"
            )
        else:
            out.append(
                f"{share} have the right document in the top 50 but not the top 5: "
                "a reranker should help (measure it with --compare rerank=MODEL)"
            )
    if b["missing"] / n >= NOTABLE:
        out.append(
            f"{_pct(b['missing'], n)} of questions ({b['missing']} of {n}) have no "
            "relevant document in the top 50: a reranker cannot bring these back; change the "
            "model, its prefixes or the chunking"
        )
    c = r.corpus
    if c.truncated:
        out.append(
            f"{c.truncated} of {c.texts} texts ({_pct(c.truncated, c.texts)}) were "
            f"longer than the model's {c.context}-token context and were cut, so only their "
            "beginning could be found: chunk them (lokal index does) or use a longer-context model"
        )
    if r.queries_truncated:
        out.append(f"{r.queries_truncated} questions were cut at the model's context")
    if r.rerank and r.rerank.get("truncated_pairs"):
        out.append(
            f"{r.rerank['truncated_pairs']} (question, text) pairs were cut to fit the "
            "reranker's context"
        )
    out.extend(r.notes)
    return out


def paired_difference(a: SetupResult, b: SetupResult, name: str) -> tuple[float, float]:
    """Mean of ``b - a`` over the same queries for metric ``name``, and its standard error."""
    mine = {q.query_id: q.values[name] for q in a.per_query}
    diffs = [q.values[name] - mine[q.query_id] for q in b.per_query]
    n = len(diffs)
    m = sum(diffs) / n
    if n < 2:
        return m, math.inf
    var = sum((d - m) ** 2 for d in diffs) / (n - 1)
    return m, math.sqrt(var / n)


def advice(report: Report) -> list[str]:
    """What the numbers suggest, in sentences (one finding shared by several setups is said
    once, naming them)."""
    results = report.results
    findings: dict[str, list[str]] = {}
    for r in results:
        for line in _setup_advice(r):
            findings.setdefault(line, []).append(r.label)
    out = []
    for line, labels in findings.items():
        if len(results) == 1:
            out.append(line)
        elif len(labels) == len(results):
            out.append(f"all setups: {line}")
        else:
            out.append(f"{', '.join(labels)}: {line}")
    if len(results) > 1:
        name = f"ndcg@{metrics.NDCG_K}"
        base = results[0]
        for r in results[1:]:
            diff, se = paired_difference(base, r, name)
            if abs(diff) <= 2 * se:
                verdict = "within noise"
            else:
                verdict = "better" if diff > 0 else "worse"
            out.append(
                f"{r.label} vs {base.label}: nDCG@10 {diff:+.3f} (±{2 * se:.3f}, 2 standard "
                f"errors over {len(r.per_query)} questions): {verdict}"
            )
        best = max(results, key=lambda r: r.metrics[name])
        out.append(f"best nDCG@10: {best.label} ({best.metrics[name]:.3f})")
    if not out:
        out.append("the right document is in the top 5 for nearly every question")
    return out


def as_dict(report: Report, per_query: bool = False) -> dict[str, Any]:
    """The whole report as JSON-ready data, advice included."""
    return {
        "evalset": report.evalset,
        "metrics": list(metrics.NAMES),
        "results": [r.to_dict(per_query) for r in report.results],
        "advice": advice(report),
    }


def short_model(identity: dict[str, object]) -> str:
    """``all-MiniLM-L6-v2 gguf q8_0 384d``: name, backend, quantization, dimension."""
    name = str(identity.get("name", "?")).rsplit("/", 1)[-1]
    backend = (
        "st" if identity.get("backend") == "sentence-transformers" else identity.get("backend")
    )
    return f"{name} {backend} {identity.get('quantization')} {identity.get('dimension')}d"


def table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for a terminal table, one row per setup."""
    rows = []
    for r in report.results:
        rows.append(
            [
                r.label,
                short_model(r.identity),
                *(f"{r.metrics[n]:.3f}" for n in metrics.NAMES),
                f"{r.corpus.truncated}/{r.corpus.texts}",
                r.corpus.source,
            ]
        )
    return HEADERS, rows


def chart(report: Report, path: Path) -> Path:
    """A grouped bar chart of every metric for every setup, as a PNG (needs matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependency(extra="eval", feature="a chart (--chart)") from exc
    names = list(metrics.NAMES)
    results = report.results
    fig = Figure(figsize=(max(7.0, 1.3 * len(names) + 0.4 * len(results)), 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        xs = [j + (i - (len(results) - 1) / 2) * width for j in range(len(names))]
        bars = ax.bar(xs, [r.metrics[n] for n in names], width, label=r.label)
        if len(results) <= 4:
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("mean over questions")
    queries = report.evalset.get("queries")
    ax.set_title(f"lokal eval: {report.evalset.get('name')} ({queries} questions)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _trec_id(text: str) -> str:
    """TREC files split on whitespace: ids that hold any are percent-encoded."""
    return quote(text, safe="") if re.search(r"\s", text) else text


def write_runs(report: Report, qrels: dict[str, dict[str, int]], directory: Path) -> list[Path]:
    """``qrels.txt`` and one TREC run file per setup (``N-label.run``), for trec_eval or ranx.

    Columns: query, Q0, document, rank, score, setup. The rank is lokal's order; trec_eval
    re-sorts by score and orders equal scores by document id.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "qrels.txt"]
    with written[0].open("w", encoding="utf-8") as fh:
        for qid, judged in qrels.items():
            for doc, grade in judged.items():
                fh.write(f"{_trec_id(qid)} 0 {_trec_id(doc)} {grade}\n")
    for n, r in enumerate(report.results, start=1):
        slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", r.label).strip("_")[:60] or "setup"
        path = directory / f"{n}-{slug}.run"
        tag = f"lokal-{n}"
        with path.open("w", encoding="utf-8") as fh:
            for qid, ranked in r.rankings.items():
                for rank, (doc, score) in enumerate(ranked, start=1):
                    fh.write(f"{_trec_id(qid)} Q0 {_trec_id(doc)} {rank} {score:.6f} {tag}\n")
        written.append(path)
    return written
