"""What the benchmark scripts read off the machine: its busy CPU, a process's peak memory, and
a wait for a quiet spell. Imported by the scripts in this directory (run as
``python benchmarks/NAME.py``, which puts this directory on the import path)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lokal.benchmark import peak_rss_mb

__all__ = ["machine_busy_s", "peak_rss_mb", "wait_quiet"]


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, max_noise: float) -> None:
    """Wait, at most max_wait s, for 3 s in a row in which other processes used <= max_noise
    cores (llama.cpp's spinning threads slow down several-fold when a core is taken)."""
    deadline, quiet = time.monotonic() + max_wait, 0
    while quiet < 3 and time.monotonic() < deadline:
        b0 = machine_busy_s()
        time.sleep(1)
        quiet = quiet + 1 if machine_busy_s() - b0 <= max_noise else 0
