"""The fidelity table (issue 16, docs/formats.md): one document of each format, written by the
format's own writer library, indexed by the real ``lokal index`` in a subprocess; every
sentence a reader sees is found by the real ``lokal search``, no boilerplate is indexed, and
what lokal cannot read is skipped with a reason that names the format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lokal.embedder import Embedder
from lokal.index import Index
from lokal.retrieval import retrieve

from . import formats
from .test_agent_cli import index_json, lokal


@pytest.mark.slow
def test_every_format_every_sentence_found_no_boilerplate(
    tmp_path: Path, packed_gguf: Path, gguf_embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for suffix in formats.SENTENCES:
        (docs / f"sample{suffix}").write_bytes(formats.make(suffix))
    (docs / "report.doc").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1024))
    (docs / "photo.png").write_bytes(_png())
    db = tmp_path / "index.db"

    run = index_json(docs, db, "--model", str(packed_gguf))
    assert (run["indexed"], run["skipped"], run["failed"]) == (len(formats.SENTENCES), 2, 0), run
    reasons = {Path(p["path"]).name: p["reason"] for p in run["problems"]}
    assert reasons["report.doc"].startswith("Word 97-2003 document (.doc)")
    assert "pip install 'lokal[docx]'" in reasons["report.doc"]
    assert reasons["photo.png"].startswith("PNG image (.png)")

    with Index.open(db) as index:
        indexed = {
            Path(d.uri).suffix: " ".join(c.text for c in index.document_chunks(d.uri))
            for d in index.documents()
            if d.status == "indexed"
        }
    for suffix, sentences in formats.SENTENCES.items():
        for sentence in sentences:
            assert sentence in indexed[suffix], (suffix, sentence)
        for boilerplate in formats.BOILERPLATE.get(suffix, []):
            assert boilerplate not in indexed[suffix], (suffix, boilerplate)

    # every sentence a reader sees is found by search (hybrid: a short footer line among a
    # page of text is a full-text match more than a semantic one) in its own document: by
    # the retrieval `lokal search` runs, in this process with the run's one model load...
    with Index.open(db) as index:
        for suffix, sentences in formats.SENTENCES.items():
            for sentence in sentences:
                hits = [
                    r.hit for r in retrieve(index, sentence, 3, embedder=gguf_embedder, hybrid=True)
                ]
                found = [h for h in hits if (h.document or "").endswith(f"sample{suffix}")]
                assert found and sentence in found[0].text, (suffix, sentence, hits)
    # ...and by the real `lokal search` in a subprocess, one sentence per format
    for suffix, sentences in formats.SENTENCES.items():
        out = lokal("search", sentences[0], "--index", str(db), "-k", "3", "--hybrid", "--json")
        found = [h for h in json.loads(out.stdout) if h["path"].endswith(f"sample{suffix}")]
        assert found and sentences[0] in found[0]["text"], (suffix, sentences[0], out.stdout)


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, "PNG")
    return buffer.getvalue()
