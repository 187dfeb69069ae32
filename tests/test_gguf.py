"""GGUF header reading, lokal's metadata, and malformed files (never a crash)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from lokal import Embedder, ModelLoadError, gguf, models


def test_packed_file_carries_lokal_metadata(packed_gguf: Path) -> None:
    meta = gguf.read_metadata(packed_gguf)
    assert meta["general.architecture"] == "bert"
    assert meta["lokal.name"] == "all-MiniLM-L6-v2"
    assert meta["lokal.quantization"] == "q8_0"
    assert meta["lokal.source_sha256"] == models.weights_sha256(models.bundled_default_dir())
    assert meta["bert.context_length"] == 512
    r = models.resolve(str(packed_gguf))
    # the profile's 256-token context wins over the 512-token position table
    assert (r.backend, r.quantization, r.profile.context_length) == ("gguf", "q8_0", 256)
    assert r.profile.known


def test_add_metadata_keeps_tensors(packed_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "tagged.gguf"
    gguf.add_metadata(packed_gguf, out, {"lokal.note": "hello", "lokal.name": "renamed"})
    meta = gguf.read_metadata(out)
    assert meta["lokal.note"] == "hello"
    assert meta["lokal.name"] == "renamed"
    original = gguf.read_metadata(packed_gguf)
    assert {k: v for k, v in meta.items() if k not in ("lokal.note", "lokal.name")} == {
        k: v for k, v in original.items() if k != "lokal.name"
    }
    # the tensor data section is byte-identical (only the header grew)
    a, b = packed_gguf.read_bytes(), out.read_bytes()
    assert a[-1_000_000:] == b[-1_000_000:]


def _header(n_tensors: int = 0, n_kv: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "bad magic|not a complete"),
        (b"PK\x03\x04 this is a zip", "bad magic"),
        (_header(version=99), "unsupported GGUF version"),
        (_header(n_kv=10**12), "malformed GGUF header"),
        (_header(n_kv=1) + struct.pack("<Q", 10**15), "malformed GGUF"),
        (
            _header(n_kv=1) + struct.pack("<Q", 3) + b"abc" + struct.pack("<I", 77),
            "unknown value type",
        ),
        (_header(n_kv=2) + struct.pack("<Q", 3) + b"abc", "not a complete GGUF"),
    ],
)
def test_malformed_headers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        gguf.read_metadata(path)


def test_truncated_model_is_refused_before_llama_cpp(packed_gguf: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with packed_gguf.open("rb") as src:
        cut.write_bytes(src.read(os.path.getsize(packed_gguf) // 3))
    with pytest.raises(ModelLoadError, match="truncated"):
        Embedder(str(cut))


def test_garbage_gguf_through_the_embedder(tmp_path: Path) -> None:
    path = tmp_path / "random.gguf"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError):
        Embedder(str(path)).embed_documents(["x"])
