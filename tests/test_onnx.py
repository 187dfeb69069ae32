"""The ONNX Runtime backend (issue 20): the bundled all-MiniLM-L6-v2 exported and int8-quantized
during the test run by the real ``lokal models pack --format onnx``, against sentence-transformers
fp32 on real text; the same Embedder contract as the other backends; the reranker half; the
refusals; ``backend="auto"``'s rule; an index written by the pack and read back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from lokal import cpu, models, packing_onnx
from lokal.embedder import Embedder, TextTooLong, TruncationWarning
from lokal.errors import IntegrityError, ModelLoadError, ModelVariantWarning, ProfileError
from lokal.evaluation import data, runner
from lokal.index import Chunk, Index
from lokal.reranker import Reranker

from .conftest import build_cross_encoder, onnx_pack, paragraphs

LOKAL = str(Path(sys.executable).parent / "lokal")
pytestmark = pytest.mark.slow


def lokal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LOKAL, *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))  # both normalized by the embedder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real prose (Python's language reference), short and long, a few over the context."""
    paras = paragraphs()
    return [*paras[:150], " ".join(paras[200:230])]


def test_the_pack_records_what_it_is_and_verifies(st_embedder: Embedder, tmp_path: Path) -> None:
    pack = onnx_pack("int8")
    manifest = packing_onnx.read_manifest(pack)
    assert manifest["kind"] == "embed" and manifest["quantization"] == "int8"
    assert manifest["cpu"] == packing_onnx.default_cpu()
    assert manifest["source_sha256"] == models.weights_sha256(models.bundled_default_dir())
    assert manifest["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    # no weights but the exported graph; the tokenizer and configs travel with it
    assert not [p for p in manifest["files"] if p.endswith((".safetensors", ".bin"))]
    assert {"model.onnx", "tokenizer.json", "config.json", "modules.json"} <= set(manifest["files"])
    ok = lokal("models", "verify", str(pack), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)[0]["ok"]

    # a copy that travelled badly: one byte of the graph changed
    broken = tmp_path / "broken.onnx-int8"
    shutil.copytree(pack, broken)
    with (broken / "model.onnx").open("r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = lokal("models", "verify", str(broken))
    assert bad.returncode == 1 and "FAIL" in bad.stdout and "sha256" in bad.stdout
    with pytest.raises(IntegrityError, match="sha256"):
        packing_onnx.verify(broken)


def test_fp32_export_matches_sentence_transformers(st_embedder: Embedder, texts: list[str]) -> None:
    onnx = Embedder(str(onnx_pack("fp32")))
    assert onnx.backend_name == "onnx" and onnx.identity.quantization == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        want = st_embedder.embed_documents(texts)
        got = onnx.embed_documents(texts)
    assert got.token_counts == want.token_counts
    assert cosines(got.vectors, want.vectors).min() >= 0.9999
    q = "How do I add debugging assertions to my program?"
    assert float(onnx.embed_query(q) @ st_embedder.embed_query(q)) >= 0.9999


def test_int8_is_the_same_model_key_and_close_to_fp32(
    st_embedder: Embedder, onnx_int8_embedder: Embedder, texts: list[str]
) -> None:
    onnx = onnx_int8_embedder
    assert onnx.identity.key == st_embedder.identity.key
    assert onnx.identity.variant != st_embedder.identity.variant
    assert onnx.identity.describe().startswith("all-MiniLM-L6-v2 (onnx int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        cos = cosines(
            onnx.embed_documents(texts).vectors, st_embedder.embed_documents(texts).vectors
        )
    print(f"ONNX int8 vs sentence-transformers fp32 on {len(texts)} passages: "
          f"mean cosine {cos.mean():.4f}, min {cos.min():.4f}")  # fmt: skip
    # measured at 0.994 mean on this model; per-tensor quantization gave 0.948
    assert cos.mean() >= 0.985 and cos.min() >= 0.95


def test_prefixes_and_truncation_are_the_other_backends(
    st_embedder: Embedder, onnx_int8_embedder: Embedder, long_text: str
) -> None:
    onnx = Embedder(str(onnx_pack("int8")), query_prefix="query: ", document_prefix="passage: ")
    plain = onnx_int8_embedder
    # the prefix is applied by lokal and counted like any other text
    q = onnx.embed_query("reset the pump")
    assert np.allclose(q, plain.embed_documents(["query: reset the pump"]).vectors[0], atol=1e-6)
    d = onnx.embed_documents(["the pump manual"])
    assert d.token_counts == st_embedder.count_tokens(["passage: the pump manual"])
    # a text over the 256-token context: counted uncut, cut as sentence-transformers cuts it
    # (closing [SEP] kept), with the same warning
    assert plain.context_length == st_embedder.context_length == 256
    with pytest.warns(TruncationWarning, match="were cut") as got:
        cut = plain.embed_documents([long_text])
    with pytest.warns(TruncationWarning, match="were cut") as want:
        reference = st_embedder.embed_documents([long_text])
    assert str(got[0].message) == str(want[0].message)
    assert cut.token_counts == reference.token_counts and cut.token_counts[0] > 256
    assert cut.truncated[0].limit == 256
    fp32 = Embedder(str(onnx_pack("fp32")))
    with pytest.warns(TruncationWarning):
        assert float(fp32.embed_documents([long_text]).vectors[0] @ reference.vectors[0]) > 0.9999
    strict = Embedder(str(onnx_pack("int8")), truncation="error")
    with pytest.raises(TextTooLong):
        strict.embed_documents(["short", long_text])


def test_matryoshka_slice_and_empty_input(onnx_int8_embedder: Embedder) -> None:
    small = Embedder(str(onnx_pack("int8")), dimensions=128, force_dimensions=True)
    v = small.embed_documents(["one", "two"]).vectors
    assert v.shape == (2, 128) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert onnx_int8_embedder.embed_documents([]).vectors.shape == (0, 384)
    # NUL bytes and lone surrogates are cleaned like on every backend
    odd = onnx_int8_embedder.embed_documents(["a\x00b", "c\ud800d"]).vectors
    assert np.isfinite(odd).all()


def test_an_index_the_pack_wrote_is_read_by_its_other_variants(
    onnx_int8_embedder: Embedder, st_embedder: Embedder, tmp_path: Path
) -> None:
    """Same model key: the fp32 model reading what ONNX int8 wrote is warned, not refused;
    `lokal search` loads the recorded pack itself."""
    paras = paragraphs()[:30]
    db = tmp_path / "index.db"
    with Index.create(db, onnx_int8_embedder.identity) as index:
        vectors = onnx_int8_embedder.embed_documents(paras).vectors
        index.upsert(
            [Chunk(t, metadata={"n": i}, id=f"c{i}") for i, t in enumerate(paras)], vectors
        )
    with pytest.warns(ModelVariantWarning, match="onnx int8"):
        reader = Index.open(db, st_embedder.identity)
    with reader:
        hits = reader.search(st_embedder.embed_query(paras[3][:80]), k=3)
        assert "c3" in [h.id for h in hits]
    # the recorded model is the pack outside the cache: the reader is told how to bring it
    home = tmp_path / "home"
    env = {**os.environ, "LOKAL_HOME": str(home)}
    missing = lokal("search", "--index", str(db), paras[3][:80], env=env)
    assert missing.returncode == 1 and "--format onnx --quantize int8" in missing.stderr
    (home / "models").mkdir(parents=True)
    shutil.copytree(onnx_pack("int8"), home / "models" / "all-MiniLM-L6-v2.onnx-int8")
    found = lokal("search", "--index", str(db), paras[3][:80], "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert "c3" in [h["id"] for h in json.loads(found.stdout)]


def test_auto_takes_the_int8_pack_where_the_cpu_has_int8_dot_products(tmp_path: Path) -> None:
    env = {**os.environ, "LOKAL_HOME": str(tmp_path)}
    (tmp_path / "models").mkdir()
    before = lokal("embed", "--json", "hello", env=env)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["backend"] != "onnx"
    shutil.copytree(onnx_pack("int8"), tmp_path / "models" / "all-MiniLM-L6-v2.onnx-int8")
    after = json.loads(lokal("embed", "--json", "hello", env=env).stdout)
    assert after["backend"] == (
        "onnx" if cpu.prefers_onnx() else json.loads(before.stdout)["backend"]
    )
    named = lokal("embed", "--json", "--backend", "onnx", "hello", env=env)
    assert (
        json.loads(named.stdout)["backend"] == "onnx"
        and json.loads(named.stdout)["quantization"] == "int8"
    )
    assert cpu.prefers_onnx({"avx2", "avx512_vnni"}) and not cpu.prefers_onnx({"avx2", "f16c"})


def test_the_man_page_set_scores_the_same_on_int8_and_fp32(manpages: Path) -> None:
    es = data.load(manpages)
    setups = [
        runner.Setup(model=str(onnx_pack("fp32")), backend="onnx", label="fp32"),
        runner.Setup(model=str(onnx_pack("int8")), backend="onnx", label="int8"),
    ]
    report = runner.evaluate(es, setups)
    ndcg = {r.label: r.metrics["ndcg@10"] for r in report.results}
    print(f"man pages nDCG@10: ONNX fp32 {ndcg['fp32']:.4f}, int8 {ndcg['int8']:.4f}")
    assert ndcg["fp32"] > 0.5 and abs(ndcg["int8"] - ndcg["fp32"]) <= 0.01


def test_a_cross_encoder_pack_scores_as_pytorch(tmp_path: Path) -> None:
    source = build_cross_encoder(tmp_path / "ce")
    packed = packing_onnx.pack(str(source), quantization="fp32", output=tmp_path / "ce.onnx-fp32")
    assert packed.manifest["kind"] == "reranker"
    query = "How do I add debugging assertions to my program?"
    docs = [*paragraphs()[:12], " ".join(paragraphs()[40:60])]
    torch_ranker = Reranker(str(source), backend="sentence-transformers")
    onnx_ranker = Reranker(str(packed.path))
    assert onnx_ranker.backend_name == "onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        want = torch_ranker.score(query, docs).scores
        got = onnx_ranker.score(query, docs).scores
        assert np.allclose(got, want, atol=1e-4), np.abs(got - want).max()
        short_want = torch_ranker.score(query, docs, max_document_tokens=32).scores
        short_got = onnx_ranker.score(query, docs, max_document_tokens=32).scores
    assert np.allclose(short_got, short_want, atol=1e-4)
    # a query longer than half the context is cut on its own side, on both
    long_query = " ".join(paragraphs()[70:80])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        a = onnx_ranker.score(long_query, docs[:3]).scores
        b = torch_ranker.score(long_query, docs[:3]).scores
    assert np.allclose(a, b, atol=1e-4)


def test_what_onnx_cannot_run_is_refused_clearly(tmp_path: Path) -> None:
    source = models.bundled_default_dir()
    assert source is not None
    # a Dense layer after the pooling: lokal's ONNX backend pools and stops there
    dense = tmp_path / "dense"
    shutil.copytree(source, dense)
    modules = json.loads((dense / "modules.json").read_text())
    modules.append(
        {"idx": 9, "name": "9", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ProfileError, match="Dense module"):
        packing_onnx.pack(str(dense), output=tmp_path / "out")
    # a decoder architecture stays on GGUF
    decoder = tmp_path / "decoder"
    decoder.mkdir()
    (decoder / "config.json").write_text(
        json.dumps({"model_type": "qwen3", "architectures": ["Qwen3Model"]})
    )
    with pytest.raises(ProfileError, match="GGUF backend"):
        packing_onnx.pack(str(decoder), output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    refused = lokal("models", "pack", str(decoder), "--format", "onnx", "-o", str(tmp_path / "o"))
    assert refused.returncode == 1 and "GGUF backend" in refused.stderr, refused.stderr
    assert "--quantize" not in refused.stderr and "Traceback" not in refused.stderr
    # the CLI says which options are wrong
    bad = lokal("models", "pack", "all-MiniLM-L6-v2", "--format", "onnx", "-q", "q4_0")
    assert bad.returncode == 2 and "int8, fp32" in bad.stderr
    cpu_flag = lokal("models", "pack", "all-MiniLM-L6-v2", "--cpu", "avx2")
    assert cpu_flag.returncode == 2 and "--format onnx" in cpu_flag.stderr
    # a damaged graph is a clear load error, not a crash
    broken = tmp_path / "broken.onnx-fp32"
    shutil.copytree(onnx_pack("fp32"), broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ModelLoadError, match="cannot load ONNX model"):
        Embedder(str(broken)).embed_query("x")
    with pytest.raises(ProfileError, match="needs backend='onnx'"):
        Embedder(str(broken), backend="gguf")


def test_without_onnxruntime_the_error_names_the_extra(tmp_path: Path) -> None:
    from .test_dependencies import _without

    env = _without(tmp_path, "onnxruntime")
    proc = lokal("embed", "--model", str(onnx_pack("int8")), "hello", env=env)
    assert proc.returncode == 1 and "lokal[onnx]" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
