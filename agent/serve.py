"""``lokal serve``: local embeddings, reranking and search over HTTP, in the shapes that existing
tools already speak, so a program in any language can use lokal by changing only a URL.

- Ollama: ``POST /api/embed`` (``input``, ``truncate``, ``dimensions``), ``POST /api/embeddings``
  (``prompt``), ``GET /api/tags``, ``POST /api/show`` (details, ``model_info`` with the
  architecture's ``embedding_length`` and ``context_length``, capabilities ``["embedding"]``),
  ``GET /api/ps`` (the loaded model, never unloaded), ``GET /api/version`` (lokal's version).
  Errors are ``{"error": "..."}``; another model name gets Ollama's own ``model "x" not found,
  try pulling it first`` (404; ``model 'x' not found`` from ``/api/show``, as Ollama says it).
- OpenAI: ``POST /v1/embeddings`` (text or a list of texts; token arrays are refused with a
  clear error; ``dimensions``; ``encoding_format`` ``float`` or ``base64``), ``GET /v1/models``.
  Errors are ``{"error": {"message", "type", "param", "code"}}``.
- Cohere: ``POST /v1/embed`` and ``POST /v2/embed`` (``texts``, ``input_type``,
  ``embedding_types`` float, base64, binary or ubinary, ``truncate`` END or NONE,
  ``output_dimension``), ``POST /v1/rerank`` and ``POST /v2/rerank`` (``model``, ``query``,
  ``documents``, ``top_n``, ``return_documents``, ``max_tokens_per_doc``). Errors are
  ``{"message": "..."}``.
- lokal: ``POST /v1/search`` over a lokal index (``query``, ``k``, ``filter``, ``hybrid``,
  ``rerank``), ``GET /v1/status`` (request and model-call counters), ``GET /health``.

Prefixes come from the model's profile. The embedding APIs take an extra ``input_type``
(``"query"`` or ``"document"``, also Cohere's ``"search_query"``/``"search_document"``, and its
``"classification"``/``"clustering"``, which take the document path: no retrieval instruction);
without it the server's default applies (``--input-type``, ``document`` unless told). Length
follows the core policy: texts longer than the context are cut and every response lists them
under ``truncated`` (``index``, ``tokens``, ``limit``); ``truncate: false`` (Cohere: ``NONE``;
or ``--truncation error``) refuses them instead. ``dimensions`` (Cohere: ``output_dimension``)
slices to a Matryoshka size the profile lists and re-normalizes; other sizes are refused unless
the server runs with ``--force-dimensions``.

Safe by default (:mod:`lokal.agent.door`): loopback only unless an API key is set (then
required as a bearer token on every endpoint but ``/health``); an index whose file others may
not read is served with a key (generated, readable like the index) or over a Unix socket with
the index's mode and group; the ``Host`` header must name the server and browsers' requests from
other origins are refused; JSON endpoints take ``Content-Type: application/json`` only; request
headers and bodies have read deadlines and one client a bounded number of connections; bodies,
inputs per request and the queue are bounded; bad input gets a 4xx in the API's own shape.
Models run on worker threads that batch concurrent requests (:mod:`lokal.agent.batcher`); the
event loop never waits on a model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import socket
import struct
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lokal import __version__, gguf
from lokal.agent.batcher import Busy, Kind, ModelWorker, Stats
from lokal.agent.door import ConnectionLimits, Door, HostRule, UnixListener, guarded_protocol
from lokal.embedder import Embedder, EmbedResult, Truncated, TruncationWarning
from lokal.errors import (
    FilterError,
    LokalError,
    MissingDependency,
    ModelMismatch,
    ProfileError,
    TextTooLong,
)
from lokal.retrieval import candidate_depth, retrieve

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="serve", feature="lokal serve") from exc

log = logging.getLogger(__name__)

Api = Literal["ollama", "openai", "cohere", "lokal"]

DEFAULT_PORT = 11435
#: JSON bodies larger than this are parsed on a thread, not on the event loop.
_PARSE_INLINE = 64 * 1024
#: Responses with more vectors than this are encoded on a thread.
_MANY = 32
#: A body over the limit is read and dropped up to this many times the limit (so the client
#: gets its 413 instead of a broken pipe); beyond, the connection is closed.
_DRAIN_FACTOR = 4
_INPUT_TYPES: dict[str, Kind] = {
    "query": "query",
    "search_query": "query",
    "document": "document",
    "search_document": "document",
    "passage": "document",
    # Cohere's symmetric uses: the plain text, without a retrieval query's instruction
    "classification": "document",
    "clustering": "document",
}
#: Cohere ``embedding_types`` this server answers (int8/uint8 need a calibrated scale it lacks).
_EMBEDDING_TYPES = ("float", "base64", "binary", "ubinary")
#: Ollama says a model kept loaded "forever" (keep_alive < 0) expires in Go's longest duration.
_FOREVER = timedelta(days=292 * 365)
#: conditions in a /v1/search filter; the integers SQLite stores
_MAX_FILTER_TERMS = 256
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class ServeSettings:
    """What ``lokal serve`` was told. Every limit is per request unless said otherwise."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key: str | None = None
    #: the prefix path for APIs that do not say (``input_type`` absent)
    input_type: Kind = "document"
    #: texts longer than the context when the request does not say: cut ("warn") or refuse
    truncation: Literal["warn", "error"] = "warn"
    force_dimensions: bool = False
    max_body_bytes: int = 8 * 1024 * 1024
    max_inputs: int = 2048
    max_k: int = 1000
    #: texts per model call (the worker batches up to this many)
    max_batch: int = 64
    #: texts waiting for the model (server-wide) before requests get 503
    max_queue: int = 8192
    #: model calls that run at once (the embedder needs as many GGUF contexts: concurrency)
    workers: int = 1
    access_log: bool = False
    #: host names the server answers besides its bind address (and localhost on loopback)
    allowed_hosts: tuple[str, ...] = ()
    #: web origins (``https://app.example``) whose pages may call the server
    allowed_origins: tuple[str, ...] = ()
    #: served on a Unix socket (no Host check: no browser reaches it by name)
    unix_socket: bool = False
    #: seconds a connection has to send its request headers, then its body
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    #: open connections per client address, and in all (more get 503)
    max_connections_per_client: int = 64
    max_connections: int = 1024


