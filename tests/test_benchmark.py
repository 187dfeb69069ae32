"""lokal.benchmark's peak memory: the process's own, also in a child started by vfork+exec."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from lokal.benchmark import peak_rss_mb


def test_peak_rss_of_a_small_child_of_a_big_parent_is_the_childs() -> None:
    """ru_maxrss after vfork+exec carries the parent's high-water mark (Linux keeps the old
    mm's peak at exec, and a vforked child's old mm is the parent's): a 30 MB child of a
    300 MB parent reported 300 MB."""
    ballast = np.ones(300 * 2**20, dtype=np.uint8)  # touched: resident in this process
    assert peak_rss_mb() >= 300
    child = subprocess.run(
        [sys.executable, "-c", "from lokal.benchmark import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True,
        text=True,
        check=True,
    )
    del ballast
    assert float(child.stdout) < 150, child.stdout


def test_the_benchmark_scripts_use_the_same_measure() -> None:
    sys.path.insert(0, "benchmarks")
    try:
        import _machine
    finally:
        sys.path.remove("benchmarks")
    assert _machine.peak_rss_mb is peak_rss_mb
