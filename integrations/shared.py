"""What the LangChain and LlamaIndex adapters share: one definition of the embedder and
reranker settings (pydantic fields with their documentation), how those settings become a
core :class:`~lokal.Embedder` / :class:`~lokal.Reranker`, and the identity recorded for an
embedding model lokal does not load itself.

Each framework's adapter adds only what its framework names differently (LangChain's
``batch_size``, LlamaIndex's ``embed_batch_size``; each one's ``top_n`` default).

The vector stores' plumbing that does not depend on the framework is here too:
:class:`HandleOwner` (the file stores' :class:`~lokal.index.IndexHandle`) and
:class:`CentralOwner` (the central stores' :class:`~lokal.central.store.CentralIndex`),
each giving the framework's store methods (``langchain_store``, ``llama_index_store``) the
one target they read from (``_reading``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import BaseModel, Field, model_validator
from typing_extensions import Self

from lokal.embedder import Embedder
from lokal.errors import IndexReadOnly
from lokal.identity import ModelIdentity
from lokal.index import Index, IndexHandle
from lokal.loading import TruncationPolicy
from lokal.reranker import Reranker
from lokal.retrieval import DOCUMENT_TOKENS

if TYPE_CHECKING:
    from lokal.central.store import CentralIndex

TRUST_REMOTE_CODE = (
    "Let sentence-transformers run Python code the model ships (its config's auto_map; "
    "Nomic needs it). Off unless asked; read the code first."
)

#: The validation-context key under which an adapter is handed an Embedder already built
#: (the recorded model of an index file, resolved once).
EMBEDDER_CONTEXT = "lokal_embedder"


#: ``model_kwargs`` keys (sentence-transformers' constructor, as HuggingFaceEmbeddings,
#: HuggingFaceEmbedding and HuggingFaceCrossEncoder pass them) -> lokal's field of the same
#: meaning. Any other key is refused by name.
MODEL_KWARGS = {"device": "device", "trust_remote_code": "trust_remote_code"}


def _put(data: dict[str, Any], field: str, value: Any, given_as: str) -> None:
    """Set ``field`` from a framework's name for it (``given_as``); the same setting given
    twice with two different values is an error naming both."""
    if field in data and data[field] is not None and data[field] != value:
        msg = f"{given_as}={value!r} and {field}={data[field]!r} name the same setting; pass one"
        raise ValueError(msg)
    data[field] = value


def _fold_model_kwargs(data: dict[str, Any]) -> None:
    model_kwargs = data.pop("model_kwargs", None) or {}
    if not isinstance(model_kwargs, Mapping):
        msg = f"model_kwargs must be a dict, got {type(model_kwargs).__name__}"
        raise ValueError(msg)  # pydantic reports a ValueError as a ValidationError
    for key, value in model_kwargs.items():
        if key not in MODEL_KWARGS:
            msg = (
                f"model_kwargs[{key!r}] has no lokal equivalent (lokal takes "
                f"{', '.join(MODEL_KWARGS)} there); see the adapter's own fields"
            )
            raise ValueError(msg)
        _put(data, MODEL_KWARGS[key], value, f"model_kwargs[{key!r}]")


def _fold_model_name(data: dict[str, Any], keep: bool) -> None:
    """``model_name`` (what HuggingFace* users write) as an alias of ``model``. ``keep``: the
    framework declares ``model_name`` itself (LlamaIndex), so it stays set as well."""
    name = data.get("model_name") if keep else data.pop("model_name", None)
    if name is None:
        return
    model = data.get("model")
    if model is not None and str(model) != str(name):
        msg = (
            f"model={model!r} and model_name={name!r} name two different models; "
            "model_name is an alias of model: pass one"
        )
        raise ValueError(msg)
    data["model"] = name


class FrameworkNames(BaseModel):
    """Accepts the names HuggingFace* users write for lokal's settings: ``model_name`` for
    ``model`` and ``model_kwargs`` (:data:`MODEL_KWARGS`); refuses what has no equivalent."""

    @model_validator(mode="before")
    @classmethod
    def _framework_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        _fold_model_name(data, keep="model_name" in cls.model_fields)
        _fold_model_kwargs(data)
        cls._fold_more(data)
        return data

    @classmethod
    def _fold_more(cls, data: dict[str, Any]) -> None:
        """Further framework names a settings class takes (in place)."""


#: ``encode_kwargs`` keys (sentence-transformers' ``encode``) -> lokal's field. ``prompt`` is
#: applied to documents, and to queries unless ``query_encode_kwargs`` names their own, as
#: HuggingFaceEmbeddings does.
ENCODE_KWARGS = {
    "normalize_embeddings": "normalize",
    "batch_size": "batch_size",
    "prompt": "document_prefix",
}
#: Why an ``encode_kwargs`` key lokal does not take is refused.
_ENCODE_REFUSED = {
    "prompt_name": "lokal applies the model's own query and document prompts itself; "
    "override them with query_prefix / document_prefix",
}


class EmbedderSettings(FrameworkNames):
    """The settings of a local embedding model, as pydantic fields (see :class:`lokal.Embedder`).

    Also accepted as HuggingFaceEmbeddings / HuggingFaceEmbedding users write them, and
    refused by name where lokal has no equivalent: ``model_name`` (an alias of ``model``),
    ``model_kwargs`` (:data:`MODEL_KWARGS`), ``encode_kwargs`` and ``query_encode_kwargs``
    (:data:`ENCODE_KWARGS`).
    """

    #: The adapter's name of its batch-size field.
    BATCH_FIELD: ClassVar[str] = "batch_size"

    model: str | None = Field(
        None,
        description="None for the embedded default (all-MiniLM-L6-v2), a .gguf path, a "
        "sentence-transformers directory, a name in lokal's model cache, or a hub id.",
    )
    backend: str = Field("auto", description='"auto", "sentence-transformers", "gguf" or "onnx".')
    query_prefix: str | None = Field(
        None, description="Override the profile's query prefix; '' disables it."
    )
    document_prefix: str | None = Field(
        None, description="Override the profile's document prefix; '' disables it."
    )
    truncation: str = Field(
        "warn", description='Texts longer than the context: "warn" (cut, warn) or "error".'
    )
    normalize: bool = Field(True, description="L2-normalize the vectors.")
    dimensions: int | None = Field(
        None, gt=0, description="Matryoshka output dimension (one the profile lists)."
    )
    force_dimensions: bool = Field(False, description="Allow any dimensions (quality may drop).")
    device: str | None = Field(None, description='torch device, e.g. "cpu", "cuda", "mps".')
    trust_remote_code: bool = Field(False, description=TRUST_REMOTE_CODE)
    n_gpu_layers: int = Field(0, ge=0, description="Layers offloaded to a GPU (llama.cpp).")
    n_threads: int | None = Field(None, gt=0, description="CPU threads for llama.cpp.")
    profile: dict[str, Any] | None = Field(
        None, description="Overrides for any profile field, e.g. {'context_length': 512}."
    )
    allow_unknown_prefixes: bool = Field(
        False,
        description="Embed queries of an unknown model whose card or config asks for a query "
        "prefix lokal cannot map, without it (default: refuse until query_prefix is set).",
    )

    @classmethod
    def _fold_more(cls, data: dict[str, Any]) -> None:
        if cls.BATCH_FIELD != "batch_size" and "batch_size" in data:
            _put(data, cls.BATCH_FIELD, data.pop("batch_size"), "batch_size")
        query_kwargs = dict(data.pop("query_encode_kwargs", None) or {})
        encode_kwargs = dict(data.pop("encode_kwargs", None) or {})
        if "prompt" in encode_kwargs and "prompt" not in query_kwargs:
            _put(data, "query_prefix", encode_kwargs["prompt"], "encode_kwargs['prompt']")
        for where, kwargs in (
            ("query_encode_kwargs", query_kwargs),
            ("encode_kwargs", encode_kwargs),
        ):
            for key, value in kwargs.items():
                field = ENCODE_KWARGS.get(key)
                if field is None:
                    why = _ENCODE_REFUSED.get(key, f"lokal takes {', '.join(ENCODE_KWARGS)} there")
                    msg = f"{where}[{key!r}] has no lokal equivalent: {why}"
                    raise ValueError(msg)
                if where == "query_encode_kwargs" and field == "document_prefix":
                    field = "query_prefix"
                elif field == "batch_size":
                    field = cls.BATCH_FIELD
                _put(data, field, value, f"{where}[{key!r}]")

    @classmethod
    def fields_of(cls, embedder: Embedder) -> dict[str, Any]:
        """The field values that describe a core Embedder already built."""
        r = embedder.resolved
        return {
            "model": str(r.path) if r.path is not None else r.name,
            "backend": r.backend,
            "query_prefix": embedder.profile.query_prefix,
            "document_prefix": embedder.profile.document_prefix,
            "truncation": embedder.truncation,
            "normalize": embedder.normalize,
            "dimensions": embedder.dimensions,
            "force_dimensions": embedder.dimensions is not None,
            "trust_remote_code": embedder.trust_remote_code,
            cls.BATCH_FIELD: embedder.batch_size,
        }

    def make_embedder(self, batch_size: int, context: Any = None) -> Embedder:
        """The core Embedder these settings describe (or the one handed over in the
        validation context, see :data:`EMBEDDER_CONTEXT`)."""
        given = context.get(EMBEDDER_CONTEXT) if isinstance(context, dict) else None
        if isinstance(given, Embedder):
            return given
        return Embedder(
            self.model,
            backend=self.backend,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            truncation=cast(TruncationPolicy, self.truncation),
            normalize=self.normalize,
            dimensions=self.dimensions,
            force_dimensions=self.force_dimensions,
            batch_size=batch_size,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            n_gpu_layers=self.n_gpu_layers,
            n_threads=self.n_threads,
            profile=self.profile,
            allow_unknown_prefixes=self.allow_unknown_prefixes,
        )


class RerankerSettings(FrameworkNames):
    """The settings of a local cross-encoder, as pydantic fields (see :class:`lokal.Reranker`).
    ``model_name`` (HuggingFaceCrossEncoder's name) is an alias of ``model``; ``model_kwargs``
    takes :data:`MODEL_KWARGS`."""

    model: str = Field(
        description="A cross-encoder directory, a packed .gguf, a name in lokal's model "
        "cache, or a hub id (offline first)."
    )
    backend: str = Field("auto", description='"auto", "sentence-transformers", "gguf" or "onnx".')
    truncation: str = Field(
        "warn", description='Pairs longer than the context: "warn" (cut the document) or "error".'
    )
    batch_size: int = Field(32, gt=0, description="Pairs per forward pass / sequences per decode.")
    device: str | None = Field(None, description='torch device, e.g. "cpu", "cuda", "mps".')
    trust_remote_code: bool = Field(False, description=TRUST_REMOTE_CODE)
    n_gpu_layers: int = Field(0, ge=0, description="Layers offloaded to a GPU (llama.cpp).")
    n_threads: int | None = Field(None, gt=0, description="CPU threads for llama.cpp.")
    profile: dict[str, Any] | None = Field(
        None, description="Overrides: {'context_length': 512, 'activation': 'identity'}."
    )
    max_document_tokens: int | None = Field(
        DOCUMENT_TOKENS,
        gt=0,
        description="Tokens of each document the reranker reads (a MiniLM-size cross-encoder's "
        "CPU budget, as lokal search --rerank); None: all that fit its context.",
    )

    def make_reranker(self) -> Reranker:
        """The core Reranker these settings describe."""
        return Reranker(
            self.model,
            backend=self.backend,
            truncation=cast(TruncationPolicy, self.truncation),
            batch_size=self.batch_size,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            n_gpu_layers=self.n_gpu_layers,
            n_threads=self.n_threads,
            profile=self.profile,
        )


def external_identity(
    framework: str,
    embedding: object,
    dimension: int,
    attributes: Sequence[str] = ("model_name", "model"),
    placeholder: str | None = None,
) -> ModelIdentity:
    """The identity lokal records for vectors from a framework's embedding object it does not
    load itself: its class, its model name (the first of ``attributes`` set to a non-empty
    string other than the framework's ``placeholder``) and the dimension."""
    names = (getattr(embedding, attr, None) for attr in attributes)
    model_name = next((n for n in names if isinstance(n, str) and n and n != placeholder), None)
    return ModelIdentity.external(framework, type(embedding).__name__, model_name, dimension)


def vectors_as_lists(vectors: Any) -> list[list[float]]:
    """A float32 matrix as the lists of floats the frameworks' interfaces return."""
    out: list[list[float]] = vectors.tolist()
    return out


class HandleOwner:
    """What both vector stores do with their :class:`~lokal.index.IndexHandle` (``_handle``):
    its lock, its open index, closing it, and the context-manager protocol."""

    _handle: IndexHandle

    @property
    def _lock(self) -> Any:
        return self._handle.lock

    @property
    def _index(self) -> Index | None:
        return self._handle.index

    @contextmanager
    def _reading(self) -> Iterator[Index | None]:
        """The open index (None while there is no file), the lock held: a first write may
        swap in a writable connection."""
        with self._lock:
            yield self._handle.reader()

    def close(self) -> None:
        """Close the index file (the store cannot be used afterwards)."""
        self._handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def central_settings(
    url: str, *, schema: str, password_file: str | None, password_env: str | None
) -> dict[str, Any]:
    """The :class:`EmbedderSettings` of the model a central collection records."""
    from lokal.central.reader import describe, recorded_identity
    from lokal.embedder import options_for

    identity = recorded_identity(
        url, schema=schema, password_file=password_file, password_env=password_env
    )
    return options_for(identity, describe(url))


class CentralOwner:
    """What both central stores do with their :class:`~lokal.central.store.CentralIndex`
    (``_central``): open it checked against the store's model (``_identity``), read from it,
    the write site, closing it, the context-manager protocol and the repr."""

    if TYPE_CHECKING:
        _central: CentralIndex
        write_site: str | None

    def _identity(self) -> ModelIdentity:
        raise NotImplementedError

    def _open_central(
        self,
        url: str,
        *,
        schema: str,
        site: str | Sequence[str] | None,
        password_file: str | None,
        password_env: str | None,
    ) -> None:
        from lokal.central.store import CentralIndex

        self._central = CentralIndex.open(
            url, schema=schema, site=site, password_file=password_file, password_env=password_env
        )
        try:
            self._central.check_identity(self._identity())
        except BaseException:
            self._central.close()
            raise

    @contextmanager
    def _reading(self) -> Iterator[CentralIndex]:
        yield self._central

    def _site(self) -> str:
        if self.write_site is None:
            msg = "this LokalCentralVectorStore is read-only (write_site=None)"
            raise IndexReadOnly(msg)
        return self.write_site

    def close(self) -> None:
        self._central.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LokalCentralVectorStore({self._central!r}, write_site={self.write_site!r})"
