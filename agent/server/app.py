"""The ASGI application and the uvicorn server that runs it."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from lokal.agent.server.cohere import CohereApi
from lokal.agent.server.door import ConnectionLimits, Door, HostRule, UnixListener, guarded_protocol
from lokal.agent.server.ollama import OllamaApi
from lokal.agent.server.openai import OpenAiApi
from lokal.agent.server.page import ASSETS, PageApi, SecurityHeaders
from lokal.agent.server.protocol import (
    DRAIN_FACTOR,
    PARSE_INLINE,
    ApiError,
    api_of,
    as_api_error,
    error_body,
    json_response,
    json_type,
)
from lokal.agent.server.settings import Api, is_loopback
from lokal.embedder import TruncationWarning
from lokal.errors import MissingDependency

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="serve", feature="lokal serve") from exc


class Service(OllamaApi, OpenAiApi, CohereApi, PageApi):
    """The served application: routes, the door (Host/Origin), the API key, reading JSON bodies."""

    def app(self) -> Any:
        """The ASGI application: the routes behind the door's Host and Origin checks, every
        response with the page's security headers."""
        s = self.settings
        hosts = (
            None
            if s.unix_socket
            else HostRule.for_bind(s.host, s.allowed_hosts, loopback=is_loopback(s.host))
        )
        door = Door(
            self._routes(),
            hosts=hosts,
            origins=s.allowed_origins,
            reject=lambda path, status, message: self._error(
                api_of(path), ApiError(status, message)
            ),
        )
        return SecurityHeaders(door)

    def _routes(self) -> Starlette:
        routes = [
            Route("/", self.page, methods=["GET", "HEAD"]),
            *(Route(f"/{name}", self.page_asset, methods=["GET", "HEAD"]) for name in ASSETS),
            Route("/favicon.ico", self._no_icon, methods=["GET", "HEAD"]),
            Route("/v1/page/session", self.page_session, methods=["POST", "DELETE"]),
            self._route("/v1/page/status", "GET", "lokal", self.page_status),
            self._route("/v1/page/problems", "GET", "lokal", self.page_problems),
            self._route("/v1/page/passage", "GET", "lokal", self.page_passage),
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
                # a GET's query parameters are its body
                body = (
                    await self._read_json(request)
                    if method == "POST"
                    else dict(request.query_params)
                )
                result = await handler(body)
                if isinstance(result, Response):
                    return result
                return await json_response(result)
            except Exception as exc:  # every failure gets an answer in the API's shape
                return self._error(api, as_api_error(exc, api, path))

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
        api = api_of(path)
        if exc.status_code == 405:
            msg = f"{request.method} is not allowed on {path}"
        else:
            msg = (
                f"no such endpoint: {request.method} {path} (lokal serve answers embeddings, "
                "rerank and search; see GET /health)"
            )
        return self._error(api, ApiError(exc.status_code, msg))

    def _authorize(self, request: Request) -> None:
        """The bearer key, or the page's session cookie (:mod:`lokal.agent.server.page`)."""
        key = self.settings.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" and self.session_authorizes(request):
            return
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
            not declared.isdigit() or int(declared) > DRAIN_FACTOR * limit
        ):
            raise too_big if declared.isdigit() else ApiError(400, "bad Content-Length header")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > DRAIN_FACTOR * limit:
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
                json.loads(raw) if size < PARSE_INLINE else await asyncio.to_thread(json.loads, raw)
            )
        except RecursionError as exc:
            raise ApiError(400, "the request body is nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(400, f"the request body must be a JSON object, not {json_type(data)}")
        return data

    async def _health(self, request: Request) -> Response:
        return await json_response({"status": "ok"})

    async def _no_icon(self, request: Request) -> Response:
        return Response(status_code=204)


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
    With a ``listener`` (:func:`lokal.agent.server.door.bind_unix_socket`), serve on it instead of
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
