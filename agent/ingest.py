r"""One pass over directories: bring the index in step with the files on disk.

For each regular file under the roots: its size, mtime_ns, ctime_ns and inode are compared with
what the index recorded; only files that differ are read and hashed, and only files whose
content (sha256) differs are parsed, chunked and embedded. Each file's chunks are replaced in
one transaction. Files gone from disk are removed from the index — except under a root that
is itself missing (an unmounted disk is not an empty one). A file that cannot be read or
parsed is recorded with its reason and retried when it changes; it never stops the pass.

A document's URI is its absolute path as text; a file name that is not valid UTF-8 is indexed
too, under a URI that leads back to its bytes (:mod:`lokal.agent.filenames`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lokal.agent import parsers
from lokal.agent.filenames import inside, path_of, uri_of
from lokal.agent.scanner import DEFAULT_EXCLUDE, FileState, Patterns, admit, scan
from lokal.chunking import Chunker
from lokal.embedder import Embedder
from lokal.errors import LokalError
from lokal.index import Chunk, Index

log = logging.getLogger(__name__)

#: The index's own files are never indexed, wherever the index lives.
INDEX_SUFFIXES = (
    *("", "-wal", "-shm", "-journal", ".tmp", ".lock", ".status.json", ".status.json.tmp"),
    *(".rebuild", ".rebuild-wal", ".rebuild-shm", ".rebuild-journal"),
)


#: ``progress(files_done, files_total, chunks_embedded)`` during a pass (:meth:`Ingest.run`):
#: after each file and each batch of chunks embedded.
PassProgress = Callable[[int, int, int], None]

#: Files this large are named in the log when their reading starts.
_LARGE_FILE = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    chunk_tokens: int | None = None
    overlap: int = 32
    max_file_bytes: int = 20 * 1024 * 1024
    #: a file not parsed, chunked and embedded within this long is recorded as failed
    max_file_seconds: float = 600.0
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    include: tuple[str, ...] = ()
    follow_symlinks: bool = False
    #: chunks embedded together (across files) before they are written
    batch_chunks: int = 64


@dataclass
class Summary:
    seen: int = 0
    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0
    chunks: int = 0
    tokens: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: wall time of the pass
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ingest:
    """Keeps one index file in step with files, with one embedder."""

    def __init__(self, index: Index, embedder: Embedder, settings: Settings | None = None) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings or Settings()
        self.chunker = Chunker(
            embedder.count_tokens,
            embedder.context_length,
            prefix=embedder.profile.document_prefix,
            chunk_tokens=self.settings.chunk_tokens,
            overlap=self.settings.overlap,
        )
        self.chunk_settings = {**self.chunker.settings(), "parsers": parsers.VERSION}
        #: Recorded with each document written: a pass that re-chunks everything (new settings,
        #: or the first pass of a new index) and is killed half way does not redo, on restart,
        #: the documents it wrote (the index's own settings change only once a pass completes).
        self.chunking = hashlib.sha256(
            json.dumps(self.chunk_settings, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        self._skip = {Path(f"{index.path}{s}").resolve() for s in INDEX_SUFFIXES}
        self._pending: list[_Pending] = []
        #: chunks embedded in this pass, and what hears of each batch (a pass with progress)
        self._embedded = 0
        self._batch_done: Callable[[], None] | None = None
        #: Checked between files: when it returns True, a pass writes what it has and returns.
        self.should_stop: Callable[[], bool] = lambda: False

    def run(self, roots: Sequence[Path], progress: PassProgress | None = None) -> Summary:
        """One pass over ``roots``. With ``progress``, the files are listed first, so that
        ``progress(files_done, files_total, chunks_embedded)`` can say how far the pass is."""
        started = time.perf_counter()
        summary = self._run(roots, progress)
        summary.seconds = round(time.perf_counter() - started, 3)
        return summary

    def _run(self, roots: Sequence[Path], progress: PassProgress | None) -> Summary:
        summary = Summary()
        self._embedded = 0
        rechunk = self.index.settings != self.chunk_settings
        if rechunk and len(self.index):
            log.info("chunking settings changed: every file is re-chunked")
        known = {d.uri: d for d in self.index.documents()}
        present: set[str] = set()
        live_roots = []

        def problem(path: Path, reason: str) -> None:
            summary.problems.append({"path": uri_of(path), "reason": reason})

        listings: list[Iterable[FileState]] = []
        for root in roots:
            root = root.resolve()
            why = self.root_unavailable(root)
            if why:
                summary.missing_roots.append(uri_of(root))
                log.warning(
                    "root %s is not available (%s): its documents are kept", uri_of(root), why
                )
                continue
            live_roots.append(root)
            files = scan(root, self.settings, self._skip, problem)
            listings.append(files if progress is None else self._listed(files))
        total = sum(len(x) for x in listings if isinstance(x, list))
        if progress is not None:  # a large file's batches are heard of too, not only its end

            def batch_done() -> None:
                progress(summary.seen, total, self._embedded)

            self._batch_done = batch_done
        for listed in listings:
            for state in listed:
                if self.should_stop():
                    break
                summary.seen += 1
                uri = uri_of(state.path)
                present.add(uri)
                self._visit(state, known.get(uri), rechunk, summary)
                if progress is not None:
                    progress(summary.seen, total, self._embedded)
        self._flush(summary)
        self._batch_done = None
        if progress is not None and not self.should_stop():
            progress(summary.seen, total, self._embedded)
        if self.should_stop():
            summary.interrupted = True
            return summary  # the next pass finishes the work: nothing is removed on a partial scan
        for uri in known:
            under_root = any(inside(uri, uri_of(r)) for r in live_roots)
            if under_root and uri not in present:
                self.index.delete_document(uri)
                summary.removed += 1
        if rechunk:
            self.index.update_settings(self.chunk_settings)
        return summary

    def _listed(self, listing: Iterable[FileState]) -> list[FileState]:
        """The files of a root, listed before any is read (a stop request ends the listing)."""
        states = []
        for state in listing:
            if self.should_stop():
                break
            states.append(state)
        return states

    @property
    def skipped_paths(self) -> set[Path]:
        """The index's own files (never indexed)."""
        return self._skip

    def root_unavailable(self, root: Path) -> str | None:
        """Why ``root`` cannot be trusted to list its files, or None. A missing directory, or
        one that is empty while the index holds documents from it (what a failed mount leaves)
        never makes the agent drop those documents."""
        try:
            with os.scandir(root) as entries:
                empty = next(entries, None) is None
        except FileNotFoundError:
            return "missing"
        except NotADirectoryError:
            return "not a directory"
        except OSError as exc:
            return f"cannot list it: {exc.strerror or exc}"
        if empty and next(self.index.documents(under=uri_of(root)), None) is not None:
            return "empty, but documents from it are indexed (not mounted?)"
        return None

    def sync(self, paths: Iterable[Path], roots: Sequence[Path]) -> Summary:
        """Bring the given paths in step: files (changed, new or gone) and directories (every
        file under them, and documents under them whose files are gone). Paths outside the
        roots are ignored. What the watcher calls with the paths its events named."""
        summary = Summary()
        exclude, include = Patterns(self.settings.exclude), Patterns(self.settings.include)

        def problem(path: Path, reason: str) -> None:
            summary.problems.append({"path": uri_of(path), "reason": reason})

        for path in paths:
            root = next((r for r in roots if path.is_relative_to(r)), None)
            if root is None or self.root_unavailable(root):
                continue
            if self.should_stop():
                break
            try:
                lst: os.stat_result | None = path.lstat()
            except OSError:
                lst = None
            if lst is not None and stat.S_ISDIR(lst.st_mode) and path != root:
                present = set()
                for state in scan(root, self.settings, self._skip, problem, start=path):
                    if self.should_stop():
                        break
                    summary.seen += 1
                    present.add(uri_of(state.path))
                    self._visit(state, self.index.document(uri_of(state.path)), False, summary)
                self._flush(summary)
                if self.should_stop():
                    break  # a partial listing: nothing is removed from it
                gone = [
                    d.uri for d in self.index.documents(under=uri_of(path)) if d.uri not in present
                ]
            elif lst is not None and path != root:
                rel = path.relative_to(root).as_posix()
                parents = rel.split("/")[:-1]
                hidden = any(
                    exclude.match("/".join(parents[: i + 1]), True) for i in range(len(parents))
                )
                state = None
                if not hidden:
                    real = root.resolve()
                    state = admit(
                        path, rel, self.settings, self._skip, exclude, include, real, problem
                    )
                if state is not None:
                    summary.seen += 1
                    self._visit(state, self.index.document(uri_of(path)), False, summary)
                    gone = []
                else:  # now excluded, or no longer a regular file
                    gone = [uri_of(path)] if self.index.document(uri_of(path)) else []
            elif lst is None:
                gone = [d.uri for d in self.index.documents(under=uri_of(path))]
            else:  # the root itself: a full pass
                self._flush(summary)
                part = self.run([root])
                for name in ("seen", "indexed", "unchanged", "skipped", "failed", "removed"):
                    setattr(summary, name, getattr(summary, name) + getattr(part, name))
                summary.chunks += part.chunks
                summary.tokens += part.tokens
                summary.problems += part.problems
                summary.missing_roots += part.missing_roots
                continue
            for uri in gone:
                self.index.delete_document(uri)
                summary.removed += 1
        self._flush(summary)
        return summary

    def _visit(self, state: FileState, doc: Any, rechunk: bool, summary: Summary) -> None:
        if rechunk and doc is not None and doc.metadata.get("chunking") == self.chunking:
            rechunk = False  # written with these settings by a pass that did not complete
        same_stat = doc is not None and (doc.size, doc.mtime_ns, doc.ctime_ns, doc.inode) == (
            state.size,
            state.mtime_ns,
            state.ctime_ns,
            state.inode,
        )
        if same_stat and not rechunk:
            # indexed and untouched; or skipped/failed and not changed since (retried when it is)
            summary.unchanged += 1
            return
        uri = uri_of(state.path)
        if state.size > self.settings.max_file_bytes:
            self._record(
                uri,
                state,
                "skipped",
                f"larger than {self.settings.max_file_bytes} bytes (max_file_bytes)",
                None,
                summary,
            )
            return
        try:
            data = state.path.read_bytes()
        except OSError as exc:
            self._record(uri, state, "failed", f"cannot read: {exc.strerror or exc}", None, summary)
            return
        digest = content_hash(data)
        if (
            doc is not None
            and doc.content_hash == digest
            and not rechunk
            and (doc.status == "indexed")
        ):
            self.index.set_document(
                uri, status="indexed", content_hash=digest, **state.stat_fields()
            )
            summary.unchanged += 1
            return
        limit = self.settings.max_file_seconds
        deadline = time.monotonic() + limit
        if state.size >= _LARGE_FILE:
            log.info("large file: %s (%d bytes)", uri, state.size)

        def check() -> None:
            if self.should_stop():
                raise _Stopped
            if time.monotonic() > deadline:
                msg = f"not parsed and chunked within {limit:g} s (max_file_seconds)"
                raise parsers.TooSlow(msg)

        try:
            parsed = parsers.parse(state.path, data, max_seconds=limit, check=check)
            check()
            pieces = self.chunker.chunks(parsed.text, check)
        except _Stopped:
            return  # not recorded: the next pass reads it again
        except parsers.Unsupported as exc:
            self._record(uri, state, "skipped", str(exc), digest, summary)
            return
        except (parsers.TooSlow, parsers.TooLarge) as exc:
            self._record(uri, state, "failed", str(exc), digest, summary)
            return
        except Exception as exc:  # a parser bug on one file must not stop the agent
            log.exception("failed to parse %s", uri)
            self._record(uri, state, "failed", f"{type(exc).__name__}: {exc}", digest, summary)
            return
        meta = {"source": uri, "kind": parsed.kind}
        chunks = [
            Chunk(
                p.text,
                ordinal=p.ordinal,
                char_start=p.char_start,
                char_end=p.char_end,
                line_start=p.line_start,
                line_end=p.line_end,
                tokens=p.tokens,
                metadata=meta,
            )
            for p in pieces
        ]
        about: dict[str, Any] = {"kind": parsed.kind}
        if parsed.encoding:
            about["encoding"] = parsed.encoding
        if parsed.warning:
            about["warning"] = parsed.warning
            log.warning("%s: %s", uri, parsed.warning)
            summary.problems.append({"path": uri, "reason": parsed.warning})
        self._pending.append(_Pending(state, digest, chunks, deadline, about))
        if sum(len(p.chunks) for p in self._pending) >= self.settings.batch_chunks:
            self._flush(summary)

    def _record(
        self,
        uri: str,
        state: FileState,
        status: str,
        reason: str,
        digest: str | None,
        summary: Summary,
    ) -> None:
        self.index.set_document(
            uri, status=status, error=reason, content_hash=digest, **state.stat_fields()
        )
        summary.problems.append({"path": uri, "reason": reason})
        if status == "failed":
            summary.failed += 1
        else:
            summary.skipped += 1

    def _flush(self, summary: Summary) -> None:
        """Embed the pending files' chunks together, ``batch_chunks`` at a time, and write each
        file in its own transaction as soon as all its chunks are embedded. Between batches: a
        stop request ends the flush (files not complete are read again by the next pass), and
        a file still embedding past its deadline is recorded as failed."""
        pending, self._pending = self._pending, []
        queue = [(i, c.text) for i, p in enumerate(pending) for c in p.chunks]
        parts: list[list[Any]] = [[] for _ in pending]
        over: set[int] = set()
        written = 0
        step = max(1, self.settings.batch_chunks)
        pos = 0
        while True:
            while written < len(pending):  # write complete files, in order
                p = pending[written]
                if written not in over and len(parts[written]) < len(p.chunks):
                    break
                if written not in over:
                    self._write(p, parts[written], summary)
                parts[written] = []
                written += 1
            if pos >= len(queue) or self.should_stop():
                return
            batch = [(i, t) for i, t in queue[pos : pos + step] if i not in over]
            pos += step
            if batch:
                vectors = self.embedder.embed_documents([t for _, t in batch]).vectors
                self._embedded += len(batch)
                if self._batch_done is not None:
                    self._batch_done()
                for (i, _), v in zip(batch, vectors, strict=True):
                    parts[i].append(v)
            now = time.monotonic()
            for i in sorted({i for i, _ in batch}):
                p = pending[i]
                if len(parts[i]) < len(p.chunks) and now > p.deadline:
                    over.add(i)
                    reason = (
                        f"not embedded within {self.settings.max_file_seconds:g} s "
                        f"(max_file_seconds): {len(parts[i])} of {len(p.chunks)} chunks done"
                    )
                    self._record(uri_of(p.state.path), p.state, "failed", reason, p.digest, summary)

    def _write(self, p: _Pending, vectors: list[Any], summary: Summary) -> None:
        import numpy as np

        arr = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), self.index.dimension)
        self.index.replace_document(
            uri_of(p.state.path),
            p.chunks,
            arr,
            content_hash=p.digest,
            metadata={**p.about, "chunking": self.chunking},
            **p.state.stat_fields(),
        )
        summary.indexed += 1
        summary.chunks += len(p.chunks)
        summary.tokens += sum(c.tokens or 0 for c in p.chunks)


