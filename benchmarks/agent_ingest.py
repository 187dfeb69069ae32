"""The agent's ingest pipeline end to end, against the raw embedder over the same chunks.

Corpus: Debian's package documentation under /usr/share/doc, written outside this project
(READMEs, copyright files, changelogs, HTML and Markdown docs): every plain file under
--max-bytes, and every gzipped one whose text is under it, decompressed. Copied once into a
work directory; a smaller corpus is the first --small files of it.

Rows, each its own process (peak RSS is that process's alone, from wait4):

- ``lokal index`` over the corpus (the agent's start-up pass: scan, read, parse, chunk with
  the model's tokenizer, embed with the q8_0 MiniLM GGUF, one transaction per file), at two
  corpus sizes;
- the raw embedder (``lokal.Embedder(...).embed_documents``) over exactly the chunk texts that
  pass wrote, in batches of 64 (the agent's batch): the floor the pipeline is measured against;
- ``lokal index`` again over the unchanged large corpus (the rescan: stat only, 0 embeddings).

Targets (issue 4): end to end >= 0.9x the raw embedder's tokens/s; rescan <= 2 s per 10k
files; peak RSS <= 200 MB at both sizes and no more than 10% apart.

``--baseline SRC`` (a checkout of other lokal code, e.g. ``git worktree add /tmp/old REV``)
adds before/after rows: ``lokal index`` over the small corpus with that code and with this
one, alternated ``--rounds`` times in the same process tree (the other code runs from a copy
of its packages on PYTHONPATH, with this venv's dependencies), and the index files' sizes.
Issue 14's target: the change feed costs the agent's ingest speed and the index size <= 5%.

``--onnx`` adds GGUF/ONNX rows: ``lokal index`` over the small corpus with the q8_0 GGUF and
with the ONNX int8 pack of the same weights (made with ``lokal models pack --format onnx`` if
absent), alternated ``--rounds`` times. Issue 20's target: the ONNX pack >= 1.8x the GGUF's
tokens/s on a CPU with int8 dot products.

    .venv/bin/python benchmarks/agent_ingest.py [--max-bytes 6000] [--small 500] [--json]
        [--baseline SRC [--rounds 3] [--only-baseline]] [--onnx [--only-onnx]]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

LOKAL = str(Path(sys.executable).parent / "lokal")
SOURCE = Path("/usr/share/doc")


def build_corpus(dest: Path, max_bytes: int) -> list[Path]:
    files = []
    for path in sorted(SOURCE.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(SOURCE)
        try:
            if path.suffix == ".gz":
                if path.stat().st_size > max_bytes:
                    continue
                data = gzip.decompress(path.read_bytes())
                rel = rel.with_suffix("")
            else:
                data = path.read_bytes()
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if not data or len(data) > max_bytes or b"\x00" in data[:1024]:
            continue
        out = dest / rel
        if out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        files.append(out)
    return files


def run(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, check=False)
    return {"stdout": proc.stdout.decode(), "stderr": proc.stderr.decode()}


def measured(cmd: list[str]) -> dict[str, Any]:
    """``cmd`` run under a small Python wrapper that reports the child's peak RSS via wait4."""
    wrapper = (
        "import os, sys, json, time\n"
        "t = time.perf_counter()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execv(sys.argv[1], sys.argv[1:])\n"
        "_, status, ru = os.wait4(pid, 0)\n"
        "print(json.dumps({'rc': os.waitstatus_to_exitcode(status), 'peak_mb': ru.ru_maxrss / 1024,"
        " 'seconds': time.perf_counter() - t}), file=sys.stderr)\n"
    )
    r = run([sys.executable, "-c", wrapper, *cmd])
    last = r["stderr"].strip().splitlines()[-1]
    info = json.loads(last)
    if info["rc"] not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {info['rc']}:\n{r['stderr'][-3000:]}")
    return {**info, "stdout": r["stdout"]}


