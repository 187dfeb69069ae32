"""The agent: keeps one index in step with directories, for months, with no one watching.

- Start-up reconcile: one :meth:`~lokal.agent.ingest.Ingest.run` pass (size, times and inode
  first, a hash only for candidates), so changes made while the agent was stopped are found.
- Watching: watchdog. Event handlers only record which paths are dirty; the main loop reads a
  file once it has been left alone for ``quiet_period`` seconds (or closed after writing), so a
  file that grows for a while is embedded once, with its final content. A periodic full rescan
  catches whatever events miss.
- Polling is chosen per root where inotify does not work (network and FUSE filesystems) or
  when the inotify watch limit is reached (the log line names the sysctl).
- A root that disappears (or turns up empty while its documents are indexed: a failed mount)
  is reported unavailable and its documents are kept; watching resumes when it comes back.
- A model that differs from the index's never mixes vectors: a new index is built beside the
  old one (``INDEX.rebuild``, resumable after a crash) and renamed over it when complete.
- A full disk stops nothing: it is logged and shown in the status (state ``disk full``), what
  is indexed stays, and the agent retries with a growing delay, resuming when space returns.
- An index file deleted or replaced under the agent (its inode, checked before writing and
  every few seconds) is noticed: the agent stops writing to it and builds the index again.
- SIGTERM/SIGINT: the current batch is written, then the agent exits 0.
- State for ``lokal agent status`` goes to ``INDEX.status.json`` (written atomically).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lokal.agent import access
from lokal.agent import pusher as pushing
from lokal.agent.config import AgentConfig
from lokal.agent.ingest import Ingest, Summary
from lokal.agent.status import atomic_write, status_path
from lokal.agent.watcher import Watcher
from lokal.agent.writer import open_writable, writer_lock

if TYPE_CHECKING:
    from typing import Protocol

    class ScanProgress(Protocol):
        """What shows the first scan's progress (``lokal.agent.cli.output.ProgressBars``)."""

        def __call__(self, stage: str, done: int, total: int, work: int | None = None) -> None: ...

        def close(self) -> None: ...

    from lokal.embedder import Embedder
    from lokal.index import Index

log = logging.getLogger("lokal.agent")

ROOT_CHECK_SECONDS = 2.0
#: Seconds between two looks at the index file's inode during a pass.
INDEX_CHECK_SECONDS = 1.0
#: The longest wait between two attempts to write to a full disk (test seam: the env var).
DISK_RETRY_MAX_ENV = "LOKAL_AGENT_DISK_RETRY_MAX"
DISK_RETRY_MAX = 60.0
#: Most dirty paths remembered before they are replaced by a rescan of the roots.
MAX_DIRTY = 50_000


class _IndexGone(Exception):
    """The index file was deleted or replaced under the agent."""


