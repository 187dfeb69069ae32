"""Temporary files named after the process that writes them.

A half-written index (``lokal.index.lifecycle``) or model download (``lokal.pull``) lives under
a name that carries its writer's process id, ``PREFIX<pid>-<random>...``, and is renamed into
place only when complete. After a crash such a file stays behind; the next writer removes the
ones whose process is gone (and leaves a live writer's alone).
"""

from __future__ import annotations

import os
import uuid

__all__ = ["name", "writer_gone"]


def name(prefix: str, suffix: str = "") -> str:
    """A fresh temporary name for this process: ``PREFIX<pid>-<8 hex>SUFFIX``."""
    return f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def writer_gone(file_name: str, prefix: str) -> bool:
    """Whether ``file_name`` (made by :func:`name` with ``prefix``) belongs to a process that no
    longer runs. A name without a process id is not ours: never reported as gone."""
    if not file_name.startswith(prefix):
        return False
    pid = file_name[len(prefix) :].split("-", 1)[0]
    return pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
