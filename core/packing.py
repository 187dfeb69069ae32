"""Pack a Hugging Face / sentence-transformers model into a GGUF, and verify packed files.

``lokal models pack`` is how an operator prepares a model on a connected machine for an
air-gapped box, and how the default GGUF is made from the bundled MiniLM weights. A packed file
carries lokal's metadata (``lokal.*`` keys): the source weights' sha256 — so the GGUF and the
sentence-transformers model it came from share one model key — the profile, and the
quantization. Beside it, ``FILE.gguf.json`` is its manifest (size, sha256, source), which
``lokal models verify`` checks after the file has travelled.

Conversion runs llama.cpp's own converter (the ``convert`` extra) in a subprocess; other
quantizations than f16/q8_0 go through ``llama_model_quantize`` (the ``gguf`` extra).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal import gguf, models, profiles
from lokal.errors import IntegrityError, MissingDependency, ModelLoadError, ModelNotFound
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
    name = name or profile.name.rstrip("/").rsplit("/", 1)[-1]
    out = Path(output) if output else models.cached_gguf_path(name, quantization)
    out.parent.mkdir(parents=True, exist_ok=True)
    src_sha = models.weights_sha256(src_dir)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".lokal-pack-") as tmp:
        direct = quantization if quantization in CONVERTER_TYPES else "f16"
        converted = Path(tmp) / f"converted.{direct}.gguf"
        _convert(src_dir, converted, direct, name)
        tagged = Path(tmp) / "tagged.gguf"
        gguf.add_metadata(
            converted,
            tagged,
            {
                "lokal.name": name,
                "lokal.source": str(source),
                "lokal.source_sha256": src_sha,
                "lokal.quantization": quantization,
                "lokal.profile": json.dumps({**profile.to_dict(), "name": name}),
            },
        )
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
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        final.replace(out)
    models.manifest_path(out).write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("packed %s -> %s (%s, %d bytes)", source, out, quantization, manifest["size"])
    return Packed(out, manifest)


def _convert(src_dir: Path, dst: Path, outtype: str, name: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "convert_hf_to_gguf",
        str(src_dir),
        "--outtype",
        outtype,
        "--outfile",
        str(dst),
        "--model-name",
        name,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    if proc.returncode != 0 or not dst.is_file():
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
    size = model_file.stat().st_size
    if size != manifest.get("size"):
        msg = f"{model_file}: size {size} but the manifest says {manifest.get('size')}"
        raise IntegrityError(msg)
    digest = models.file_sha256(model_file, use_cache=False)
    if digest != manifest.get("sha256"):
        msg = f"{model_file}: sha256 {digest} but the manifest says {manifest.get('sha256')}"
        raise IntegrityError(msg)
    return manifest


def cached_models() -> list[Path]:
    d = models.models_dir()
    return sorted(d.glob("*.gguf")) if d.is_dir() else []
