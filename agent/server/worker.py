"""The model workers of ``lokal serve``: threads that own the model calls and batch requests.

HTTP handlers never run a model on the event loop. They hand a job to :class:`ModelWorker` and
await its future. A worker thread takes the job at the head of the queue and every embedding
job waiting behind it, up to ``max_batch`` texts, and embeds them in one model call per
(embedder, query-or-document) group; each request then gets its own slice of the result, with
its own truncation records. Nothing waits on purpose to fill a batch: while the model is busy,
requests pile up, and the next call takes them all. Reranking jobs run one call each, in order.

With several workers (``lokal serve --workers``, for a GGUF model loaded with as many llama.cpp
contexts), calls run side by side, each on its share of the CPU threads. On a small machine
that also runs the event loop and the clients this keeps the CPUs busier than one call on all
threads: llama.cpp's threads meet at a barrier after every operation, so one of them put off
the CPU by the event loop stalls the others, while independent single-threaded calls only
slow down.

:class:`Stats` counts requests and model calls, so batching can be seen (``GET /v1/status``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from lokal.embedder import Embedder, EmbedResult, Truncated
from lokal.errors import TextTooLong

log = logging.getLogger(__name__)

Kind = Literal["query", "document"]


class Busy(Exception):
    """The worker's queue is full (too many texts waiting), or it is shutting down."""


