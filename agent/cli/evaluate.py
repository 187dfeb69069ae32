"""``lokal eval`` and ``lokal bench``: measure retrieval quality and model speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lokal.agent.cli.options import (
    backend_option,
    backends_option,
    budget_options,
    json_option,
    prefix_options,
    threads_option,
)
from lokal.agent.cli.output import ProgressBars, emit_json, friendly_errors, table


@click.command("eval")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="BEIR qrels split.")
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False, path_type=Path),
    help="For a questions file: a BEIR corpus.jsonl holding the expected ids.",
)
@click.option(
    "--index",
    "index_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="For a questions file: a lokal index; expected answers are source paths.",
)
@click.option("--model", help="Embedding model (default: the embedded default).")
@backend_option
@click.option("--quant", "quantization", help="A packed GGUF of the model: q8_0, f16, q4_0 ...")
@click.option("--dims", type=click.IntRange(1), help="Matryoshka output dimensions.")
@prefix_options
@click.option("--no-prefixes", is_flag=True, help="Embed without the model's prefixes.")
@click.option("--hybrid", is_flag=True, help="Fuse vector and full-text (BM25) rankings.")
@click.option(
    "--rerank",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[MODEL]",
    help="Rerank the first --candidates results with a cross-encoder (alone: $LOKAL_RERANKER, "
    "else the one reranker packed in the model cache).",
)
@budget_options("Results a reranker reorders")
@click.option(
    "--compare",
    "compares",
    multiple=True,
    metavar="SPEC",
    help="Another setup to run on the same data (repeatable): key=value pairs, comma-separated, "
    "changing the options above. Keys: model, backend, quant, dims, prefixes (on|off), "
    "query-prefix, document-prefix, search (vector|hybrid|text), rerank (MODEL|off), "
    "candidates, doc-tokens, label. The bare words hybrid, vector and text set the search.",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG bar chart of the metrics (needs lokal[eval]).",
)
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write qrels.txt and one TREC run file per setup here (for trec_eval or ranx).",
)
@click.option("--per-query", is_flag=True, help="With --json: every question's scores too.")
@json_option
def eval_cmd(
    source: Path,
    split: str,
    corpus: Path | None,
    index_path: Path | None,
    model: str | None,
    backend: str,
    quantization: str | None,
    dims: int | None,
    query_prefix: str | None,
    document_prefix: str | None,
    no_prefixes: bool,
    hybrid: bool,
    rerank: str | None,
    candidates: int,
    doc_tokens: int | None,
    compares: tuple[str, ...],
    chart: Path | None,
    runs_dir: Path | None,
    per_query: bool,
    as_json: bool,
) -> None:
    """Measure retrieval on questions whose answers you know: recall@1/5/10/50, MRR@10,
    nDCG@10 and how many texts were cut, with advice on what to change.

    SOURCE is a BEIR directory (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv), or a JSONL/CSV
    file of questions with expected answers ({"question": ..., "expected": id or [ids]}) given
    with --corpus corpus.jsonl or --index index.db (expected answers: source paths). Corpus
    vectors are cached per model in lokal's home: a second run or setup does not re-embed.

    \b
    Examples:
      python benchmarks/make_manpage_eval.py manpages --pages 1000
      lokal eval manpages
      lokal eval manpages --compare hybrid --compare text    # fused, and full text alone
      lokal eval manpages --compare quant=f16 --compare prefixes=off
      lokal eval manpages --compare rerank=bge-reranker-base.q8_0.gguf --chart eval.png
      lokal eval questions.jsonl --index /var/lib/lokal/index.db --compare hybrid --json
    """
    from lokal.evaluation import data, report, runner

    if no_prefixes:
        query_prefix = document_prefix = ""
    bars = ProgressBars()
    with friendly_errors():
        if rerank == "":
            from lokal.reranker import default_model

            rerank = default_model()
        base = runner.Setup(
            model=model,
            backend=backend,
            quantization=quantization,
            dimensions=dims,
            query_prefix=query_prefix,
            document_prefix=document_prefix,
            search="hybrid" if hybrid else "vector",
            reranker=rerank,
            candidates=candidates,
            doc_tokens=doc_tokens or None,
        )
        setups = [base, *(runner.parse_setup(spec, base) for spec in compares)]
        evalset = data.load(source, split=split, corpus=corpus, index=index_path)
        try:
            result = runner.evaluate(evalset, setups, progress=bars)
        finally:
            bars.close()
        written = [report.chart(result, chart)] if chart else []
        if runs_dir is not None:
            written += report.write_runs(result, evalset.qrels, runs_dir)
    if as_json:
        emit_json(report.as_dict(result, per_query=per_query))
        return
    s = evalset.summary()
    click.echo(
        f"{s['name']}: {s['queries']} questions, {s['documents']} documents ({s['texts']} texts)"
        + (
            f"; {s['unjudged_queries']} questions without a relevant document left out"
            if s["unjudged_queries"]
            else ""
        )
    )
    headers, rows = report.table(result)
    table(rows, headers)
    click.echo("\nWhat the numbers suggest:")
    for line in report.advice(result):
        click.echo(f"  - {line}")
    for path in written:
        click.echo(f"wrote {path}", err=True)


@click.command("bench")
@click.argument("models_", nargs=-1, metavar="[MODEL]...")
@backends_option
@click.option(
    "-q",
    "--quant",
    "quants",
    multiple=True,
    help="Quantization(s) packed in the model cache (repeatable): GGUF q8_0, f16, q4_0 ...; "
    "ONNX int8, fp32 (with -b onnx).",
)
@click.option("--texts", type=click.IntRange(1), default=400, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--reranker",
    "rerankers",
    multiple=True,
    help="Measure this reranker too (repeatable): --candidates passages ranked per question.",
)
@budget_options("Passages a reranker ranks per question")
@threads_option
@json_option
def bench_cmd(
    models_: tuple[str, ...],
    backends: tuple[str, ...],
    quants: tuple[str, ...],
    texts: int,
    batch_size: int,
    rerankers: tuple[str, ...],
    candidates: int,
    doc_tokens: int | None,
    threads: int | None,
    as_json: bool,
) -> None:
    """Speed and weight of models on this machine: tokens/s, texts/s, load time and peak
    memory, each model measured in a fresh process of its own, on real prose (passages of
    Python's documentation, about a chunk each).

    With no MODEL, the embedded default. Every MODEL runs on every --backend; on the GGUF
    backend, once per --quant.

    \b
    Examples:
      lokal bench                                          # the default model as auto picks it
      lokal bench all-MiniLM-L6-v2 -b sentence-transformers -b gguf -q q8_0 -q q4_0
      lokal bench all-MiniLM-L6-v2 -b gguf -b onnx -q q8_0 -q int8   # which auto should take
      lokal bench /srv/models/bge-small.q8_0.gguf --texts 1000 --json
      lokal bench --reranker bge-reranker-base.q8_0.gguf --candidates 20 --doc-tokens 256
    """
    from lokal.benchmark import BenchSpec, backend_findings, quantization_findings, run_isolated
    from lokal.packing_onnx import QUANTIZATIONS as ONNX_QUANTS

    specs = [
        BenchSpec(
            r, "auto", None, candidates, batch_size, threads, "reranker", 5, doc_tokens or None
        )
        for r in rerankers
    ]
    for m in models_ or (() if rerankers else (None,)):
        for b in backends or ("auto",):
            mine = [q for q in quants if (q in ONNX_QUANTS) == (b == "onnx")]
            if b == "sentence-transformers" or not mine:
                specs.append(BenchSpec(m, b, None, texts, batch_size, threads))
            else:
                engine = "onnx" if b == "onnx" else "gguf"
                specs.extend(BenchSpec(m, engine, q, texts, batch_size, threads) for q in mine)
    bars = ProgressBars()
    results = []
    with friendly_errors():
        try:
            for spec in specs:

                def progress(done: int, total: int, label: str = spec.label) -> None:
                    bars(label, done, total)

                results.append(run_isolated(spec, progress))
        finally:
            bars.close()
    if as_json:
        emit_json(results)
        return
    _reranker_table([r for r in results if r.get("kind") == "reranker"])
    results = [r for r in results if r.get("kind") != "reranker"]
    if not results:
        return
    table(
        [
            [
                r["model"].rsplit("/", 1)[-1],
                r["backend"],
                r["quantization"],
                str(r["dimension"]),
                f"{r['load_seconds']:.1f}",
                f"{r['tokens_per_s']:,.0f}",
                f"{r['texts_per_s']:.1f}",
                f"{r['peak_rss_mb']:,.0f}",
                f"{r['load_avg'][0]:.1f}/{r['load_avg'][1]:.1f}",
            ]
            for r in results
        ],
        ["model", "backend", "quant", "dim", "load s", "tokens/s", "texts/s", "peak MB", "load"],
    )
    click.echo(
        f"{results[0]['texts']} texts, {results[0]['tokens']:,} tokens for the first model; "
        "load = the machine's 1-minute load average before/after (busy machines measure slower)",
        err=True,
    )
    for line in quantization_findings(results) + backend_findings(results):
        click.echo(line)


def _reranker_table(results: list[dict[str, Any]]) -> None:
    if not results:
        return
    table(
        [
            [
                r["model"].rsplit("/", 1)[-1],
                r["backend"],
                r["quantization"],
                str(r["candidates"]),
                str(r["max_document_tokens"] or "-"),
                f"{r['load_seconds']:.1f}",
                f"{r['p50_ms']:,.0f}",
                f"{r['tokens_per_s']:,.0f}",
                f"{r['peak_rss_mb']:,.0f}",
                f"{r['load_avg'][0]:.1f}/{r['load_avg'][1]:.1f}",
            ]
            for r in results
        ],
        [
            "reranker",
            "backend",
            "quant",
            "candidates",
            "doc tokens",
            "load s",
            "p50 ms/query",
            "tokens/s",
            "peak MB",
            "load",
        ],
    )
