"""The watcher: watchdog observers over the roots, inotify or polling per root.

Polling is chosen where inotify does not work (network and FUSE filesystems: see
:data:`NO_INOTIFY`) or when the inotify watch limit is reached (the log line names the sysctl).
Event handlers only report which paths an event names; the daemon decides when to read them.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from lokal.errors import MissingDependency

try:
    from watchdog.events import FileSystemEventHandler
except ImportError as exc:
    raise MissingDependency(extra="agent", feature="the agent's watcher (watchdog)") from exc

log = logging.getLogger("lokal.agent")

#: Filesystems where inotify sees no changes made by other machines (or none at all).
NO_INOTIFY = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
    "lustre",
    "gpfs",
    "davfs",
    "ncpfs",
    "vboxsf",
    "virtiofs",
}
#: Test seams (documented in the tests): pretend a root is on this filesystem type, or that
#: adding an inotify watch hits the watch limit.
FSTYPE_ENV = "LOKAL_AGENT_TEST_FSTYPE"
WATCH_LIMIT_ENV = "LOKAL_AGENT_TEST_WATCH_LIMIT"

#: ``mark(paths, delay)``: paths an event named; delay 0 when the writer closed the file,
#: None for the quiet period.
Mark = Callable[[list[Path], float | None], None]


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` is on, from /proc/self/mounts ("" if unknown)."""
    forced = os.environ.get(FSTYPE_ENV)
    if forced:
        return forced
    best, kind = "", ""
    target = str(path.resolve())
    with suppress(OSError), open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1].replace("\\040", " ")
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind


def needs_polling(fstype: str) -> bool:
    return fstype in NO_INOTIFY or fstype.startswith("fuse")


class Watcher:
    """One inotify and one polling observer at most, shared by the roots they watch."""

    def __init__(
        self, polling: str, poll_interval: float, mark: Mark, skipped: Callable[[], set[Path]]
    ) -> None:
        self.polling = polling
        self.poll_interval = poll_interval
        self.mark = mark
        self.skipped = skipped
        self._observers: dict[str, Any] = {}

    def watch(self, root: Path) -> tuple[Any, str, str]:
        """Start watching ``root``: (its watch, "inotify" or "polling", its filesystem type)."""
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        fstype = filesystem_type(root)
        kind = "polling" if self.polling == "always" else "inotify"
        if self.polling == "auto" and needs_polling(fstype):
            kind = "polling"
            log.info("root %s is on %s, where inotify misses changes: polling it", root, fstype)
        handler = _Handler(self.mark, self.skipped)
        if kind == "inotify":
            try:
                if os.environ.get(WATCH_LIMIT_ENV):
                    raise OSError(errno.ENOSPC, "inotify watch limit reached")
                observer = self._observer("inotify", Observer)
                watch = observer.schedule(handler, str(root), recursive=True)
            except OSError as exc:
                if self.polling == "never" or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                kind = "polling"
                log.warning(
                    "inotify watch limit reached watching %s: polling it instead. Raise the "
                    "limit with `sysctl fs.inotify.max_user_watches=524288` (and a file in "
                    "/etc/sysctl.d/ to keep it)",
                    root,
                )
        if kind == "polling":
            observer = self._observer("polling", PollingObserver, timeout=self.poll_interval)
            watch = observer.schedule(handler, str(root), recursive=True)
        return watch, kind, fstype

    def _observer(self, kind: str, cls: Any, **kw: Any) -> Any:
        if kind not in self._observers:
            observer = cls(**kw)
            observer.daemon = True
            observer.start()
            self._observers[kind] = observer
        return self._observers[kind]

    def unwatch(self, watch: Any) -> None:
        for observer in self._observers.values():
            with suppress(KeyError, OSError):
                observer.unschedule(watch)

    def stop(self) -> None:
        for observer in self._observers.values():
            observer.stop()
        for observer in self._observers.values():
            with suppress(RuntimeError):
                observer.join(timeout=5)


class _Handler(FileSystemEventHandler):
    """watchdog handler: records the paths an event names, nothing more (the loop reads)."""

    def __init__(self, mark: Mark, skipped: Callable[[], set[Path]]) -> None:
        super().__init__()
        self.mark = mark
        self.skipped = skipped

    def dispatch(self, event: Any) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        if event.is_directory and kind == "modified":
            return  # a directory's own times changed: its entries have events of their own
        paths = [Path(os.fsdecode(event.src_path))]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(Path(os.fsdecode(dest)))
        skip = self.skipped()
        paths = [p for p in paths if p not in skip]
        if paths:
            # closed after writing: the writer is done, read it now
            self.mark(paths, 0.0 if kind == "closed" else None)
