"""Pack a model for ONNX Runtime: ``lokal models pack SOURCE --format onnx``.

An ONNX pack is a directory, ``NAME.onnx-int8`` (or ``.onnx-fp32``) in lokal's model cache:
the source's configuration files (``config.json``, ``modules.json``, the pooling config, the
model card, the tokenizer — so lokal reads the pack's profile and kind exactly as it reads the
source's), the transformer exported to ``model.onnx`` (torch's ``torch.export``-based ONNX
exporter, opset 18), the tokenizer as one ``tokenizer.json`` (the ``tokenizers`` library runs it,
no transformers at run time), and ``lokal-onnx.json``: its manifest — name, kind, quantization,
the CPU the int8 weights were made for, the source weights' sha256 (so the pack and its source
share one model key), the parity measured at pack time, and every file's size and sha256, which
``lokal models verify`` checks after the directory has travelled.

``int8`` is ONNX Runtime's dynamic quantization (``quantize_dynamic``) of the MatMul weights,
per output channel, int8: measured on all-MiniLM-L6-v2, per-tensor weights kept a mean cosine of
0.948 to the fp32 export, per-channel 0.994 (docs/benchmarks.md). ``--cpu avx2`` also reduces
the weights to 7 bits: AVX2 without VNNI multiplies uint8 by int8 into saturating int16 sums,
which full-range weights can overflow (ONNX Runtime's own advice for such CPUs).

Only encoders (BERT, RoBERTa, XLM-R, MPNet, ModernBERT...) are packed: decoder embedders and
rerankers (Qwen3, Gemma) stay on GGUF. Pooling and normalization stay lokal's (the profile's
pooling, numpy), so Dense layers after the pooling and a pooling that leaves the prompt out are
refused. Exporting needs the ``onnx-export`` extra (torch, transformers, onnx, onnxscript).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lokal import cpu, models, profiles
from lokal.errors import MissingDependency, ModelLoadError, ProfileError
from lokal.packing import Packed, _reranker_profile, _source_dir, check_file

log = logging.getLogger(__name__)

MANIFEST = "lokal-onnx.json"
MANIFEST_FORMAT = 1
MODEL_FILE = "model.onnx"
QUANTIZATIONS = ("int8", "fp32")
CPUS = ("avx512_vnni", "avx2", "arm64")
#: config.json model types whose export lokal has compared with sentence-transformers.
ENCODERS = (
    "bert",
    "distilbert",
    "roberta",
    "xlm-roberta",
    "mpnet",
    "modernbert",
    "electra",
    "deberta-v2",
)
POOLINGS = ("mean", "cls", "lasttoken")
_POOLING_KEYS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "lasttoken": "pooling_mode_lasttoken",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
}
#: The least cosine to the PyTorch model an fp32 export may have (else the pack is refused).
FP32_PARITY = 0.9999
#: ... and an int8 export (it measured a mean of 0.994 on all-MiniLM-L6-v2).
INT8_PARITY = 0.95
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf", ".h5", ".msgpack", ".ot")
_SKIPPED_DIRS = {"onnx", "openvino", ".git", ".cache"}
_PARITY_TEXTS = (
    "How do I reset the pump after a pressure fault?",
    "The valve closes when the float switch trips; open it by hand only after draining.",
    "Zürich, São Paulo and Kraków: café opening hours 7-19 h.",
    "x = 1 + 2  # numbers and symbols {}[]()",
    "a",
)


def cached_path(name: str, quantization: str) -> Path:
    """Where ``lokal models pack NAME --format onnx --quantize Q`` puts its output."""
    return models.models_dir() / f"{name}.onnx-{quantization}"


def is_pack(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(pack_dir: Path) -> dict[str, Any]:
    from lokal.errors import IntegrityError

    try:
        data = json.loads((pack_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        msg = f"{pack_dir}: cannot read its ONNX manifest {MANIFEST}: {exc}"
        raise IntegrityError(msg) from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        msg = f"{pack_dir / MANIFEST} is not a lokal ONNX manifest"
        raise IntegrityError(msg)
    return data


def verify(pack_dir: Path) -> dict[str, Any]:
    """Check every file of a pack against its manifest (size, then sha256)."""
    from lokal.errors import IntegrityError

    manifest = read_manifest(pack_dir)
    for rel, want in sorted(manifest["files"].items()):
        path = pack_dir / rel
        if not path.is_file():
            msg = f"{pack_dir}: {rel} is missing (the manifest lists it)"
            raise IntegrityError(msg)
        check_file(path, want)
    return manifest


def cached_packs() -> list[Path]:
    d = models.models_dir()
    return sorted(p for p in d.glob("*.onnx-*") if is_pack(p)) if d.is_dir() else []


def default_cpu(flags: set[str] | None = None, machine: str | None = None) -> str:
    """This machine's ``--cpu`` preset: arm64; avx512_vnni with int8 dot products; else avx2."""
    import platform

    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu.cpu_flags() if flags is None else flags
    return "avx512_vnni" if {"avx512_vnni", "avx_vnni"} & flags else "avx2"


