"""Model identity: which vectors can be compared with which.

Two parts, recorded by every index:

- the **model key** — source weights (sha256), pooling, normalization, output dimension and
  document prefix. Vectors with the same key live in the same space: a query embedded under
  one key can search documents embedded under the same key.
- the **variant** — backend, quantization, the loaded file's sha256 and the query prefix. Two
  variants of one key (the sentence-transformers fp32 model and the q8_0 GGUF packed from the
  same weights) give nearly the same vectors, not identical ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

KEY_FIELDS = ("source_sha256", "pooling", "normalize", "dimension", "document_prefix")
VARIANT_FIELDS = ("backend", "quantization", "file_sha256", "query_prefix")


def _digest(fields: dict[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    source_sha256: str
    pooling: str | None
    normalize: bool
    dimension: int
    document_prefix: str
    backend: str
    quantization: str
    file_sha256: str
    query_prefix: str

    @property
    def key(self) -> str:
        """Digest of the model key fields: equal keys mean comparable vectors."""
        return _digest({f: getattr(self, f) for f in KEY_FIELDS})

    @property
    def variant(self) -> str:
        return _digest({f: getattr(self, f) for f in VARIANT_FIELDS})

    @classmethod
    def external(
        cls, framework: str, class_name: str, model_name: str | None, dimension: int
    ) -> ModelIdentity:
        """The identity of another framework's embedding object (a LangChain ``Embeddings``, a
        LlamaIndex ``BaseEmbedding``): all lokal can know is its class, model name and
        dimension, so those make the key, and the variant equals the key."""
        name = model_name or class_name
        source = hashlib.sha256(f"{framework}:{class_name}:{name}".encode()).hexdigest()
        return cls(
            name=name,
            source_sha256=source,
            pooling=None,
            normalize=False,
            dimension=dimension,
            document_prefix="",
            backend=f"{framework}:{class_name}",
            quantization="unknown",
            file_sha256=source,
            query_prefix="",
        )

    def compare(self, other: ModelIdentity) -> Literal["same", "variant", "different"]:
        if self.key != other.key:
            return "different"
        return "same" if self.variant == other.variant else "variant"

    def describe(self) -> str:
        variant = f"{self.backend} {self.quantization}"
        return f"{self.name} ({variant}, {self.dimension} dims, key {self.key[:12]})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key, "variant": self.variant}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})
