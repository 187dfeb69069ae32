"""What identifying a model by its files costs (issue 21): the profile of the bundled
all-MiniLM-L6-v2 copied under a meaningless name, with its model card (no hashing), without it
(the weights' sha256, first time), and again without it (the sha256 remembered in lokal's cache),
beside today's name-only profile. Each case is timed ``--repeat`` times in one process,
interleaved; the median is reported.

    python benchmarks/identify_cost.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lokal-identify-"))
    os.environ["LOKAL_HOME"] = str(work / "home")
    from lokal import models, profiles

    bundled = models.bundled_default_dir()
    assert bundled is not None, "needs the bundled MiniLM weights (lokal[st])"
    with_card = Path(shutil.copytree(bundled, work / "mymodel"))
    no_card = Path(shutil.copytree(bundled, work / "embedder"))
    (no_card / "README.md").unlink()
    cache = models.lokal_home() / "sha256-cache.json"

    def first_hash() -> None:
        cache.unlink(missing_ok=True)
        profiles.from_sentence_transformers_dir(no_card)

    cases: dict[str, Callable[[], object]] = {
        "name only (from_name)": lambda: profiles.from_name("mymodel"),
        "card (README.md)": lambda: profiles.from_sentence_transformers_dir(with_card),
        "weights sha256, first time": first_hash,
        "weights sha256, remembered": lambda: profiles.from_sentence_transformers_dir(no_card),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeat):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append(time.perf_counter() - start)
    print(f"load average {os.getloadavg()}; CPU flags: {_flags()}")
    size = (no_card / "model.safetensors").stat().st_size / 1e6
    print(f"model.safetensors {size:.1f} MB; median of {args.repeat}, interleaved")
    for name, samples in times.items():
        print(f"  {name:<28} {statistics.median(samples) * 1000:8.2f} ms")
    shutil.rmtree(work, ignore_errors=True)


def _flags() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
            return " ".join(f for f in line.split() if f in wanted)
    return "?"


if __name__ == "__main__":
    main()