def pack(
    source: str,
    *,
    quantization: str = "int8",
    cpu_preset: str | None = None,
    output: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> Packed:
    """Export ``source`` (a directory or hub id) to an ONNX pack; see the module docstring."""
    if quantization not in QUANTIZATIONS:
        msg = f"unknown ONNX quantization {quantization!r}; choose from {', '.join(QUANTIZATIONS)}"
        raise ValueError(msg)
    preset = cpu_preset or default_cpu()
    if preset not in CPUS:
        msg = f"unknown --cpu {preset!r}; choose from {', '.join(CPUS)}"
        raise ValueError(msg)
    for module in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "tokenizers"):
        if not models.has_module(module):
            raise MissingDependency(extra="onnx-export", feature="lokal models pack --format onnx")
    src_dir, known_name = _source_dir(source)
    profile = profiles.from_sentence_transformers_dir(src_dir, name=known_name)
    reranker = _reranker_profile(src_dir, known_name)
    name = name or (reranker or profile).name.rstrip("/").rsplit("/", 1)[-1]
    _check_exportable(src_dir, name, reranker is not None)
    out = Path(output) if output else cached_path(name, quantization)
    out.parent.mkdir(parents=True, exist_ok=True)
    src_sha = models.weights_sha256(src_dir)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".lokal-pack-") as tmp:
        stage = Path(tmp) / "pack"
        _copy_configs(src_dir, stage)
        torch_model, tokenizer = _load_torch(src_dir, reranker is not None)
        tokenizer.save_pretrained(str(stage))
        exported = Path(tmp) / "fp32.onnx"
        inputs = _export(torch_model, tokenizer, exported, reranker is not None)
        if quantization == "int8":
            _quantize(exported, stage / MODEL_FILE, preset)
        else:
            shutil.move(str(exported), stage / MODEL_FILE)
        parity = _parity(torch_model, tokenizer, stage / MODEL_FILE, inputs, reranker is not None)
        floor = FP32_PARITY if quantization == "fp32" else INT8_PARITY
        if parity["min_cosine"] < floor:
            msg = (
                f"cannot pack {name} as ONNX {quantization}: its output differs from PyTorch's "
                f"(least cosine {parity['min_cosine']:.4f} < {floor}); use the GGUF or "
                "sentence-transformers backend"
            )
            raise ModelLoadError(msg)
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "kind": "reranker" if reranker is not None else "embed",
            "quantization": quantization,
            "cpu": preset if quantization == "int8" else None,
            "inputs": inputs,
            "output": "logits" if reranker is not None else "last_hidden_state",
            "source": str(source),
            "source_sha256": src_sha,
            "profile": {**profile.to_dict(), "name": name},
            "parity": parity,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "files": _file_table(stage),
        }
        if reranker is not None:
            manifest["reranker"] = {**reranker.to_dict(), "name": name}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(stage, out, Path(tmp))
    log.info(
        "packed %s -> %s (ONNX %s, least cosine to PyTorch %.4f)",
        source,
        out,
        quantization,
        parity["min_cosine"],
    )
    return Packed(out, manifest)


def _check_exportable(src_dir: Path, name: str, is_reranker: bool) -> None:
    from lokal.architectures import modules_of
    from lokal.profiles.sources import read_object

    config = read_object(src_dir / "config.json")
    model_type = str(config.get("model_type", ""))
    if model_type not in ENCODERS:
        msg = (
            f"cannot pack {name} as ONNX: its architecture ({model_type or 'unknown'}) is not an "
            f"encoder lokal exports ({', '.join(ENCODERS)}); decoder models (Qwen3, Gemma...) "
            "run on the GGUF backend: lokal models pack SOURCE"
        )
        raise ProfileError(msg)
    if is_reranker:
        return
    for module in modules_of(src_dir):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = src_dir / str(module.get("path", ""))
        if kind == "Pooling":
            cfg = read_object(where / "config.json")
            chosen = [mode for mode, key in _POOLING_KEYS.items() if cfg.get(key)]
            if not chosen and isinstance(cfg.get("pooling_mode"), str):
                chosen = [cfg["pooling_mode"]]
            if len(chosen) != 1 or chosen[0] not in POOLINGS or cfg.get("include_prompt") is False:
                msg = (
                    f"cannot pack {name} as ONNX: its pooling ({where.name}/config.json: "
                    f"{' + '.join(chosen) or 'none'}) is not one of {', '.join(POOLINGS)} over "
                    "every token; use the sentence-transformers backend"
                )
                raise ProfileError(msg)
        elif kind not in ("Transformer", "Normalize"):
            msg = (
                f"cannot pack {name} as ONNX: it has a {kind} module ({where.name}) that lokal's "
                "ONNX backend does not apply; use the sentence-transformers or GGUF backend"
            )
            raise ProfileError(msg)