class Stats:
    """Counters of one server process, safe to bump from the event loop and the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[int] = Counter()
        self.embed_jobs = 0
        self.embed_calls = 0
        self.texts = 0
        self.largest_batch = 0
        self.rerank_jobs = 0
        self.rerank_calls = 0

    def request(self, endpoint: str) -> None:
        with self._lock:
            self.requests[endpoint] += 1

    def error(self, status: int) -> None:
        with self._lock:
            self.errors[status] += 1

    def embed_call(self, jobs: int, texts: int) -> None:
        with self._lock:
            self.embed_jobs += jobs
            self.embed_calls += 1
            self.texts += texts
            self.largest_batch = max(self.largest_batch, texts)

    def rerank_call(self) -> None:
        with self._lock:
            self.rerank_jobs += 1
            self.rerank_calls += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "uptime_s": round(time.monotonic() - self.started, 3),
                "requests": sum(self.requests.values()),
                "requests_by_endpoint": dict(self.requests),
                "errors_by_status": {str(k): v for k, v in sorted(self.errors.items())},
                # embedding requests handed to the model, and the model calls that served them
                "embed_requests": self.embed_jobs,
                "embed_model_calls": self.embed_calls,
                "texts_embedded": self.texts,
                "largest_batch": self.largest_batch,
                "rerank_requests": self.rerank_jobs,
                "rerank_model_calls": self.rerank_calls,
            }


@dataclass(eq=False)
class _EmbedJob:
    embedder: Embedder
    kind: Kind
    texts: list[str]
    refuse_long: bool
    future: Future[EmbedResult] = field(default_factory=Future)

    @property
    def size(self) -> int:
        return max(1, len(self.texts))


@dataclass(eq=False)
class _RerankJob:
    reranker: Any  # lokal.Reranker (imported lazily: it is optional here)
    query: str
    documents: list[str]
    max_document_tokens: int | None = None
    future: Future[Any] = field(default_factory=Future)

    @property
    def size(self) -> int:
        return max(1, len(self.documents))


class ModelWorker:
    """One thread that runs every model call of the server, batching what is waiting.

    Args:
        stats: where calls are counted.
        max_batch: most texts one embedding call takes (a larger request runs alone).
        max_pending: most texts (and documents) waiting; beyond that :meth:`embed` and
            :meth:`rerank` raise :class:`Busy` rather than queue without bound.
        workers: threads taking model calls off the queue. More than one pays only with
            models that decode several calls at once (``Embedder(concurrency=N)`` on GGUF);
            calls to one model context still run one at a time.
    """

    def __init__(
        self, stats: Stats, *, max_batch: int = 64, max_pending: int = 8192, workers: int = 1
    ) -> None:
        if max_batch <= 0 or max_pending <= 0 or workers <= 0:
            msg = "max_batch, max_pending and workers must be positive"
            raise ValueError(msg)
        self.stats = stats
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._jobs: deque[_EmbedJob | _RerankJob] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"lokal-serve-model-{i}")
            for i in range(workers)
        ]

    @property
    def pending(self) -> int:
        """Texts and documents waiting for the model."""
        with self._cond:
            return self._pending

    @property
    def workers(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Finish what is queued, then stop the threads and join them."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def embed(
        self, embedder: Embedder, kind: Kind, texts: Sequence[str], *, refuse_long: bool
    ) -> Future[EmbedResult]:
        """Queue texts for ``embedder``'s query or document path. With ``refuse_long`` the
        future fails with :class:`~lokal.errors.TextTooLong` if any text exceeds the context
        (the other requests in the same call are not affected)."""
        job = _EmbedJob(embedder, kind, list(texts), refuse_long)
        self._submit(job)
        return job.future

    def rerank(
        self,
        reranker: Any,
        query: str,
        documents: Sequence[str],
        *,
        max_document_tokens: int | None = None,
    ) -> Future[Any]:
        """Queue one ``reranker.score(query, documents)`` call (a ``ScoreResult``); each
        document is scored on its first ``max_document_tokens`` tokens when given."""
        job = _RerankJob(reranker, query, list(documents), max_document_tokens)
        self._submit(job)
        return job.future

    # ---- the worker threads ------------------------------------------------------------------

    def _submit(self, job: _EmbedJob | _RerankJob) -> None:
        with self._cond:
            if self._closed:
                msg = "the server is shutting down"
                raise Busy(msg)
            if self._pending and self._pending + job.size > self.max_pending:
                msg = (
                    f"the server is busy: {self._pending} texts are waiting for the model "
                    f"(at most {self.max_pending}); retry shortly"
                )
                raise Busy(msg)
            self._pending += job.size
            self._jobs.append(job)
            self._cond.notify()

    def _take(self) -> list[_EmbedJob | _RerankJob] | None:
        """The next model call's jobs: the head of the queue, plus every embedding job right
        behind it while they fit in ``max_batch`` texts. None once closed and drained."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            first = self._jobs.popleft()
            batch: list[_EmbedJob | _RerankJob] = [first]
            if isinstance(first, _EmbedJob):
                size = first.size
                while self._jobs:
                    nxt = self._jobs[0]
                    if not isinstance(nxt, _EmbedJob) or size + nxt.size > self.max_batch:
                        break
                    batch.append(self._jobs.popleft())
                    size += nxt.size
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                # a job whose request went away (client disconnected) is skipped
                live = [job for job in batch if job.future.set_running_or_notify_cancel()]
                if live and isinstance(live[0], _RerankJob):
                    self._rerank(live[0])
                else:
                    groups: dict[tuple[int, str], list[_EmbedJob]] = {}
                    for job in live:
                        assert isinstance(job, _EmbedJob)
                        groups.setdefault((id(job.embedder), job.kind), []).append(job)
                    for jobs in groups.values():
                        self._embed(jobs)
            finally:
                with self._cond:
                    self._pending -= sum(job.size for job in batch)

    def _rerank(self, job: _RerankJob) -> None:
        try:
            result = job.reranker.score(
                job.query, job.documents, max_document_tokens=job.max_document_tokens
            )
        except BaseException as exc:  # handed to the request that asked, never lost
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)
        finally:
            self.stats.rerank_call()

    def _embed(self, jobs: list[_EmbedJob]) -> None:
        texts = [t for job in jobs for t in job.texts]
        embedder = jobs[0].embedder
        try:
            if jobs[0].kind == "query":
                result = embedder.embed_queries(texts)
            else:
                result = embedder.embed_documents(texts)
        except BaseException as exc:
            for job in jobs:
                job.future.set_exception(exc)
            return
        finally:
            self.stats.embed_call(len(jobs), len(texts))
        if result.truncated:
            log.info(
                "%d of %d texts were cut to the model's context", len(result.truncated), len(texts)
            )
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            cut = [
                Truncated(t.index - start, t.tokens, t.limit)
                for t in result.truncated
                if start <= t.index < end
            ]
            if job.refuse_long and cut:
                job.future.set_exception(TextTooLong(cut[0].index, cut[0].tokens, cut[0].limit))
            else:
                job.future.set_result(
                    EmbedResult(result.vectors[start:end], result.token_counts[start:end], cut)
                )
            start = end