class Agent:
    """``lokal agent run``: see the module docstring."""

    def __init__(self, config: AgentConfig, *, progress: ScanProgress | None = None) -> None:
        self.config = config
        #: shown during the first scan (``lokal agent run`` passes a bar on a terminal, log
        #: lines every 10 s elsewhere); later scans log their summary only
        self.progress = progress
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._dirty: dict[Path, float] = {}  # path -> when it may be read
        self._roots: dict[Path, dict[str, Any]] = {
            r: {"available": False, "watch": None, "why": "not checked yet"} for r in config.roots
        }
        self._watcher = Watcher(config.polling, config.poll_interval, self._on_event, self._skipped)
        self._counts = {"embedded_files": 0, "removed": 0, "scans": 0}
        self._last_scan: dict[str, Any] | None = None
        self._state = "starting"
        self._status_written = 0.0
        self._status_text = ""
        self._problem: str | None = None
        self._index_checked = 0.0
        self.ingest: Ingest | None = None

    # ---- life cycle ------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()

    def run(self) -> int:
        cfg = self.config
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        access.prepare_directory(cfg.index.parent, cfg.group)
        from lokal.embedder import Embedder

        with writer_lock(cfg.index):
            log.info("lokal agent %d: index %s, roots %s", os.getpid(), cfg.index, _names(cfg))
            self._write_status(force=True)
            embedder = Embedder(
                None if cfg.model == "default" else cfg.model, n_threads=cfg.threads
            )
            log.info("model: %s", embedder.identity.describe())
            delay = 0.0
            while not self._stop.is_set():
                try:
                    self._run_index(embedder)
                    break
                except _IndexGone as exc:
                    log.warning("%s: stopped writing to it; building the index again", exc)
                    delay = 0.0
                except Exception as exc:
                    if not sqlite_disk_full(exc, cfg.index):
                        raise
                    delay = min(max(1.0, delay * 2), _disk_retry_max())
                    self._disk_full(exc, delay)
                finally:
                    self.ingest = None
            self._state = "stopped"
            self._write_status(force=True)
        self._watcher.stop()
        log.info("stopped")
        return 0

    def _run_index(self, embedder: Embedder) -> None:
        """Open (or create, or rebuild) the index and keep it in step until stopped."""
        index = self._open_index(embedder)
        if index is None:  # stopped during a rebuild
            return
        with index:
            access.share_with_group(self.config.index, self.config.group)
            ingest = Ingest(index, embedder, self.config.settings)
            ingest.should_stop = lambda: self._stop.is_set() or self._index_gone(quick=True)
            self.ingest = ingest
            # [sync], if any: pushes this index file in the background (its own read-only
            # handle), stopped and joined when this file is left (agent stop, or a rebuild)
            leave = threading.Event()
            pusher = pushing.start(self.config.index, self.config.sync, leave)
            try:
                self._loop()
            finally:
                if pusher is not None:
                    leave.set()
                    pusher.join()

    def _disk_full(self, exc: BaseException, delay: float) -> None:
        self._problem = f"the disk is full ({self.config.index.parent}): {exc}"
        self._state = "disk full"
        self._write_status(force=True)
        log.warning("%s. What is indexed is kept; trying again in %.0f s", self._problem, delay)
        self._stop.wait(delay)

    def _index_gone(self, *, quick: bool = False) -> bool:
        """Whether the index file is no longer the one the agent writes (quick: at most once
        every :data:`INDEX_CHECK_SECONDS`)."""
        now = time.monotonic()
        if self.ingest is None or (quick and now - self._index_checked < INDEX_CHECK_SECONDS):
            return False
        self._index_checked = now
        try:
            inode = os.stat(self.config.index).st_ino
        except FileNotFoundError:
            return True
        return inode != self.ingest.index.inode

    def _check_index(self) -> None:
        if self._stop.is_set() or not self._index_gone():
            return
        how = "replaced" if self.config.index.exists() else "deleted"
        msg = f"the index file {self.config.index} was {how} under the agent"
        raise _IndexGone(msg)

    def _open_index(self, embedder: Embedder) -> Index | None:
        return open_writable(self.config.index, embedder, lambda new: self._build(new, embedder))

    def _build(self, new: Index, embedder: Embedder) -> bool:
        """Fill a new index beside the old one (another model); whether it completed."""
        self._state = "rebuilding"
        self._write_status(force=True)
        ingest = Ingest(new, embedder, self.config.settings)
        ingest.should_stop = self._stop.is_set
        summary = ingest.run(self._available_roots(ingest))
        self._note_scan(summary)
        return not (summary.interrupted or self._stop.is_set())

    # ---- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        cfg = self.config
        assert self.ingest is not None
        self._state = "scanning"
        self._check_roots(initial=True)
        self._full_scan(progress=self.progress)
        self._check_index()
        if self._problem is not None:
            log.info("the disk has space again: resuming")
            self._problem = None
        next_rescan = time.monotonic() + cfg.rescan_interval
        next_root_check = time.monotonic() + ROOT_CHECK_SECONDS
        idle_reported = False
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_root_check:
                self._check_index()
                self._check_roots()
                next_root_check = now + ROOT_CHECK_SECONDS
            if cfg.rescan_interval and now >= next_rescan:
                log.info("periodic rescan")
                self._check_index()
                self._full_scan()
                next_rescan = time.monotonic() + cfg.rescan_interval
            due = self._take_due()
            if due:
                self._check_index()
                try:
                    self._sync(due)
                except Exception:
                    self.mark(due, delay=0.0)  # not lost: retried once the cause is gone
                    raise
                idle_reported = False
                continue
            if not idle_reported and not self._dirty:
                self._state = "watching"
                self._write_status(force=True)
                log.info("idle: %d documents, nothing pending", self._documents())
                idle_reported = True
            with self._wake:
                wait = min(next_root_check, next_rescan if cfg.rescan_interval else next_root_check)
                soonest = min(self._dirty.values(), default=wait)
                self._wake.wait(max(0.01, min(wait, soonest) - time.monotonic()))
            self._write_status()

    def _full_scan(self, *, progress: ScanProgress | None = None) -> None:
        assert self.ingest is not None
        roots = self._available_roots(self.ingest)
        self._state = "scanning"
        self._write_status(force=True)
        if progress is None:
            summary = self.ingest.run(roots)
        else:

            def tick(done: int, total: int, chunks: int) -> None:
                progress("first scan", done, total, chunks)

            try:
                summary = self.ingest.run(roots, progress=tick)
            finally:
                progress.close()
        self._note_scan(summary)

    def _note_scan(self, summary: Summary) -> None:
        self._counts["scans"] += 1
        self._counts["embedded_files"] += summary.indexed
        self._counts["removed"] += summary.removed
        self._last_scan = {"at": time.time(), **summary.to_dict()}
        self._last_scan["problems"] = summary.problems[:50]
        log.info(
            "scan: %d files seen, %d indexed, %d unchanged, %d skipped, %d failed, %d removed",
            summary.seen,
            summary.indexed,
            summary.unchanged,
            summary.skipped,
            summary.failed,
            summary.removed,
        )
        for p in summary.problems[:20]:
            log.info("  %s: %s", p["path"], p["reason"])

    def _sync(self, paths: list[Path]) -> None:
        assert self.ingest is not None
        live = [r for r, s in self._roots.items() if s["available"]]
        summary = self.ingest.sync(paths, live)
        self._counts["embedded_files"] += summary.indexed
        self._counts["removed"] += summary.removed
        if summary.indexed or summary.removed or summary.failed or summary.skipped:
            log.info(
                "changes: %d indexed (%d chunks), %d removed, %d skipped, %d failed",
                summary.indexed,
                summary.chunks,
                summary.removed,
                summary.skipped,
                summary.failed,
            )
        for p in summary.problems:
            log.info("  %s: %s", p["path"], p["reason"])
        self._write_status()

    # ---- roots and watches -----------------------------------------------------------------

    def _available_roots(self, ingest: Ingest) -> list[Path]:
        out = []
        for root in self.config.roots:
            why = ingest.root_unavailable(root)
            if why is None:
                out.append(root)
        return out

    def _check_roots(self, *, initial: bool = False) -> None:
        assert self.ingest is not None
        for root, state in self._roots.items():
            why = self.ingest.root_unavailable(root)
            if why is None and not state["available"]:
                state.update(available=True, why=None)
                self._watch(root)
                if not initial:
                    log.info("root %s is available again: watching it and catching up", root)
                    self.mark([root], delay=0.0)
            elif why is not None and (state["available"] or initial):
                state.update(available=False, why=why)
                self._unwatch(root)
                log.warning("root %s is not available (%s): its documents are kept", root, why)
                self._write_status(force=True)

    def _watch(self, root: Path) -> None:
        watch, kind, fstype = self._watcher.watch(root)
        self._roots[root].update(watch=watch, kind=kind, fstype=fstype)

    def _unwatch(self, root: Path) -> None:
        state = self._roots[root]
        if state.get("watch") is not None:
            self._watcher.unwatch(state["watch"])
            state["watch"] = None

    def _on_event(self, paths: list[Path], delay: float | None) -> None:
        self.mark(paths, delay=delay)

    def _skipped(self) -> set[Path]:
        ingest = self.ingest
        return ingest.skipped_paths if ingest is not None else set()

    def mark(self, paths: list[Path], *, delay: float | None = None) -> None:
        """Record dirty paths; each is read once nothing has touched it for the quiet period.
        Memory stays bounded in an event storm: past :data:`MAX_DIRTY` paths, the record
        becomes "rescan every root" (the same result, found by one pass)."""
        when = time.monotonic() + (self.config.quiet_period if delay is None else delay)
        with self._wake:
            for p in paths:
                self._dirty[p] = when
            if len(self._dirty) > MAX_DIRTY:
                log.warning("more than %d paths changed at once: rescanning instead", MAX_DIRTY)
                self._dirty = dict.fromkeys(self.config.roots, when)
            self._wake.notify_all()

    def _take_due(self) -> list[Path]:
        now = time.monotonic()
        with self._wake:
            due = sorted(p for p, t in self._dirty.items() if t <= now)
            for p in due:
                del self._dirty[p]
        return due

    # ---- status ----------------------------------------------------------------------------

    def _documents(self) -> int:
        assert self.ingest is not None
        return self.ingest.index.document_count()

    def _write_status(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_written < 1.0:
            return
        self._status_written = now
        data = {
            "pid": os.getpid(),
            "state": self._state,
            "updated": time.time(),
            "config": self.config.to_dict(),
            "model": self.ingest.embedder.identity.describe() if self.ingest else None,
            "pending": len(self._dirty),
            "roots": [
                {
                    "path": str(r),
                    "available": s["available"],
                    "why": s.get("why"),
                    "watch": s.get("kind") if s.get("watch") is not None else None,
                    "filesystem": s.get("fstype"),
                }
                for r, s in self._roots.items()
            ],
            "last_scan": self._last_scan,
            "problem": self._problem,
            **self._counts,
        }
        # written only when something changed: no steady trickle of writes on a flash card
        text = json.dumps({k: v for k, v in data.items() if k != "updated"}, sort_keys=True)
        if text != self._status_text:
            try:
                atomic_write(status_path(self.config.index), json.dumps(data, indent=1))
            except OSError as exc:  # a full disk, a read-only mount: the log still says it
                log.warning("cannot write %s: %s", status_path(self.config.index), exc)
                return
            self._status_text = text


def _disk_retry_max() -> float:
    try:
        return float(os.environ.get(DISK_RETRY_MAX_ENV, DISK_RETRY_MAX))
    except ValueError:
        return DISK_RETRY_MAX


def sqlite_disk_full(exc: BaseException, index: Path) -> bool:
    from lokal.index import sqlite

    return sqlite.disk_full(exc, index)


def _names(cfg: AgentConfig) -> str:
    return ", ".join(str(r) for r in cfg.roots)