RAW = """
import json, sys, time
t0 = time.perf_counter()
from lokal import Embedder
from lokal.index import Index
with Index.open(sys.argv[1]) as ix:
    texts = [r.text for r in ix.get()]
emb = Embedder(sys.argv[2])
emb.embed_documents(texts[:8])  # load the model (lokal index loads it before its pass too)
tokens = 0
for i in range(0, len(texts), 64):
    tokens += sum(emb.embed_documents(texts[i : i + 64]).token_counts)
print(json.dumps({"chunks": len(texts), "tokens": tokens, "seconds": time.perf_counter() - t0}))
"""


# ---- before/after: another checkout's code against this one ------------------------------------

CLI = "import sys; from lokal.agent.cli import main; sys.argv[0] = 'lokal'; sys.exit(main())"


def stage(src: Path, dest: Path) -> Path:
    """``src``'s packages laid out as installed (lokal = core, lokal.agent = agent, ...)."""
    pkg = dest / "lokal"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src / "core", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("agent", "integrations"):
        shutil.copytree(src / sub, pkg / sub, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def before_after(src: Path, corpus: Path, work: Path, gguf: Path, rounds: int) -> str:
    """``lokal index`` over ``corpus`` with ``src``'s code and with this one, alternated."""
    staged = stage(src, work / "baseline-code")
    env_before = {**os.environ, "PYTHONPATH": str(staged)}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for i in range(rounds):
        order = ("before", "after") if i % 2 == 0 else ("after", "before")
        for which in order:
            db = work / f"ab-{which}.db"
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            cmd = [sys.executable, "-c", CLI, "index", str(corpus), "--index", str(db)]
            cmd += ["--model", str(gguf), "--json"]
            env = env_before if which == "before" else {**os.environ, "PYTHONPATH": ""}
            r = measured_env(cmd, env)
            summary = json.loads(r["stdout"])
            size = sum(
                Path(f"{db}{x}").stat().st_size for x in ("", "-wal") if Path(f"{db}{x}").exists()
            )
            runs[which].append({**r, "summary": summary, "bytes": size})
            print(f"  {which}: {r['seconds']:.1f} s, {size:,} bytes", file=sys.stderr)
    lines = [
        f"Before/after: `lokal index` over {corpus} with {src} (before) and this code (after), "
        f"alternated {rounds} times; load average at end {os.getloadavg()[0]:.1f}.",
        "",
        "| run | chunks | tokens | wall s (each round) | tokens/s (best) | index bytes |",
        "|---|---:|---:|---|---:|---:|",
    ]
    best: dict[str, float] = {}
    for which, rs in runs.items():
        s0 = rs[0]["summary"]
        best[which] = max(r["summary"]["tokens"] / r["seconds"] for r in rs)
        walls = " / ".join(f"{r['seconds']:.1f}" for r in rs)
        lines.append(
            f"| {which} | {s0['chunks']} | {s0['tokens']} | {walls} | {best[which]:,.0f} "
            f"| {rs[-1]['bytes']:,} |"
        )
    feed, total = feed_pages(work / "ab-after.db")
    speed = best["after"] / best["before"] - 1
    size = runs["after"][-1]["bytes"] / runs["before"][-1]["bytes"] - 1
    lines += [
        "",
        f"- ingest speed, after vs before: {speed * 100:+.1f}% (best round each; target within 5%)",
        f"- index size, after vs before: {size * 100:+.1f}% (everything either code stores)",
        f"- the change feed's own pages in the after file (dbstat: changes tables, indexes): "
        f"{feed:,} of {total:,} bytes, {feed / total * 100:.1f}% (target within 5%)",
    ]
    return "\n".join(lines)


def gguf_vs_onnx(corpus: Path, work: Path, gguf: Path, pack: Path, rounds: int) -> str:
    """``lokal index`` over ``corpus`` with the GGUF and with the ONNX pack, alternated."""
    runs: dict[str, list[dict[str, Any]]] = {"gguf q8_0": [], "onnx int8": []}
    model = {"gguf q8_0": gguf, "onnx int8": pack}
    for i in range(rounds):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for which in order:
            db = work / f"model-{which.split()[0]}.db"
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            cmd = [LOKAL, "index", str(corpus), "--index", str(db), "--json"]
            r = measured([*cmd, "--model", str(model[which])])
            runs[which].append({**r, "summary": json.loads(r["stdout"])})
            print(f"  {which}: {r['seconds']:.1f} s", file=sys.stderr)
    lines = [
        f"GGUF vs ONNX: `lokal index` over {corpus} with {gguf.name} and {pack.name}, alternated "
        f"{rounds} times; load average at end {os.getloadavg()[0]:.1f}.",
        "",
        "| model | chunks | tokens | wall s (each round) | tokens/s (best) | peak RSS MB |",
        "|---|---:|---:|---|---:|---:|",
    ]
    best: dict[str, float] = {}
    for which, rs in runs.items():
        s0 = rs[0]["summary"]
        best[which] = max(r["summary"]["tokens"] / r["seconds"] for r in rs)
        walls = " / ".join(f"{r['seconds']:.1f}" for r in rs)
        peak = max(r["peak_mb"] for r in rs)
        lines.append(
            f"| {which} | {s0['chunks']} | {s0['tokens']} | {walls} | {best[which]:,.0f} "
            f"| {peak:.0f} |"
        )
    ratio = best["onnx int8"] / best["gguf q8_0"]
    lines += ["", f"- ONNX int8 / GGUF q8_0 ingest tokens/s: {ratio:.2f}x (target >= 1.8x)"]
    return "\n".join(lines)


def feed_pages(db: Path) -> tuple[int, int]:
    """(bytes of the change feed's tables and indexes, bytes of every table) in ``db``."""
    from lokal.index import sqlite

    conn = sqlite.sqlite_module().connect(str(db))
    try:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        conn.close()
    return sum(n for name, n in rows if "changes" in name), sum(n for _, n in rows)


def measured_env(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """:func:`measured` with another environment (the code the child imports)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return measured(cmd)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-bytes", type=int, default=6000, help="largest file taken (6000)")
    p.add_argument("--small", type=int, default=500, help="files in the small corpus (500)")
    p.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--baseline", type=Path, help="a checkout of other lokal code to compare")
    p.add_argument("--rounds", type=int, default=3, help="before/after pairs (3)")
    p.add_argument("--only-baseline", action="store_true", help="only the before/after rows")
    p.add_argument("--onnx", action="store_true", help="GGUF vs ONNX int8 pack rows")
    p.add_argument("--only-onnx", action="store_true", help="only the GGUF vs ONNX rows")
    a = p.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="lokal-ingest-bench-"))
    large = work / "large"
    small = work / "small"
    for d in (large, small):
        shutil.rmtree(d, ignore_errors=True)
    files = build_corpus(large, a.max_bytes)
    for f in files[: a.small]:
        out = small / f.relative_to(large)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, out)
    from lokal import models

    gguf = models.cached_gguf_path("all-MiniLM-L6-v2")
    if not gguf.exists():
        raise SystemExit(f"{gguf} is missing: run `make model` (lokal models pack) first")
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    print(f"corpus: {len(files)} files ({size_mb:.1f} MB) from {SOURCE}; small: {a.small}")

    if a.baseline:
        print(before_after(a.baseline, small, work, gguf, a.rounds))
        if a.only_baseline:
            return
    if a.onnx or a.only_onnx:
        from lokal import packing_onnx

        pack = packing_onnx.cached_path("all-MiniLM-L6-v2", "int8")
        if not packing_onnx.is_pack(pack):
            packing_onnx.pack("all-MiniLM-L6-v2", quantization="int8")
        print(gguf_vs_onnx(small, work, gguf, pack, a.rounds))
        if a.only_onnx:
            return
    rows: dict[str, dict[str, Any]] = {}
    for name, root in (("small", small), ("large", large)):
        db = work / f"{name}.db"
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        r = measured(
            [LOKAL, "index", str(root), "--index", str(db), "--model", str(gguf), "--json"]
        )
        summary = json.loads(r["stdout"])
        rows[f"lokal index ({name})"] = {**r, "summary": summary, "db": str(db)}
        took = r["seconds"]
        n_files, n_chunks = summary["indexed"], summary["chunks"]
        print(f"lokal index ({name}): {n_files} files, {n_chunks} chunks, {took:.0f} s")
    raw = measured([sys.executable, "-c", RAW, rows["lokal index (large)"]["db"], str(gguf)])
    rows["raw embedder (large chunks)"] = {**raw, "summary": json.loads(raw["stdout"])}
    rescan = measured(
        [
            LOKAL,
            "index",
            str(large),
            "--index",
            rows["lokal index (large)"]["db"],
            "--model",
            str(gguf),
            "--json",
        ]
    )
    rows["rescan, unchanged (large)"] = {**rescan, "summary": json.loads(rescan["stdout"])}

    lines = [
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; Python "
        f"{platform.python_version()}; load average at end {os.getloadavg()[0]:.1f}.",
        f"Command: python benchmarks/agent_ingest.py --max-bytes {a.max_bytes} --small {a.small}",
        f"Corpus: {len(files)} files, {size_mb:.1f} MB, from {SOURCE} (plain files under "
        f"{a.max_bytes} bytes and small gzipped ones, decompressed).",
        "",
        "| run | files | chunks | tokens | wall s | pass s | files/s | chunks/s | tokens/s "
        "| peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        s = r["summary"]
        files_n = s.get("seen", "")
        chunks, tokens = s.get("chunks", 0), s.get("tokens", 0)
        wall = r["seconds"]
        pass_s = s.get("seconds", wall)
        lines.append(
            f"| {name} | {files_n} | {chunks} | {tokens} | {wall:.1f} | {pass_s:.2f} | "
            f"{(files_n or 0) / wall:.1f} | {chunks / wall:.1f} | {tokens / wall:.0f} | "
            f"{r['peak_mb']:.0f} |"
        )
    big, rawr = rows["lokal index (large)"], rows["raw embedder (large chunks)"]
    ratio = (big["summary"]["tokens"] / big["seconds"]) / (
        rawr["summary"]["tokens"] / rawr["seconds"]
    )
    res = rows["rescan, unchanged (large)"]
    per10k = res["summary"]["seconds"] * 10_000 / max(1, res["summary"]["seen"])
    peaks = [rows["lokal index (small)"]["peak_mb"], big["peak_mb"]]
    spread = max(peaks) / min(peaks) - 1
    rs = res["summary"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines += [
        "",
        f"- {verdict(ratio >= 0.9)}: end to end {ratio:.2f}x the raw embedder's tokens/s "
        "(target >= 0.9x; both include process start and model load)",
        f"- {verdict(per10k <= 2 and rs['indexed'] == 0)}: rescan of the unchanged tree: "
        f"{rs['seconds']:.2f} s for {rs['seen']} files = {per10k:.2f} s per 10k files, "
        f"{rs['indexed']} files embedded (target <= 2 s, 0)",
        f"- {verdict(max(peaks) <= 200 and spread <= 0.10)}: peak RSS {peaks[0]:.0f} MB "
        f"({a.small} files) and {peaks[1]:.0f} MB ({len(files)} files): {spread * 100:.0f}% "
        "apart (target <= 200 MB, <= 10%)",
    ]
    print("\n".join(lines))
    if a.json:
        print(
            json.dumps(
                {k: {kk: vv for kk, vv in v.items() if kk != "stdout"} for k, v in rows.items()},
                indent=1,
            )
        )
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
