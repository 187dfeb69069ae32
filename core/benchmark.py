"""How fast and how heavy a model is on this machine: ``lokal bench`` as a library.

Each model is measured in a fresh interpreter of its own (:func:`run_isolated`), so its peak
memory (``VmHWM``, see :func:`peak_rss_mb`) is its own and one model's imports (torch) do not
weigh on the next.
The child (``python -m lokal.benchmark SPEC``) loads the model, embeds a few texts to warm
up, then embeds the benchmark texts as documents and reports, as JSON lines on stdout:

- ``load_seconds``: from nothing to the first vector (imports and model load included);
- ``tokens_per_s`` (tokens the model read: its own tokenizer, each text counted up to the
  context) and ``texts_per_s`` over the timed embedding;
- ``peak_rss_mb``: the child's peak resident memory;
- ``load_avg``: the machine's 1-minute load before and after (a busy machine slows every row).

A reranker (``kind="reranker"``) ranks ``texts`` candidates for each of ``queries`` questions,
one call each: ``p50_ms`` per question, ``tokens_per_s`` over the pairs it read.

The texts are real prose from Python's own documentation (``pydoc_data.topics``, part of the
standard library): consecutive paragraphs joined to 600-1,000 characters, about the size of
a chunk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lokal import cpu
from lokal.errors import LokalError


@dataclass(frozen=True)
class BenchSpec:
    """One model to measure."""

    model: str | None = None
    backend: str = "auto"
    quantization: str | None = None
    texts: int = 400
    batch_size: int = 32
    threads: int | None = None
    #: "embedder", or "reranker": ``texts`` candidates ranked for each of ``queries`` questions
    kind: str = "embedder"
    queries: int = 5
    #: a reranker's cut of each candidate (``Reranker.score(max_document_tokens=...)``)
    max_document_tokens: int | None = None

    @property
    def label(self) -> str:
        name = self.model or "default"
        parts = [name]
        if self.backend != "auto":
            parts.append(self.backend)
        if self.quantization:
            parts.append(self.quantization)
        return " ".join(parts)


def bench_texts(n: int) -> list[str]:
    """``n`` passages of 600-1,000 characters from the standard library's documentation."""
    from pydoc_data.topics import topics

    out: list[str] = []
    for key in sorted(topics):
        current = ""
        for block in re.split(r"\n\s*\n", topics[key]):
            para = " ".join(block.split())
            if len(para.split()) < 8:
                continue
            current = f"{current} {para}".strip()
            if len(current) >= 600:
                out.append(current[:1000].rsplit(" ", 1)[0])
                current = ""
                if len(out) == n:
                    return out
    if len(out) < n:
        # fewer passages than asked: go round again (still real text)
        out = (out * (n // max(1, len(out)) + 1))[:n]
    return out


def peak_rss_mb() -> float:
    """This process's high-water resident memory in MiB: ``VmHWM`` from /proc on Linux.

    Not ``ru_maxrss``: a process started with vfork+exec (Python's subprocess, posix_spawn)
    inherits its parent's high-water mark there, so a small child of a big parent would report
    the parent's peak. ``ru_maxrss`` only where there is no /proc (macOS reports bytes).
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


#: Questions a reranker is timed on (about Python's documentation, which the candidates are).
RERANK_QUERIES = (
    "how does the for statement iterate over a sequence",
    "what happens when an exception is raised inside a try block",
    "how are default argument values evaluated in a function definition",
    "which methods make an object usable in a with statement",
    "how does Python look up names in nested scopes",
    "what does the yield expression do in a generator function",
    "how are strings formatted with f-string literals",
)


def measure_reranker(
    spec: BenchSpec, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """A reranker's latency: ``spec.texts`` candidates (passages of about a chunk) ranked for
    each of ``spec.queries`` questions, one call per question, after one untimed call."""
    from lokal.embedder import TruncationWarning
    from lokal.reranker import Reranker

    load_before = os.getloadavg()[0]
    texts = bench_texts(spec.texts)
    queries = [RERANK_QUERIES[i % len(RERANK_QUERIES)] for i in range(spec.queries)]
    start = time.perf_counter()
    reranker = Reranker(
        spec.model, backend=spec.backend, batch_size=spec.batch_size, n_threads=spec.threads
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        reranker.score(queries[0], texts[:2])
        load_seconds = time.perf_counter() - start
        reranker.score(queries[0], texts, max_document_tokens=spec.max_document_tokens)
        times, tokens = [], 0
        for i, query in enumerate(queries):
            t0 = time.perf_counter()
            result = reranker.score(query, texts, max_document_tokens=spec.max_document_tokens)
            times.append(time.perf_counter() - t0)
            most = reranker.context_length
            if spec.max_document_tokens is not None:
                special = reranker.backend.special_tokens
                most = min(most, result.query_tokens + spec.max_document_tokens + special)
            tokens += sum(min(n, most) for n in result.token_counts)
            if progress is not None:
                progress(i + 1, len(queries))
    times.sort()
    return {
        "label": spec.label,
        "kind": "reranker",
        "spec": asdict(spec),
        "model": reranker.resolved.name,
        "backend": reranker.backend.name,
        "quantization": reranker.backend.quantization,
        "candidates": len(texts),
        "max_document_tokens": spec.max_document_tokens,
        "queries": len(queries),
        "tokens": tokens,
        "p50_ms": round(1000 * times[len(times) // 2], 1),
        "max_ms": round(1000 * times[-1], 1),
        "tokens_per_s": round(tokens / sum(times), 1),
        "load_seconds": round(load_seconds, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def measure(spec: BenchSpec, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Measure ``spec`` in this process (use :func:`run_isolated` for a fair peak memory)."""
    if spec.kind == "reranker":
        return measure_reranker(spec, progress)
    from lokal.embedder import TruncationWarning
    from lokal.evaluation.runner import Setup, make_embedder

    load_before = os.getloadavg()[0]
    texts = bench_texts(spec.texts)
    start = time.perf_counter()
    setup = Setup(model=spec.model, backend=spec.backend, quantization=spec.quantization)
    embedder = make_embedder(setup, batch_size=spec.batch_size, n_threads=spec.threads)
    embedder.embed_documents(["warm up"])
    load_seconds = time.perf_counter() - start
    embedder.embed_documents(texts[:8])
    limit = embedder.context_length
    tokens = cut = 0
    start = time.perf_counter()
    step = max(1, spec.batch_size)
    for at in range(0, len(texts), step):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)
            result = embedder.embed_documents(texts[at : at + step])
        tokens += sum(min(n, limit) for n in result.token_counts)
        cut += len(result.truncated)
        if progress is not None:
            progress(min(at + step, len(texts)), len(texts))
    seconds = time.perf_counter() - start
    identity = embedder.identity
    return {
        "label": spec.label,
        "spec": asdict(spec),
        "model": identity.name,
        "backend": identity.backend,
        "quantization": identity.quantization,
        "dimension": identity.dimension,
        "location": embedder.resolved.location,
        "texts": len(texts),
        "tokens": tokens,
        "truncated": cut,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "texts_per_s": round(len(texts) / seconds, 2),
        "load_seconds": round(load_seconds, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
    }


#: Speed ratios closer to 1 than this are within a run's spread: either quantization will do.
SAME_SPEED = 1.05


def quantization_findings(
    results: list[dict[str, Any]], advice: cpu.Advice | None = None
) -> list[str]:
    """This CPU's advice (:func:`lokal.cpu.advice`) and, for each model measured at both
    q8_0 and f16 on the GGUF backend, which ran faster here, by how much, and whether that
    overrides the advice."""
    advice = advice or cpu.advice()
    lines = [str(advice)]
    by_model: dict[str, dict[str, float]] = {}
    for r in results:
        if r.get("backend") == "gguf" and r.get("quantization") in ("q8_0", "f16"):
            by_model.setdefault(r["model"], {})[r["quantization"]] = float(r["tokens_per_s"])
    for model, speeds in by_model.items():
        if len(speeds) == 2:
            fast, slow = sorted(speeds, key=lambda q: -speeds[q])
            ratio = speeds[fast] / speeds[slow]
            if ratio < SAME_SPEED:
                verdict = "within a run's spread: either will do"
            elif fast == advice.quantization:
                verdict = "as the instruction set suggests"
            else:
                verdict = f"not what the instruction set suggests: pack {fast} for this box"
            lines.append(
                f"measured: {model.rsplit('/', 1)[-1]} {fast} {speeds[fast]:,.0f} tokens/s, "
                f"{slow} {speeds[slow]:,.0f}: {fast} {ratio:.2f}x ({verdict})"
            )
    return lines


def backend_findings(results: list[dict[str, Any]], onnx_first: bool | None = None) -> list[str]:
    """For each model measured as an ONNX pack and as a GGUF: the faster of the two here, by
    how much, and whether ``backend="auto"`` (which takes an int8 pack first where
    :func:`lokal.cpu.prefers_onnx`) picks it on this CPU."""
    onnx_first = cpu.prefers_onnx() if onnx_first is None else onnx_first
    best: dict[str, dict[str, tuple[float, str]]] = {}
    for r in results:
        if r.get("backend") in ("onnx", "gguf") and r.get("kind", "embed") != "reranker":
            speed = (float(r["tokens_per_s"]), f"{r['backend']} {r['quantization']}")
            mine = best.setdefault(r["model"], {})
            mine[r["backend"]] = max(mine.get(r["backend"], speed), speed)
    lines = []
    for model, speeds in best.items():
        if len(speeds) < 2:
            continue
        (fast_speed, fast), (slow_speed, slow) = sorted(speeds.values(), reverse=True)
        ratio = fast_speed / slow_speed
        auto = "onnx" if onnx_first else "gguf"
        if ratio < SAME_SPEED:
            verdict = "within a run's spread: either will do"
        elif fast.startswith(auto):
            verdict = "backend='auto' takes it on this CPU"
        else:
            verdict = (
                f"backend='auto' does not take it on this CPU: pass backend='{fast.split()[0]}'"
            )
        lines.append(
            f"measured: {model.rsplit('/', 1)[-1]} {fast} {fast_speed:,.0f} tokens/s, {slow} "
            f"{slow_speed:,.0f}: {fast} {ratio:.2f}x ({verdict})"
        )
    return lines


class BenchError(LokalError):
    """A benchmark child failed; the message carries its last error line."""


def run_isolated(
    spec: BenchSpec, progress: Callable[[int, int], None] | None = None, timeout: float = 3600
) -> dict[str, Any]:
    """Measure ``spec`` in a fresh interpreter; ``progress(done, total)`` as it goes."""
    cmd = [sys.executable, "-m", "lokal.benchmark", json.dumps(asdict(spec))]
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    result: dict[str, Any] | None = None
    error: str | None = None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if "done" in event and progress is not None:
            progress(event["done"], event["total"])
        elif "result" in event:
            result = event["result"]
        elif "error" in event:
            error = event["error"]
        if time.monotonic() > deadline:
            proc.kill()
            break
    stderr = proc.stderr.read() if proc.stderr else ""
    code = proc.wait()
    if result is None:
        last = error or (stderr.strip().splitlines() or [f"exit code {code}"])[-1]
        msg = f"benchmark of {spec.label} failed: {last}"
        raise BenchError(msg)
    return result


def _child(argv: list[str]) -> int:
    spec = BenchSpec(**json.loads(argv[0]))

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    try:
        result = measure(spec, lambda done, total: emit({"done": done, "total": total}))
    except LokalError as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
