"""`lokal index`, `search`, `check` and `snapshot`: the real CLI on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lokal.agent.writer import writer_lock
from lokal.embedder import Embedder
from lokal.index import Index

from .conftest import _TOPICS

LOKAL = str(Path(sys.executable).parent / "lokal")


def lokal(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([LOKAL, *args], capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lokal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def index_json(root: Path, db: Path, *extra: str, check: bool = True) -> dict:
    return json.loads(
        lokal("index", str(root), "--index", str(db), "--json", *extra, check=check).stdout
    )


@pytest.fixture
def tree(tmp_path: Path, packed_gguf: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "pump.md").write_text(
        "# Pump P-101\n\nTo reset the pump, hold the red button for five seconds.\n"
    )
    (root / "reference.txt").write_text("\n\n".join(_TOPICS[k] for k in sorted(_TOPICS)[:3]))
    (root / "cjk.txt").write_text("東京は日本の首都です。" * 200)
    (root / "utf16.txt").write_bytes("Grüße aus UTF-16, mit BOM.".encode("utf-16"))
    (root / "latin1.txt").write_bytes("Crème brûlée à la française, très bon.".encode("cp1252"))
    (root / "blob.bin").write_bytes(os.urandom(2048) + b"\x00" * 64)
    (root / "sub" / "page.html").write_text(
        "<html><head><style>p{}</style></head><body><script>var x;</script>"
        "<p>Hello from <b>HTML</b></p></body></html>"
    )
    (root / "sub" / "notes.swp").write_text("editor swap file")
    (root / "sub" / "loop").symlink_to(root)  # a symlink loop
    return root


@pytest.mark.slow
def test_one_pass_then_nothing_to_do(tree: Path, tmp_path: Path, gguf_embedder: Embedder) -> None:
    # a 100,000-token file: chunked so that nothing is ever cut (~20-30 s of embedding on a
    # quiet 2-core box: the costliest single file in the suite, on purpose)
    big = " ".join(_TOPICS[k] for k in sorted(_TOPICS))[:370_000]
    assert gguf_embedder.count_tokens([big])[0] >= 100_000
    (tree / "big.txt").write_text(big)
    db = tree / "index.db"  # the index inside a watched root is never indexed itself
    # the default per-file limit (60 s) is for a quiet box: this run may share two cores
    first = index_json(tree, db, "--max-file-seconds", "900")
    assert first["seen"] == 8  # not the swap file, not the index, not through the loop
    assert first["indexed"] == 7 and first["skipped"] == 1 and first["failed"] == 0
    assert any("binary" in p["reason"] for p in first["problems"])
    assert first["chunks"] > 400  # big.txt alone: 100,000 tokens at <= 256 per chunk
    second = index_json(tree, db)
    assert (second["indexed"], second["unchanged"], second["chunks"]) == (0, 8, 0)
    with Index.open(db) as index:
        assert index.managed_by == "agent"
        assert index.check().ok
        docs = {Path(d.uri).name: d for d in index.documents()}
        assert docs["blob.bin"].status == "skipped"
        assert docs["utf16.txt"].chunks == 1
        texts = {Path(r.document).name: r.text for r in index.get()}
        assert "Grüße aus UTF-16" in texts["utf16.txt"]
        assert "Crème brûlée" in texts["latin1.txt"]
        assert texts["page.html"] == "Hello from\nHTML" or "Hello from" in texts["page.html"]
        assert "var x" not in texts["page.html"]
        pieces = index.document_chunks(str(tree / "big.txt"))
        assert all(big[c.char_start : c.char_end] == c.text for c in pieces)
        assert max(c.tokens for c in pieces) <= gguf_embedder.context_length
        assert pieces[0].char_start == 0 and pieces[-1].char_end == len(big)


def test_changes_are_found_and_only_they_cost(tree: Path) -> None:
    db = tree.parent / "index.db"
    index_json(tree, db)
    pump = tree / "pump.md"
    st = pump.stat()
    pump.write_text("# Pump P-101\n\nTo reset the pump, press RESET twice.\n")
    os.utime(pump, ns=(st.st_atime_ns, st.st_mtime_ns))  # an edit with mtime put back
    (tree / "reference.txt").touch()  # touched, same content: hashed, not embedded
    (tree / "latin1.txt").unlink()
    run = index_json(tree, db)
    assert (run["indexed"], run["removed"], run["chunks"]) == (1, 1, 1)
    hits = json.loads(
        lokal("search", "how do I reset the pump", "--index", str(db), "-k", "1", "--json").stdout
    )
    assert hits[0]["path"] == str(pump) and "RESET twice" in hits[0]["text"]
    assert hits[0]["lines"] == [1, 3]


def test_missing_root_keeps_documents(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    index_json(tree, db)
    moved = tmp_path / "elsewhere"
    tree.rename(moved)  # like an unmounted disk
    run = index_json(tree, db)
    assert run["missing_roots"] == [str(tree)] and run["removed"] == 0
    with Index.open(db) as index:
        assert len(list(index.documents())) == 7


def test_second_writer_refuses_clearly(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    with writer_lock(db):
        proc = lokal("index", str(tree), "--index", str(db), check=False)
    assert proc.returncode == 1
    assert "being written by another lokal agent" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_search_check_snapshot(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    index_json(tree, db)
    out = lokal("search", "reset the pump", "--index", str(db), "-k", "2").stdout
    assert f"{tree / 'pump.md'}:1-3" in out
    filtered = json.loads(
        lokal(
            "search", "hello", "--index", str(db), "--filter", '{"kind": "html"}', "--json"
        ).stdout
    )
    assert [Path(h["path"]).name for h in filtered] == ["page.html"]
    bad = lokal("search", "x", "--index", str(db), "--filter", '{"a\') OR 1=1--": 1}', check=False)
    assert bad.returncode == 1 and "FilterError" in bad.stderr
    assert json.loads(lokal("check", "--index", str(db), "--json").stdout)["ok"] is True
    snap = tmp_path / "snap.db"
    lokal("snapshot", "--index", str(db), str(snap))
    assert json.loads(lokal("check", "--index", str(snap), "--json").stdout)["ok"] is True
    (tree / "pump.md").write_text("changed behind the index's back")
    stale = lokal("check", "--index", str(db), "--json", check=False)
    assert stale.returncode == 1
    assert json.loads(stale.stdout)["stale"][0]["path"] == str(tree / "pump.md")


def test_symlinks_followed_only_inside_the_root(tmp_path: Path, packed_gguf: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("Text outside the root must never be read.\n")
    (root / "real" / "inside.txt").write_text("The valve manual lives inside the root.\n")
    (root / "link-to-secret.txt").symlink_to(outside / "secret.txt")
    (root / "link-to-outside").symlink_to(outside, target_is_directory=True)
    (root / "link-to-inside.txt").symlink_to(root / "real" / "inside.txt")
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    db = tmp_path / "index.db"
    plain = index_json(root, db)  # by default no symlink is followed
    assert (plain["seen"], plain["indexed"]) == (1, 1)
    followed = index_json(root, tmp_path / "followed.db", "--follow-symlinks")
    reasons = {Path(p["path"]).name: p["reason"] for p in followed["problems"]}
    assert "outside the root" in reasons["link-to-secret.txt"]
    assert "outside the root" in reasons["link-to-outside"]
    assert "loop" in reasons["loop"]
    with Index.open(tmp_path / "followed.db") as index:
        texts = " ".join(r.text for r in index.get())
        uris = {Path(d.uri).name for d in index.documents()}
    assert "never be read" not in texts
    assert uris == {"inside.txt", "link-to-inside.txt"}


@pytest.mark.slow
def test_index_with_another_model_is_refused_and_loses_nothing(
    tmp_path: Path, packed_gguf: Path
) -> None:
    """`lokal index` with a model other than the index's refuses, naming both, and keeps every
    document: a rebuild from the paths given could drop what other runs indexed (the agent,
    which knows all its roots, rebuilds beside instead)."""
    from lokal import packing

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "pump.md").write_text("# Pump\n\nTo reset the pump, hold the red button.\n")
    (b / "valve.txt").write_text("Close the valve before opening the filter housing.\n")
    db = tmp_path / "index.db"
    assert index_json(a, db, "--model", str(packed_gguf))["indexed"] == 1
    f16 = packing.pack("all-MiniLM-L6-v2", quantization="f16").path
    out = subprocess.run(
        [LOKAL, "index", str(b), "--index", str(db), "--model", str(f16)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr
    assert "q8_0" in out.stderr and "f16" in out.stderr
    assert not Path(f"{db}.rebuild").exists()
    with Index.open(db) as index:
        assert index.identity.quantization == "q8_0" and index.check().ok
        assert {Path(d.uri).name for d in index.documents()} == {"pump.md"}