@dataclass
class _Pending:
    """A file parsed and chunked, waiting for its vectors."""

    state: FileState
    digest: str
    chunks: list[Chunk]
    deadline: float
    #: the document's record (documents.metadata): kind, encoding, warning
    about: dict[str, Any]


class _Stopped(Exception):
    """The agent was asked to stop while a file was being read."""


def content_hash(data: bytes) -> str:
    """The hash a document's content is recorded under (and compared by)."""
    return hashlib.sha256(data).hexdigest()


def check_index(index_path: Path) -> dict[str, Any]:
    """``lokal check``: the index's own check, and every indexed document still matching its
    file (read and hashed as the pipeline does). ``ok`` is false on any problem or stale file."""
    from lokal.index import Index

    with Index.open(index_path) as index:
        report = index.check()
        stale = []
        try:
            documents = list(index.documents())
        except LokalError as exc:  # a damaged documents table: one more problem
            documents = []
            report.problems.append(f"documents: {exc}")
        try:
            search_copy: dict[str, Any] | None = index.search_copy()
        except LokalError as exc:  # the damage is in the report already
            log.debug("search copy of a damaged index: %s", exc)
            search_copy = None
        for doc in documents:
            if doc.status != "indexed":
                continue
            try:
                data = path_of(doc.uri).read_bytes()
            except OSError as exc:
                stale.append({"path": doc.uri, "problem": f"cannot read: {exc.strerror}"})
                continue
            if content_hash(data) != doc.content_hash:
                stale.append({"path": doc.uri, "problem": "content changed since indexed"})
    return {
        "ok": not report.problems and not stale,
        "problems": report.problems,
        "stale": stale,
        "counts": report.counts,
        "search_copy": search_copy,
    }
