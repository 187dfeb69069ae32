"""Model resolution: the default, files, directories, the model cache, hub ids offline."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from lokal import Embedder, ModelNotFound, ProfileError, models
from lokal.identity import ModelIdentity


def test_default_resolution_is_deterministic_and_says_why(packed_gguf: Path) -> None:
    auto = models.resolve(None)
    assert auto == models.resolve(None)
    assert auto.backend == "gguf"  # llama-cpp-python installed and the packed GGUF present
    assert "auto prefers GGUF" in auto.reason
    st = models.resolve(None, "sentence-transformers")
    assert st.backend == "sentence-transformers"
    assert st.path == models.bundled_default_dir()
    e = Embedder()
    assert "backend='gguf'" in repr(e) and "auto prefers GGUF" in repr(e)


def test_default_gguf_missing_names_the_pack_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOKAL_HOME", str(tmp_path))
    with pytest.raises(ModelNotFound, match="lokal models pack all-MiniLM-L6-v2"):
        models.resolve(None, "gguf")
    # auto falls back to the bundled sentence-transformers weights, and says so
    r = models.resolve(None)
    assert r.backend == "sentence-transformers"
    assert "no packed GGUF" in r.reason


def test_paths_directories_and_cache_names(packed_gguf: Path, tmp_path: Path) -> None:
    assert models.resolve(str(packed_gguf)).path == packed_gguf
    assert models.resolve("all-MiniLM-L6-v2").path == packed_gguf
    assert (
        models.resolve("all-MiniLM-L6-v2", "sentence-transformers").path
        == models.bundled_default_dir()
    )
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(packed_gguf, single / "m.gguf")
    assert models.resolve(str(single)).path == single / "m.gguf"
    st_dir = models.bundled_default_dir()
    assert models.resolve(str(st_dir)).backend == "sentence-transformers"
    with pytest.raises(ProfileError, match="needs backend='gguf'"):
        models.resolve(str(packed_gguf), "sentence-transformers")
    with pytest.raises(ProfileError, match="needs backend='sentence-transformers'"):
        models.resolve(str(st_dir), "gguf")
    with pytest.raises(ModelNotFound, match="no such file"):
        models.resolve(str(tmp_path / "missing.gguf"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelNotFound, match=r"not a \.gguf"):
        models.resolve(str(tmp_path / "notes.txt"))


def test_hub_id_offline_fails_fast_with_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAL_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelNotFound) as info:
        Embedder("BAAI/bge-small-en-v1.5")
    assert time.monotonic() - start < 10
    assert "lokal models pack BAAI/bge-small-en-v1.5" in str(info.value)
    assert "offline" in str(info.value)


def test_same_weights_share_a_key_across_backends(
    st_embedder: Embedder, gguf_embedder: Embedder
) -> None:
    a, b = st_embedder.identity, gguf_embedder.identity
    assert a.key == b.key
    assert a.variant != b.variant
    assert a.compare(b) == "variant"
    assert (a.quantization, b.quantization) == ("f32", "q8_0")
    assert a.compare(ModelIdentity.from_dict(a.to_dict())) == "same"
    other = Embedder(backend="gguf", normalize=False).identity
    assert other.compare(b) == "different"
    prefixed = Embedder(backend="gguf", document_prefix="passage: ").identity
    assert prefixed.compare(b) == "different"
    query_only = Embedder(backend="gguf", query_prefix="q: ").identity
    assert query_only.compare(b) == "variant"
