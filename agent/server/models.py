"""A served model: its names, what the listings show of it, its parameter count."""

from __future__ import annotations

import json
import logging
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from lokal import catalog, gguf
from lokal.errors import (
    LokalError,
    ModelNotFound,
    ProfileError,
)

log = logging.getLogger(__name__)


@dataclass
class Served:
    """A loaded model and the names clients may call it by (the first is shown in listings)."""

    model: Any  # Embedder or Reranker
    names: tuple[str, ...]
    kind: Literal["embedding", "rerank"]
    _dims: dict[int, int | None] = field(default_factory=dict)
    _facts: dict[str, Any] | None = None

    @classmethod
    def of(cls, model: Any, aliases: Sequence[str], kind: Literal["embedding", "rerank"]) -> Served:
        r = model.resolved
        found = [*aliases, model.profile.name, model.profile.name.rsplit("/", 1)[-1], r.name]
        if r.path is not None and r.path.is_file():
            found.append(r.path.name.removesuffix(".gguf"))
        names = tuple(dict.fromkeys(n for n in found if n))
        return cls(model, names, kind)

    @property
    def name(self) -> str:
        return self.names[0]

    def matches(self, requested: str) -> bool:
        """``requested`` is one of this model's names, or Ollama's name for it
        (``all-minilm`` for all-MiniLM-L6-v2: :func:`lokal.catalog.ollama_hub_id`)."""
        wanted = {bare_name(requested).casefold()}
        try:
            hub_id = catalog.ollama_hub_id(requested)
        except ModelNotFound:  # an Ollama name with a tag Ollama does not have
            hub_id = None
        if hub_id is not None:
            wanted |= {hub_id.casefold(), hub_id.rsplit("/", 1)[-1].casefold()}
        return any(bare_name(n).casefold() in wanted for n in self.names)

    def check_dimensions(self, dimensions: int, force: bool) -> int | None:
        """The output size to slice to (None: the native size), by the core's rule."""
        if dimensions not in self._dims:
            # Embedder's own rule: a Matryoshka size the profile lists, or force
            try:
                self._dims[dimensions] = self.model.check_dimensions(dimensions, force)
            except ProfileError as exc:
                hint = "" if force else " (for lokal serve: start it with --force-dimensions)"
                msg = f"{exc}{hint}"
                raise ProfileError(msg) from exc
        return self._dims[dimensions]

    def describe(self) -> dict[str, Any]:
        r = self.model.resolved
        path = r.path
        is_file = path is not None and path.is_file()
        mtime = path.stat().st_mtime if path is not None else time.time()
        return {
            "name": self.name,
            "kind": self.kind,
            "backend": r.backend,
            "quantization": r.quantization,
            "family": getattr(self.model.profile, "family", ""),
            "size": path.stat().st_size if is_file and path else 0,
            "modified_at": datetime.fromtimestamp(mtime, tz=timezone.utc).isoformat(),
            "created": int(mtime),
            "aliases": list(self.names[1:]),
        }

    def facts(self) -> dict[str, Any]:
        """What the model's files say (read once; call on a thread): ``architecture`` (the
        GGUF's ``general.architecture``, or ``model_type`` in config.json) and
        ``parameter_count`` (tensor shapes in the GGUF or the safetensors headers; None when
        unknown)."""
        if self._facts is None:
            path = self.model.resolved.path
            arch, count = None, None
            if path is not None and path.is_file():
                arch = gguf.read_metadata(path).get("general.architecture")
                count = gguf_parameters(path)
            elif path is not None and path.is_dir():
                arch = json_field(path / "config.json", "model_type")
                count = safetensors_parameters(path)
            family = getattr(self.model.profile, "family", "") or "unknown"
            self._facts = {
                "architecture": str(arch or family),
                "parameter_count": count,
            }
        return self._facts


def gguf_parameters(path: Path) -> int | None:
    try:
        return gguf.parameter_count(path)
    except (OSError, LokalError, ValueError) as exc:
        log.warning("%s: cannot count parameters: %s", path, exc)
        return None


def safetensors_parameters(directory: Path) -> int | None:
    """Parameters in the ``*.safetensors`` files of a model directory, from their JSON headers
    (an 8-byte little-endian length, then the header; no weights are read)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for f in files:
            with f.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > 100 * 1024 * 1024:
                    return None
                header = json.loads(fh.read(size))
            total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        log.warning("%s: cannot count parameters: %s", directory, exc)
        return None
    return total


def json_field(path: Path, key: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def human_count(n: int | None) -> str:
    """A parameter count as Ollama shows one: 22.6M, 7.2B ("" when unknown)."""
    if not n:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def bare_name(name: str) -> str:
    """Ollama's default tag is implied: ``all-minilm:latest`` is ``all-minilm``."""
    return name.removesuffix(":latest")
