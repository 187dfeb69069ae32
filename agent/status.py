"""What ``lokal agent status`` shows: the agent's last word (``INDEX.status.json``, written
atomically, even on a full disk) and the index's own counts; whether an agent is running (the
holder of ``INDEX.lock``)."""

from __future__ import annotations

import errno
import json
import os
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from lokal.agent.config import AgentConfig
from lokal.errors import LokalError


def status_path(index: Path) -> Path:
    return Path(f"{index}.status.json")


def atomic_write(path: Path, text: str) -> None:
    """Write a new file and rename it over ``path``; on a full disk, rewrite ``path`` in place
    (its own blocks are freed first: the status still gets out when the disk is full)."""
    tmp = Path(f"{path}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.exists():
            raise
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)


def agent_pid(index: Path) -> int | None:
    """The pid of the agent writing ``index``, or None when none is (its lock is free)."""
    import fcntl

    try:
        fd = os.open(f"{index}.lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_status(config: AgentConfig) -> dict[str, Any]:
    """What ``lokal agent status`` shows: the index's own counts, and the agent's last word."""
    from lokal.index import Index

    index = config.index
    try:
        saved = json.loads(status_path(index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    pid = agent_pid(index)
    out: dict[str, Any] = {
        "running": pid is not None,
        "pid": pid,
        "state": saved.get("state", "unknown") if pid is not None else "stopped",
        "index": str(index),
        "index_bytes": sum(
            os.path.getsize(f"{index}{s}") for s in ("", "-wal") if os.path.exists(f"{index}{s}")
        ),
        "model": saved.get("model"),
        "pending": saved.get("pending", 0) if pid is not None else 0,
        "problem": saved.get("problem") if pid is not None else None,
        "roots": saved.get("roots") or [{"path": str(r)} for r in config.roots],
        "last_scan": None,
        "documents": {},
        "chunks": 0,
        "problems": [],
        **{k: saved.get(k, 0) for k in ("embedded_files", "removed", "scans")},
    }
    scan = saved.get("last_scan")
    if scan:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(scan["at"]))
        out["last_scan"] = (
            f"{at}: {scan['seen']} files seen, {scan['indexed']} indexed, "
            f"{scan['unchanged']} unchanged, {scan['failed']} failed"
        )
    if index.exists():
        with Index.open(index) as ix:
            out["model"] = out["model"] or ix.identity.describe()
            out["chunks"] = len(ix)
            try:
                out["search_copy"] = ix.search_copy()
            except LokalError as exc:  # a damaged file: lokal check says what is wrong
                out["search_copy"] = None
                out["problems"].append({"path": str(index), "status": "index", "reason": str(exc)})
            for doc in ix.documents():
                out["documents"][doc.status] = out["documents"].get(doc.status, 0) + 1
                # failed and skipped files, and files indexed with a warning (bad bytes)
                reason = doc.error if doc.status != "indexed" else doc.metadata.get("warning")
                if reason and len(out["problems"]) < 100:
                    problem = {"path": doc.uri, "status": doc.status, "reason": reason}
                    out["problems"].append(problem)
    if config.sync is not None:
        from lokal.agent import pusher

        out["sync"] = pusher.read_status(index) or {
            "url": config.sync.url,
            "site": config.sync.site,
            "last_success": None,
            "last_error": None,
            "behind": None,
        }
    return out
