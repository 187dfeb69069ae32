"""Writing an eval set in BEIR layout, shared by the make_*_eval.py scripts.

Each document dict has ``_id``, ``title``, ``text`` and ``desc``: its one-line description is
the question it answers. Documents with the same description (case and a final full stop
aside) answer the same question together, asked in the words of the first of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_beir(out: Path, docs: Sequence[dict[str, Any]]) -> int:
    """Write ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` under ``out``;
    returns the number of questions."""
    by_desc: dict[str, list[str]] = {}
    first_desc: dict[str, str] = {}
    for d in docs:
        key = d["desc"].lower().rstrip(".")
        by_desc.setdefault(key, []).append(d["_id"])
        first_desc.setdefault(key, d["desc"])
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for d in docs:
            row = {"_id": d["_id"], "title": d["title"], "text": d["text"]}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (
        (out / "queries.jsonl").open("w", encoding="utf-8") as q_fh,
        (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as r_fh,
    ):
        r_fh.write("query-id\tcorpus-id\tscore\n")
        for key, group in by_desc.items():
            qid = f"q-{group[0]}"
            q_fh.write(json.dumps({"_id": qid, "text": first_desc[key]}, ensure_ascii=False) + "\n")
            for doc_id in group:
                r_fh.write(f"{qid}\t{doc_id}\t1\n")
    return len(by_desc)
