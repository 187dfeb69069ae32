"""Stress: SIGKILL the agent hundreds of times at random moments (the suite does 20).

    .venv/bin/python -m tests.stress_agent_kill [--kills 300] [--seed N]

After every kill the index must open and pass ``check``; at the end one clean run must
converge to exactly the files on disk. Packs the default GGUF into a fresh model cache first.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from lokal import packing

from .test_agent_daemon import kill_and_converge


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=300)
    p.add_argument("--seed", type=int, default=int(time.time()))
    a = p.parse_args()
    model = packing.pack("all-MiniLM-L6-v2").path
    work = Path(tempfile.mkdtemp(prefix="lokal-kill-stress-"))
    start = time.perf_counter()
    print(f"seed {a.seed}, {a.kills} kills, work in {work}")
    kill_and_converge(work, model, kills=a.kills, seed=a.seed)
    print(f"done in {time.perf_counter() - start:.0f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