class ApiError(Exception):
    """An answer to a bad request, rendered in the shape of the API it came through."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


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
        wanted = _bare(requested).casefold()
        return any(wanted == _bare(n).casefold() for n in self.names)

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
                count = _gguf_parameters(path)
            elif path is not None and path.is_dir():
                arch = _json_field(path / "config.json", "model_type")
                count = _safetensors_parameters(path)
            family = getattr(self.model.profile, "family", "") or "unknown"
            self._facts = {
                "architecture": str(arch or family),
                "parameter_count": count,
            }
        return self._facts


def _gguf_parameters(path: Path) -> int | None:
    try:
        return gguf.parameter_count(path)
    except (OSError, LokalError, ValueError) as exc:
        log.warning("%s: cannot count parameters: %s", path, exc)
        return None


def _safetensors_parameters(directory: Path) -> int | None:
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


def _json_field(path: Path, key: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _human_count(n: int | None) -> str:
    """A parameter count as Ollama shows one: 22.6M, 7.2B ("" when unknown)."""
    if not n:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _bare(name: str) -> str:
    """Ollama's default tag is implied: ``all-minilm:latest`` is ``all-minilm``."""
    return name.removesuffix(":latest")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only loopback addresses (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


# ---- request fields -------------------------------------------------------------------------


def _str(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"'{key}' is required", param=key)
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string, not {_type(value)}", param=key)
    return _clean(value, key)


def _int(
    body: Mapping[str, Any], key: str, default: int | None, lo: int = 1, hi: int | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{key}' must be an integer, not {_type(value)}", param=key)
    if value < lo or (hi is not None and value > hi):
        bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ApiError(400, f"'{key}' must be {bounds}, got {value}", param=key)
    return value


def _bool(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ApiError(400, f"'{key}' must be true or false, not {_type(value)}", param=key)


def _texts(value: Any, key: str, limit: int) -> list[str]:
    """A string or a list of strings (each checked), at most ``limit`` of them."""
    if isinstance(value, str):
        return [_clean(value, key)]
    if not isinstance(value, list):
        raise ApiError(400, f"'{key}' must be a string or a list of strings", param=key)
    if len(value) > limit:
        raise ApiError(
            413, f"'{key}' has {len(value)} items; this server takes at most {limit}", param=key
        )
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ApiError(400, f"'{key}[{i}]' must be a string, not {_type(item)}", param=key)
        out.append(_clean(item, f"{key}[{i}]"))
    return out


def _clean(text: str, where: str) -> str:
    # llama.cpp reads C strings: a NUL would silently end the text there
    if "\x00" in text:
        raise ApiError(400, f"'{where}' contains a NUL character (\\u0000)", param=where)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON's "\ud800": a lone surrogate is no text
            bad = text[exc.start]
            raise ApiError(
                400,
                f"'{where}' contains a lone surrogate (\\u{ord(bad):04x}) at {exc.start}: it is "
                "not text (send the pair, or the character itself)",
                param=where,
            ) from exc
    return text


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _truncated(records: Sequence[Truncated]) -> list[dict[str, int]]:
    return [{"index": t.index, "tokens": t.tokens, "limit": t.limit} for t in records]


# ---- the application ------------------------------------------------------------------------


class Service:
    """The state behind the routes: models, the index, the worker, the counters."""

    def __init__(
        self,
        settings: ServeSettings,
        embedder: Embedder,
        *,
        names: Sequence[str] = (),
        reranker: Any = None,
        reranker_names: Sequence[str] = (),
        index: Any = None,
        index_embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self.embedding = Served.of(embedder, names, "embedding")
        self.rerank = Served.of(reranker, reranker_names, "rerank") if reranker else None
        self.index = index
        self.index_embedder = index_embedder
        self.stats = Stats()
        self.worker = ModelWorker(
            self.stats,
            max_batch=settings.max_batch,
            max_pending=settings.max_queue,
            workers=settings.workers,
        )
        #: models stay loaded while the server runs: Ollama's "forever" from the start
        self._expires_at = (datetime.now(timezone.utc) + _FOREVER).isoformat()

    # ---- routing --------------------------------------------------------------------------

    def app(self) -> Any:
        """The ASGI application: the routes behind the door's Host and Origin checks."""
        s = self.settings
        hosts = (
            None
            if s.unix_socket
            else HostRule.for_bind(s.host, s.allowed_hosts, loopback=is_loopback(s.host))
        )
        return Door(
            self._routes(),
            hosts=hosts,
            origins=s.allowed_origins,
            reject=lambda path, status, message: self._error(
                _api_of(path), ApiError(status, message)
            ),
        )

    def _routes(self) -> Starlette:
        routes = [
            Route("/", self._root, methods=["GET", "HEAD"]),
            Route("/health", self._health, methods=["GET", "HEAD"]),
            self._route("/api/embed", "POST", "ollama", self.ollama_embed),
            self._route("/api/embeddings", "POST", "ollama", self.ollama_embeddings),
            self._route("/api/tags", "GET", "ollama", self.ollama_tags),
            self._route("/api/show", "POST", "ollama", self.ollama_show),
            self._route("/api/ps", "GET", "ollama", self.ollama_ps),
            self._route("/api/version", "GET", "ollama", self.ollama_version),
            self._route("/v1/embeddings", "POST", "openai", self.openai_embeddings),
            self._route("/v1/models", "GET", "openai", self.openai_models),
            self._route("/v1/embed", "POST", "cohere", self.cohere_embed_v1),
            self._route("/v2/embed", "POST", "cohere", self.cohere_embed_v2),
            self._route("/v1/rerank", "POST", "cohere", self.cohere_rerank_v1),
            self._route("/v2/rerank", "POST", "cohere", self.cohere_rerank_v2),
            self._route("/v1/search", "POST", "lokal", self.search),
            self._route("/v1/status", "GET", "lokal", self.status),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_exception},
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(self.worker.close)

    def _route(
        self,
        path: str,
        method: str,
        api: Api,
        handler: Callable[[dict[str, Any]], Awaitable[Any]],
    ) -> Route:
        async def endpoint(request: Request) -> Response:
            self.stats.request(path)
            try:
                self._authorize(request)
                body = await self._read_json(request) if method == "POST" else {}
                result = await handler(body)
                if isinstance(result, Response):
                    return result
                return await _json_response(result)
            except Exception as exc:  # every failure gets an answer in the API's shape
                return self._error(api, _as_api_error(exc, api, path))

        return Route(path, endpoint, methods=[method])

    def _error(self, api: Api, err: ApiError) -> Response:
        self.stats.error(err.status)
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return Response(
            json.dumps(error_body(api, err)),
            status_code=err.status,
            media_type="application/json",
            headers=headers,
        )

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        """Unknown paths and wrong methods, in the shape of the API the path belongs to."""
        assert isinstance(exc, HTTPException)
        path = request.url.path
        api = _api_of(path)
        if exc.status_code == 405:
            msg = f"{request.method} is not allowed on {path}"
        else:
            msg = (
                f"no such endpoint: {request.method} {path} (lokal serve answers embeddings, "
                "rerank and search; see GET /health)"
            )
        return self._error(api, ApiError(exc.status_code, msg))

    def _authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.encode()
        ):
            raise ApiError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    async def _read_json(self, request: Request) -> dict[str, Any]:
        # a browser sends text/plain cross-site without asking first: JSON must say it is JSON
        ctype = request.headers.get("content-type", "")
        if ctype.partition(";")[0].strip().lower() != "application/json":
            raise ApiError(
                415,
                f"the request body must be sent as 'Content-Type: application/json', not "
                f"{ctype or 'without a Content-Type'!r} (curl: --json, or -H 'Content-Type: "
                "application/json')",
            )
        limit = self.settings.max_body_bytes
        too_big = ApiError(
            413, f"the request body is larger than this server takes ({limit} bytes)"
        )
        declared = request.headers.get("content-length")
        if declared is not None and (
            not declared.isdigit() or int(declared) > _DRAIN_FACTOR * limit
        ):
            raise too_big if declared.isdigit() else ApiError(400, "bad Content-Length header")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > _DRAIN_FACTOR * limit:
                    raise too_big
                if size <= limit:
                    chunks.append(chunk)
        except ClientDisconnect as exc:  # closed, or cut by the body deadline: nobody to answer
            raise ApiError(400, "the client closed the connection mid-body") from exc
        if size > limit:
            raise too_big
        raw = b"".join(chunks)
        if not raw.strip():
            raise ApiError(400, "the request body is empty: send a JSON object")
        try:
            data = (
                json.loads(raw)
                if size < _PARSE_INLINE
                else await asyncio.to_thread(json.loads, raw)
            )
        except RecursionError as exc:
            raise ApiError(400, "the request body is nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(400, f"the request body must be a JSON object, not {_type(data)}")
        return data

    # ---- shared steps ---------------------------------------------------------------------

    def _embedding_model(self, body: Mapping[str, Any], api: Api, *, required: bool = True) -> str:
        name = _str(body, "model", required=required)
        if name is None:
            return self.embedding.name
        if not self.embedding.matches(name):
            if api == "ollama":
                raise ApiError(404, f'model "{name}" not found, try pulling it first')
            served = ", ".join(self.embedding.names)
            raise ApiError(
                404,
                f"The model `{name}` does not exist on this server (it serves: {served})",
                param="model",
                code="model_not_found",
            )
        return name

    def _kind(self, body: Mapping[str, Any]) -> Kind:
        value = _str(body, "input_type")
        if value is None:
            return self.settings.input_type
        kind = _INPUT_TYPES.get(value.lower())
        if kind is None:
            raise ApiError(
                400,
                "'input_type' must be 'query' or 'document' (or Cohere's 'search_query', "
                "'search_document', 'classification', 'clustering')",
                param="input_type",
            )
        return kind

    def _refuse_long(self, body: Mapping[str, Any]) -> bool:
        truncate = _bool(body, "truncate")
        if truncate is None:
            return self.settings.truncation == "error"
        return not truncate

    def _dimensions(self, body: Mapping[str, Any], key: str = "dimensions") -> int | None:
        dims = _int(body, key, None)
        if dims is None:
            return None
        return self.embedding.check_dimensions(dims, self.settings.force_dimensions)

    def _sliced(self, vectors: np.ndarray, dims: int | None) -> np.ndarray:
        """The first ``dims`` components, re-normalized if the model normalizes."""
        if dims is None:
            return vectors
        vectors = vectors[:, :dims]
        if self.embedding.model.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1.0, norms)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    async def _embed(
        self, embedder: Embedder, kind: Kind, texts: Sequence[str], *, refuse_long: bool
    ) -> EmbedResult:
        return await asyncio.wrap_future(
            self.worker.embed(embedder, kind, texts, refuse_long=refuse_long)
        )

    async def _embed_request(
        self, body: Mapping[str, Any], texts: list[str]
    ) -> tuple[np.ndarray, EmbedResult]:
        kind = self._kind(body)
        refuse_long = self._refuse_long(body)
        dims = self._dimensions(body)
        result = await self._embed(self.embedding.model, kind, texts, refuse_long=refuse_long)
        return self._sliced(result.vectors, dims), result

    # ---- Ollama -------------------------------------------------------------------------------

    async def ollama_embed(self, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter_ns()
        name = self._embedding_model(body, "ollama")
        raw = body.get("input")
        texts = [] if raw is None or raw == "" else _texts(raw, "input", self.settings.max_inputs)
        if not texts:  # Ollama's way to load a model: nothing to embed (options still checked)
            self._kind(body)
            self._refuse_long(body)
            self._dimensions(body)
            return {"model": name, "embeddings": [], "total_duration": 0, "load_duration": 0}
        vectors, result = await self._embed_request(body, texts)
        return {
            "model": name,
            "embeddings": await _rows(vectors),
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": 0,
            "prompt_eval_count": result.tokens,
            "truncated": _truncated(result.truncated),
        }

    async def ollama_embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        self._embedding_model(body, "ollama")
        prompt = _str(body, "prompt")
        if not prompt:
            return {"embedding": []}
        vectors, result = await self._embed_request(body, [prompt])
        return {"embedding": vectors[0].tolist(), "truncated": _truncated(result.truncated)}

    async def ollama_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        # Ollama's world has embedding models only: the reranker is listed by /v1/models
        return {"models": [await self._ollama_model(self.embedding)]}

    async def ollama_show(self, body: dict[str, Any]) -> dict[str, Any]:
        name = _str(body, "model") or _str(body, "name")  # "name": older clients
        if not name:
            raise ApiError(400, "'model' is required", param="model")
        if not self.embedding.matches(name):
            raise ApiError(404, f"model '{name}' not found")
        served = self.embedding
        embedder = served.model
        listed = await self._ollama_model(served)
        facts = await asyncio.to_thread(served.facts)
        arch = facts["architecture"]
        info: dict[str, Any] = {"general.architecture": arch, "general.name": embedder.profile.name}
        if facts["parameter_count"]:
            info["general.parameter_count"] = facts["parameter_count"]
        info |= {
            f"{arch}.embedding_length": embedder.dimension,
            # the context lokal applies (the profile's, when shorter than the file's)
            f"{arch}.context_length": embedder.context_length,
            "lokal.backend": embedder.resolved.backend,
            "lokal.query_prefix": embedder.profile.query_prefix,
            "lokal.document_prefix": embedder.profile.document_prefix,
        }
        return {
            "license": "",
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": listed["details"],
            "model_info": info,
            "capabilities": ["embedding"],
            "modified_at": listed["modified_at"],
        }

    async def ollama_ps(self, body: dict[str, Any]) -> dict[str, Any]:
        listed = await self._ollama_model(self.embedding)
        return {
            "models": [
                {
                    **listed,
                    "expires_at": self._expires_at,
                    "size_vram": 0,
                    "context_length": self.embedding.model.context_length,
                }
            ]
        }

    async def ollama_version(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"version": __version__}

    async def _ollama_model(self, served: Served) -> dict[str, Any]:
        """A model as Ollama's listings show one."""
        info = served.describe()
        facts = await asyncio.to_thread(served.facts)
        tag = info["name"] if ":" in info["name"] else info["name"] + ":latest"
        return {
            "name": tag,
            "model": tag,
            "modified_at": info["modified_at"],
            "size": info["size"],
            "digest": "",
            "details": {
                "parent_model": "",
                "format": "gguf" if info["backend"] == "gguf" else "safetensors",
                "family": info["family"],
                "families": [info["family"]],
                "parameter_size": _human_count(facts["parameter_count"]),
                "quantization_level": str(info["quantization"]).upper(),
            },
        }

    # ---- OpenAI -------------------------------------------------------------------------------

    async def openai_embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        name = self._embedding_model(body, "openai")
        raw = body.get("input")
        if raw is None:
            raise ApiError(400, "'input' is required", param="input")
        if _is_tokens(raw):
            raise ApiError(
                400,
                "'input' is a token array: lokal serve embeds text only (it counts tokens with "
                "the model's own tokenizer, so token ids from another tokenizer would be wrong); "
                "send the text itself",
                param="input",
                code="token_arrays_not_supported",
            )
        texts = _texts(raw, "input", self.settings.max_inputs)
        if not texts:
            raise ApiError(400, "'input' must not be an empty list", param="input")
        fmt = _str(body, "encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise ApiError(
                400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
            )
        vectors, result = await self._embed_request(body, texts)
        data = await _rows(vectors, fmt)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)
            ],
            "model": name,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
            "truncated": _truncated(result.truncated),
        }

    async def openai_models(self, body: dict[str, Any]) -> dict[str, Any]:
        served = [self.embedding, *([self.rerank] if self.rerank else [])]
        return {
            "object": "list",
            "data": [
                {
                    "id": s.name,
                    "object": "model",
                    "created": s.describe()["created"],
                    "owned_by": "lokal",
                    "lokal": s.describe(),
                }
                for s in served
            ],
        }

    # ---- Cohere embed -------------------------------------------------------------------------

    async def cohere_embed_v1(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._cohere_embed(body, version="1")

    async def cohere_embed_v2(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._cohere_embed(body, version="2")

    async def _cohere_embed(self, body: dict[str, Any], *, version: str) -> dict[str, Any]:
        self._embedding_model(body, "cohere", required=version == "2")
        for key in ("images", "inputs"):
            if body.get(key):
                raise ApiError(400, f"'{key}' is not supported: lokal serve embeds 'texts' only")
        raw = body.get("texts")
        if not isinstance(raw, list):
            raise ApiError(400, "'texts' must be a list of strings", param="texts")
        texts = _texts(raw, "texts", self.settings.max_inputs)
        if not texts:
            raise ApiError(400, "'texts' must not be empty", param="texts")
        kind = self._kind(body)
        refuse_long = self._cohere_truncate(body)
        types = _embedding_types(body, version)
        dims = self._dimensions(body, "output_dimension")
        max_tokens = _int(body, "max_tokens", None)
        limit = self.embedding.model.context_length
        if max_tokens is not None and max_tokens < limit:
            raise ApiError(
                400,
                f"'max_tokens' below the model's context ({limit} tokens) is not supported: "
                "lokal cuts texts at the model's context only; leave it out",
                param="max_tokens",
            )
        result = await self._embed(self.embedding.model, kind, texts, refuse_long=refuse_long)
        vectors = self._sliced(result.vectors, dims)
        meta: dict[str, Any] = {
            "api_version": {"version": version},
            "billed_units": {"input_tokens": result.tokens},
        }
        if result.truncated:
            meta["warnings"] = [
                f"{len(result.truncated)} texts were cut to the model's context ({limit} tokens)"
            ]
        out: dict[str, Any] = {"id": str(uuid.uuid4())}
        if types is None:  # v1 without embedding_types: a plain list of float vectors
            out |= {"response_type": "embeddings_floats", "embeddings": await _rows(vectors)}
        else:
            by_type = {t: await _cohere_rows(vectors, t) for t in types}
            out |= {"response_type": "embeddings_by_type", "embeddings": by_type}
        return out | {"texts": texts, "meta": meta, "truncated": _truncated(result.truncated)}

    def _cohere_truncate(self, body: Mapping[str, Any]) -> bool:
        """Whether to refuse texts over the context: NONE refuses, END cuts; absent, the
        server's ``--truncation`` applies (cut unless told)."""
        value = _str(body, "truncate")
        if value is None:
            return self.settings.truncation == "error"
        if value.upper() == "NONE":
            return True
        if value.upper() == "END":
            return False
        if value.upper() == "START":
            raise ApiError(
                400,
                "'truncate': START is not supported: lokal cuts long texts at the end; send END "
                "(cut the end) or NONE (refuse them)",
                param="truncate",
            )
        raise ApiError(400, "'truncate' must be NONE, START or END", param="truncate")

    # ---- Cohere rerank ------------------------------------------------------------------------

    async def cohere_rerank_v1(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._rerank(body, version="1")

    async def cohere_rerank_v2(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._rerank(body, version="2")

    async def _rerank(self, body: dict[str, Any], *, version: str) -> dict[str, Any]:
        served = self._rerank_model(body, required=version == "2")
        query = _str(body, "query", required=True)
        assert query is not None
        raw = body.get("documents")
        if not isinstance(raw, list):
            raise ApiError(400, "'documents' must be a list", param="documents")
        if len(raw) > self.settings.max_inputs:
            raise ApiError(
                413,
                f"'documents' has {len(raw)} items; this server takes at most "
                f"{self.settings.max_inputs}",
            )
        fields = body.get("rank_fields")
        if fields is not None and (
            not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)
        ):
            raise ApiError(400, "'rank_fields' must be a list of strings")
        texts = [_document_text(d, i, fields) for i, d in enumerate(raw)]
        top_n = _int(body, "top_n", None)
        return_documents = bool(_bool(body, "return_documents"))
        warns = []
        # each document's first N tokens, by the reranker's own tokenizer
        per_doc = _int(body, "max_tokens_per_doc", None)
        if texts:
            scored = await asyncio.wrap_future(
                self.worker.rerank(served.model, query, texts, max_document_tokens=per_doc)
            )
            ranked = scored.ranked(top_n)
            truncated = scored.truncated
        else:
            ranked, truncated = [], []
        if truncated:
            warns.append(f"{len(truncated)} documents were cut to the model's context")
        results = []
        for r in ranked:
            item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
            if return_documents:
                doc = raw[r.index]
                item["document"] = doc if isinstance(doc, dict) else {"text": doc}
            results.append(item)
        meta: dict[str, Any] = {
            "api_version": {"version": version},
            "billed_units": {"search_units": 1},
        }
        if warns:
            meta["warnings"] = warns
        return {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": meta,
            "truncated": _truncated(truncated),
        }

    def _rerank_model(self, body: Mapping[str, Any], *, required: bool) -> Served:
        name = _str(body, "model", required=required)
        if self.rerank is None:
            raise ApiError(
                404,
                "no reranker is loaded on this server: start it with "
                "`lokal serve --reranker MODEL`",
            )
        if name is not None and not self.rerank.matches(name):
            raise ApiError(
                404,
                f"model '{name}' not found: this server reranks with "
                f"{', '.join(self.rerank.names)}",
            )
        return self.rerank

    # ---- lokal search and status --------------------------------------------------------------

    async def search(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.index is None or self.index_embedder is None:
            raise ApiError(404, "no index is served: start lokal serve with --index FILE")
        query = _str(body, "query", required=True)
        assert query is not None
        k = _int(body, "k", 5, hi=self.settings.max_k)
        assert k is not None
        flt = body.get("filter")
        if flt is not None and not isinstance(flt, dict):
            raise ApiError(
                400, "'filter' must be an object (lokal's filter language)", param="filter"
            )
        _check_filter(flt)
        hybrid = bool(_bool(body, "hybrid"))
        rerank = bool(_bool(body, "rerank"))
        fetch_k = _int(body, "fetch_k", candidate_depth(k), lo=k, hi=self.settings.max_k)
        assert fetch_k is not None
        if rerank and self.rerank is None:
            raise ApiError(
                400,
                "'rerank' needs a reranker: start lokal serve with --reranker MODEL",
                param="rerank",
            )
        embedded = await self._embed(self.index_embedder, "query", [query], refuse_long=False)
        vector = embedded.vectors[0]
        worker, model = self.worker, self.rerank.model if self.rerank else None

        def rank(q: str, texts: list[str], top_n: int | None) -> list[Any]:
            # from retrieve's thread, through the model worker's queue
            return list(worker.rerank(model, q, texts).result().ranked(top_n))

        try:
            found = await asyncio.to_thread(
                retrieve, self.index, query, k, vector=vector, hybrid=hybrid, filter=flt,
                reranker=rank if rerank else None, candidates=fetch_k,
            )  # fmt: skip
        except (ValueError, OverflowError) as exc:
            if not flt or isinstance(exc, LokalError):
                raise
            # a value the filter language took but SQLite cannot bind: the request's fault
            raise ApiError(400, f"'filter': {exc}", param="filter") from exc
        hits = [r.hit for r in found]
        rerank_scores: list[float | None] = [r.rerank_score for r in found]
        results = []
        for h, rerank_score in zip(hits, rerank_scores, strict=True):
            item: dict[str, Any] = {
                **({"site": h.site} if getattr(h, "site", None) else {}),  # a central store's
                "id": h.id,
                "path": h.document,
                "lines": [h.line_start, h.line_end] if h.line_start is not None else None,
                "score": h.score,
                "text": h.text,
                "metadata": h.metadata,
            }
            if rerank_score is not None:
                item["retrieval_score"] = h.score
                item["score"] = rerank_score
            results.append(item)
        return {
            "results": results,
            "model": self.index_embedder.profile.name,
            "hybrid": hybrid,
            "reranked": rerank,
            "query_tokens": embedded.tokens,
            "truncated": _truncated(embedded.truncated),
        }

    async def status(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": __version__,
            "models": [s.describe() for s in (self.embedding, self.rerank) if s is not None],
            "index": str(self.index.path) if self.index is not None else None,
            "queue": self.worker.pending,
            "max_batch": self.settings.max_batch,
            "workers": self.worker.workers,
            **self.stats.snapshot(),
        }

    async def _health(self, request: Request) -> Response:
        return await _json_response({"status": "ok"})

    async def _root(self, request: Request) -> Response:
        return PlainTextResponse("lokal serve is running")


def _check_filter(flt: dict[str, Any] | None) -> None:
    """Bounds the index's filter compiler relies on the caller for: at most
    :data:`_MAX_FILTER_TERMS` conditions (SQLite refuses an expression over 1000 deep), numbers
    SQLite can hold (64-bit integers, finite floats). A walk, no recursion: it costs nothing
    next to a search."""
    if not flt:
        return
    terms, stack = 0, [flt]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            terms += len(node)
            if terms > _MAX_FILTER_TERMS:
                raise ApiError(
                    400,
                    f"'filter' has over {_MAX_FILTER_TERMS} conditions; for many values of one "
                    "key use $in",
                    param="filter",
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif (
            isinstance(node, int)
            and not isinstance(node, bool)
            and not _INT64[0] <= node <= _INT64[1]
        ):
            raise ApiError(400, f"'filter': the integer {node} is outside 64 bits", param="filter")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ApiError(400, f"'filter': {node} is not a finite number", param="filter")


def _api_of(path: str) -> Api:
    """The API a path belongs to, for errors outside a route (unknown paths, the door)."""
    if path.startswith("/api/"):
        return "ollama"
    if path.endswith(("/rerank", "/embed")):
        return "cohere"
    return "openai"


def _is_tokens(value: Any) -> bool:
    """An OpenAI token array: a list of ints, or a list of lists of ints."""
    if not isinstance(value, list) or not value:
        return False
    first = value[0]
    if isinstance(first, list):
        return all(isinstance(t, int) and not isinstance(t, bool) for t in first)
    return isinstance(first, int) and not isinstance(first, bool)


def _document_text(doc: Any, i: int, fields: list[str] | None) -> str:
    """Cohere documents: strings, or objects with a ``text`` (or the ``rank_fields``)."""
    if isinstance(doc, str):
        return _clean(doc, f"documents[{i}]")
    if isinstance(doc, dict):
        keys = fields or ["text"]
        missing = [k for k in keys if not isinstance(doc.get(k), str)]
        if missing:
            raise ApiError(400, f"'documents[{i}]' has no string field '{missing[0]}'")
        if fields:
            return _clean("\n".join(f"{k}: {doc[k]}" for k in keys), f"documents[{i}]")
        return _clean(doc["text"], f"documents[{i}]")
    raise ApiError(400, f"'documents[{i}]' must be a string or an object with 'text'")


def _embedding_types(body: Mapping[str, Any], version: str) -> list[str] | None:
    """Cohere's ``embedding_types``: v2 defaults to float; v1 without it answers the plain
    ``embeddings_floats`` shape (None)."""
    value = body.get("embedding_types")
    if value is None:
        return None if version == "1" else ["float"]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ApiError(
            400, "'embedding_types' must be a non-empty list of strings", param="embedding_types"
        )
    unknown = [t for t in value if t not in _EMBEDDING_TYPES]
    if unknown:
        why = (
            " (int8 and uint8 scale each dimension by ranges calibrated on a corpus, which "
            "lokal does not have for this model)"
            if {"int8", "uint8"} & set(unknown)
            else ""
        )
        raise ApiError(
            400,
            f"'embedding_types' {', '.join(map(repr, unknown))} not supported{why}; this server "
            f"returns {', '.join(_EMBEDDING_TYPES)}",
            param="embedding_types",
        )
    return list(dict.fromkeys(value))


async def _cohere_rows(vectors: np.ndarray, kind: str) -> list[Any]:
    """One of Cohere's embedding types. binary/ubinary pack the sign bits (x > 0), eight
    dimensions a byte, first dimension in the high bit; binary is ubinary - 128 (signed), as
    sentence-transformers' ``quantize_embeddings`` does."""
    if kind in ("float", "base64"):
        return await _rows(vectors, kind)
    packed = np.packbits(vectors > 0, axis=1)
    if kind == "binary":
        return (packed.astype(np.int16) - 128).tolist()  # type: ignore[no-any-return]
    return packed.tolist()  # type: ignore[no-any-return]


def error_body(api: Api, err: ApiError) -> dict[str, Any]:
    """The error in the API's own shape."""
    if api == "ollama":
        return {"error": err.message}
    if api == "cohere":
        return {"message": err.message}
    kind = "server_error" if err.status >= 500 else "invalid_request_error"
    return {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}


def _as_api_error(exc: Exception, api: Api, path: str) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Busy):
        return ApiError(503, str(exc), code="server_busy")
    if isinstance(exc, TextTooLong):
        if path.endswith("/rerank"):
            what, hint = "a document with the query", ""
        elif api == "cohere":
            what, hint = f"texts[{exc.index}]", "; send truncate='END' to cut it instead"
        else:
            what, hint = f"input {exc.index}", "; send truncate=true to cut it instead"
        return ApiError(
            400,
            f"{what} has {exc.tokens} tokens; the model's context is {exc.limit}. Split it into "
            f"chunks{hint}",
            code="context_length_exceeded",
        )
    if isinstance(exc, (ProfileError, FilterError)):
        return ApiError(400, str(exc))
    if isinstance(exc, ModelMismatch):
        return ApiError(409, str(exc))
    if isinstance(exc, LokalError):
        return ApiError(500, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, UnicodeError):  # text that is not text, found past the request checks
        return ApiError(400, f"the input is not valid text: {exc}")
    log.error("%s failed", path, exc_info=exc)
    return ApiError(500, f"internal error ({type(exc).__name__}); see the server's log")


async def _rows(vectors: np.ndarray, fmt: str = "float") -> list[Any]:
    """Vectors as JSON-ready rows (float lists, or base64 of little-endian float32); many of
    them are converted on a thread, off the event loop."""
    if len(vectors) > _MANY:
        return await asyncio.to_thread(_encode_rows, vectors, fmt)
    return _encode_rows(vectors, fmt)


def _encode_rows(vectors: np.ndarray, fmt: str) -> list[Any]:
    if fmt == "base64":
        little = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    return vectors.tolist()  # type: ignore[no-any-return]


async def _json_response(data: Any) -> Response:
    """JSON, encoded on a thread when it carries many vectors."""
    # Cohere's v2 embeddings are an object of lists; its "texts" has as many items
    many = isinstance(data, dict) and any(
        isinstance(data.get(k), list) and len(data[k]) > _MANY
        for k in ("embeddings", "data", "texts")
    )
    text = await asyncio.to_thread(_dumps, data) if many else _dumps(data)
    return Response(text, media_type="application/json")


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


# ---- running it -----------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn's server, announcing the real address once it accepts connections."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_ready: Callable[[str], None],
        listener: UnixListener | None = None,
    ) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._listener = listener

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would
            # die by the signal; like `lokal agent run`, a clean stop exits 0 instead
            captured = getattr(self, "_captured_signals", None)
            if captured:
                captured.clear()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers:
            if self._listener is not None:  # bound elsewhere, then renamed into place
                self._on_ready(f"unix:{self._listener.path}")
                return
            name = self.servers[0].sockets[0].getsockname()
            host, port = name[:2]
            shown = f"[{host}]" if ":" in host else host
            self._on_ready(f"http://{shown}:{port}")


def run(
    service: Service, on_ready: Callable[[str], None], listener: UnixListener | None = None
) -> None:
    """Serve until SIGTERM or Ctrl-C; ``on_ready`` gets the URL once connections are accepted.
    With a ``listener`` (:func:`lokal.agent.door.bind_unix_socket`), serve on it instead of
    the settings' host and port."""
    s = service.settings
    # Responses report every cut text; the warnings would only repeat it on stderr.
    warnings.filterwarnings("ignore", category=TruncationWarning)
    limits = ConnectionLimits(
        header_timeout=s.header_timeout,
        body_timeout=s.body_timeout,
        per_client=s.max_connections_per_client,
    )
    config = uvicorn.Config(
        service.app(),
        host=s.host,
        port=s.port,
        http=guarded_protocol(limits),
        log_config=None,
        access_log=s.access_log,
        server_header=False,
        lifespan="on",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=30,
        limit_concurrency=s.max_connections,
        h11_max_incomplete_event_size=64 * 1024,
    )
    _Server(config, on_ready, listener).run(
        sockets=[listener.sock] if listener is not None else None
    )
