"""Write an evaluation set in BEIR layout from the Debian package descriptions on this machine.

Each installed package's one-line synopsis ("Interactive high-level object-oriented language")
is a question; its extended description is the answer (title: the package name, text: the
extended description as plain text). Packages with the same synopsis answer the same question
together. The texts are Debian's, written by the packages' maintainers; nothing is shipped: the
set is made from whatever the machine has installed, so numbers from it describe this machine.

    python benchmarks/make_debian_eval.py OUT [--packages 2000] [--seed 0]
        [--status /var/lib/dpkg/status] [--min-words 12]

Then: lokal eval OUT. The description is read from dpkg's status file (deb822 paragraphs;
" ." lines are paragraph breaks). Packages whose extended description has fewer than
``--min-words`` words are left out.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

from _beir import write_beir


def paragraphs(status: str) -> list[dict[str, str]]:
    """The deb822 paragraphs of a dpkg status file: field name -> value (continuation lines
    kept, each without its leading space)."""
    out = []
    for block in re.split(r"\n\s*\n", status):
        fields: dict[str, str] = {}
        name = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and name is not None:
                fields[name] += "\n" + line[1:]
            elif ":" in line:
                name, _, value = line.partition(":")
                name = name.strip()
                fields[name] = value.strip()
        if fields:
            out.append(fields)
    return out


def description(value: str) -> tuple[str, str]:
    """(synopsis, extended description as plain text) of a Description field."""
    synopsis, _, rest = value.partition("\n")
    lines = [("" if line.strip() == "." else line.strip()) for line in rest.splitlines()]
    text = re.sub(r"\n{2,}", "\n", "\n".join(lines)).strip()
    return " ".join(synopsis.split()), text


def build(out: Path, status: Path, n_packages: int, seed: int, min_words: int) -> dict[str, int]:
    found = []
    seen_text: set[str] = set()
    for fields in paragraphs(status.read_text(encoding="utf-8", errors="replace")):
        name, value = fields.get("Package"), fields.get("Description")
        if not name or not value or "installed" not in fields.get("Status", "installed"):
            continue
        synopsis, text = description(value)
        if len(synopsis.split()) < 2 or len(text.split()) < min_words:
            continue
        key = name + "\x00" + text
        if key in seen_text:  # the same package for two architectures
            continue
        seen_text.add(key)
        found.append({"_id": name, "title": name, "text": text, "desc": synopsis})
    if not found:
        msg = f"no usable package descriptions in {status}"
        raise SystemExit(msg)
    random.Random(seed).shuffle(found)
    docs = sorted(found[:n_packages], key=lambda d: d["_id"])
    ids: dict[str, int] = {}
    for d in docs:  # a name twice (two architectures, different texts): keep both
        ids[d["_id"]] = ids.get(d["_id"], 0) + 1
        if ids[d["_id"]] > 1:
            d["_id"] = f"{d['_id']}#{ids[d['_id']]}"
    queries = write_beir(out, docs)
    return {"packages": len(docs), "queries": queries, "shared": len(docs) - queries}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="directory to write (BEIR layout)")
    ap.add_argument("--packages", type=int, default=2000, help="packages at most (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="which packages: a seeded shuffle")
    ap.add_argument("--status", type=Path, default=Path("/var/lib/dpkg/status"))
    ap.add_argument("--min-words", type=int, default=12, help="shortest extended description")
    args = ap.parse_args(argv)
    if args.packages < 1:
        ap.error("--packages must be at least 1")
    if not args.status.is_file():
        ap.error(f"no such file: {args.status}")
    counts = build(args.out, args.status, args.packages, args.seed, args.min_words)
    print(
        f"{args.out}: {counts['packages']} packages, {counts['queries']} questions "
        f"({counts['shared']} packages share a synopsis with another)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