def _copy_configs(src_dir: Path, stage: Path) -> None:
    """Every file of the source but its weights (configs, card, tokenizer files)."""
    for path in sorted(src_dir.rglob("*")):
        rel = path.relative_to(src_dir)
        if (
            not path.is_file()
            or set(rel.parts[:-1]) & _SKIPPED_DIRS
            or path.suffix.lower() in _WEIGHTS
            or path.stat().st_size > 64 << 20
        ):
            continue
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _load_torch(src_dir: Path, is_reranker: bool) -> tuple[Any, Any]:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(src_dir))
    if not getattr(tokenizer, "is_fast", False):
        msg = f"{src_dir}: its tokenizer has no fast (tokenizers library) form to export"
        raise ProfileError(msg)
    cls = transformers.AutoModelForSequenceClassification if is_reranker else transformers.AutoModel
    hf_logging: Any = transformers.utils.logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # eager attention: the exported graph computes what the padding mask says, at any shape
        model = cls.from_pretrained(str(src_dir), attn_implementation="eager").eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return model, tokenizer


def _forward_inputs(model: Any) -> list[str]:
    import inspect

    names = inspect.signature(model.forward).parameters
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def _export(model: Any, tokenizer: Any, target: Path, is_reranker: bool) -> list[str]:
    """The model's forward pass as ONNX with dynamic batch and sequence axes; returns the
    graph's input names."""
    import torch

    inputs = _forward_inputs(model)
    if inputs[:2] != ["input_ids", "attention_mask"]:
        msg = f"cannot export {type(model).__name__}: its forward takes {inputs}"
        raise ProfileError(msg)
    output = "logits" if is_reranker else "last_hidden_state"

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
            named = {n: given[n] for n in inputs if n != "input_ids"}
            return getattr(self.model(input_ids=input_ids, **named), output)

    sample = tokenizer(
        ["a first example sentence", "a second, longer example sentence for the export"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(
        sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in inputs
    )
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    exporter_log = logging.getLogger("torch.onnx")  # "torchvision is not installed" and such
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.ExitStack() as stack,
    ):
        stack.callback(exporter_log.setLevel, level)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Graph(),
            args,
            str(target),
            input_names=inputs,
            output_names=[output],
            dynamic_shapes={n: {0: batch, 1: seq} for n in inputs},
            opset_version=18,
            dynamo=True,
            external_data=False,
        )
    return inputs


def _quantize(src: Path, dst: Path, preset: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ONNX Runtime's advice to pre-process, on the root logger
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=["MatMul", "Gemm", "Gather"],
            per_channel=True,
            reduce_range=preset == "avx2",
            weight_type=QuantType.QInt8,
        )
    finally:
        root.setLevel(level)


def _parity(
    model: Any, tokenizer: Any, onnx_file: Path, inputs: list[str], is_reranker: bool
) -> dict[str, float]:
    """The exported graph against PyTorch on a few sentences: least and mean cosine of the
    pooled (mean) states, or for a reranker the largest logit difference."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    texts = list(_PARITY_TEXTS)
    batch = tokenizer(texts, padding=True, return_tensors="np")
    feed = {
        n: batch[n].astype(np.int64) if n in batch else np.zeros_like(batch["input_ids"])
        for n in inputs
    }
    got = session.run(None, feed)[0]
    with torch.no_grad():
        result = model(**{n: torch.from_numpy(v) for n, v in feed.items()})
    if is_reranker:
        want = result.logits.numpy()
        diff = float(np.abs(got - want).max())
        scale = float(np.abs(want).max()) or 1.0
        return {
            "min_cosine": 1.0 - diff / scale,
            "mean_cosine": 1.0 - diff / scale,
            "max_logit_diff": diff,
        }
    mask = feed["attention_mask"][..., None].astype(np.float32)
    want = result.last_hidden_state.numpy()
    a = (got * mask).sum(1) / mask.sum(1)
    b = (want * mask).sum(1) / mask.sum(1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def _file_table(stage: Path) -> dict[str, dict[str, Any]]:
    return {
        str(p.relative_to(stage)): {
            "size": p.stat().st_size,
            "sha256": models.file_sha256(p, use_cache=False),
        }
        for p in sorted(stage.rglob("*"))
        if p.is_file()
    }


def _replace_dir(stage: Path, out: Path, tmp: Path) -> None:
    """Move the finished pack into place; an older pack of that name is replaced whole."""
    if out.exists():
        if not is_pack(out):
            msg = f"{out} exists and is not a lokal ONNX pack; not replacing it"
            raise ProfileError(msg)
        old = tmp / "old"
        out.rename(old)
    stage.rename(out)
