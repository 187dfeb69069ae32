"""The page for the people at the box: ``GET /`` shows the agent's status and searches the index
in a browser, over the JSON endpoints (``/v1/search``, ``/v1/status``) and the small read-only
ones here (``/v1/page/status``, ``/v1/page/problems``, ``/v1/page/passage``).

The page is static package data (``static/``: one HTML, one JS, one CSS; nothing fetched from
elsewhere). Its safety:

- When the server has an API key, the page asks for it once (``POST /v1/page/session``) and keeps
  a session token derived from it (not the key) in an ``HttpOnly``, ``SameSite=Strict`` cookie;
  the cookie stands for the key on every endpoint. A POST authorized by the cookie must carry
  the page's CSRF token (``X-CSRF-Token``, written into the HTML), and so must the session
  request itself.
- Every response gets a strict Content-Security-Policy (``default-src 'self'``, no inline
  script or style, ``frame-ancestors 'none'``) and ``X-Content-Type-Options: nosniff``
  (:class:`SecurityHeaders`); the script builds the page with ``textContent`` only.
- A passage in context is read from the index by chunk id, never from a file by a path.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any

from lokal.agent.server.door import ASGIApp, Receive, Scope, Send
from lokal.agent.server.protocol import ApiError, error_body, str_field
from lokal.agent.server.search import LokalApi
from lokal.errors import MissingDependency

try:
    from starlette.requests import Request
    from starlette.responses import Response
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="serve", feature="lokal serve") from exc

STATIC = Path(__file__).with_name("static")
ASSETS = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
COOKIE = "lokal_session"
CSRF_HEADER = "x-csrf-token"
#: problems per page, at most
MAX_PAGE = 200
#: neighbouring chunks on each side of a passage, at most
MAX_AROUND = 10
#: chunks sampled for the metadata keys and file kinds the search filters offer
FACET_SAMPLE = 2000


class SecurityHeaders:
    """The ASGI layer that adds :data:`HEADERS` to every HTTP response (a route's or the
    door's refusal)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PageApi(LokalApi):
    """``GET /`` and its assets, the browser's session, and the page's read-only JSON (with
    lokal's own API, whose ``/v1/status`` it shows)."""

    @cached_property
    def csrf_token(self) -> str:
        return secrets.token_urlsafe(32)

    @cached_property
    def _html(self) -> str:
        text = (STATIC / "index.html").read_text(encoding="utf-8")
        return text.replace("{{csrf}}", self.csrf_token)

    def _session_token(self) -> str | None:
        key = self.settings.api_key
        if not key:
            return None
        return hmac.new(key.encode(), b"lokal page session", hashlib.sha256).hexdigest()

    def session_authorizes(self, request: Request) -> bool:
        """Whether the request's session cookie stands for the key; a POST must also carry the
        CSRF token (else 403)."""
        token = self._session_token()
        cookie = request.cookies.get(COOKIE, "")
        if token is None or not cookie or not hmac.compare_digest(cookie, token):
            return False
        if request.method == "POST" and not self._csrf_ok(request):
            raise ApiError(403, "a request from the page must carry its CSRF token")
        return True

    def _csrf_ok(self, request: Request) -> bool:
        sent = request.headers.get(CSRF_HEADER, "")
        return bool(sent) and hmac.compare_digest(sent, self.csrf_token)

    async def page(self, request: Request) -> Response:
        return Response(self._html, media_type="text/html; charset=utf-8")

    async def page_asset(self, request: Request) -> Response:
        name = request.url.path.lstrip("/")
        data = (STATIC / name).read_bytes()  # only the names the routes list
        return Response(data, media_type=ASSETS[name], headers={"cache-control": "no-cache"})

    async def page_session(self, request: Request) -> Response:
        """POST ``{"key": ...}``: the cookie for the page; DELETE: forget it."""
        try:
            if not self._csrf_ok(request):
                raise ApiError(403, "a request from the page must carry its CSRF token")
            token = self._session_token()
            if request.method == "DELETE":
                response = Response(status_code=204)
                response.delete_cookie(COOKIE, httponly=True, samesite="strict")
                return response
            try:
                body = json.loads(await request.body())
            except ValueError as exc:
                raise ApiError(400, 'send the key as JSON: {"key": "..."}') from exc
            key = str_field(body if isinstance(body, dict) else {}, "key", required=True) or ""
            wanted = self.settings.api_key
            if wanted and not hmac.compare_digest(key.encode(), wanted.encode()):
                raise ApiError(401, "wrong key", code="invalid_api_key")
            response = Response(status_code=204)
            if token is not None:
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return response
        except ApiError as err:
            self.stats.error(err.status)
            return Response(
                json.dumps(error_body("lokal", err)),
                status_code=err.status,
                media_type="application/json",
            )

    # ---- the page's JSON -------------------------------------------------------------------

    def _file_index(self) -> Any:
        from lokal.index import Index

        if not isinstance(self.index, Index):
            raise ApiError(404, "no index file is served (start lokal serve with --index FILE)")
        return self.index

    async def page_status(self, query: dict[str, Any]) -> dict[str, Any]:
        """The server's status, and for an index file the agent's (``lokal agent status``'s
        reading of it) and the search filters it offers."""
        out: dict[str, Any] = {
            "server": await self.status({}),
            "reranker": self.rerank is not None,
            "key_required": bool(self.settings.api_key),
            "agent": None,
            "facets": {"keys": [], "kinds": []},
        }
        from lokal.index import Index

        if isinstance(self.index, Index):
            out["agent"], out["facets"] = await asyncio.to_thread(self._file_status)
        return out

    def _file_status(self) -> tuple[dict[str, Any], dict[str, list[str]]]:
        from lokal.agent.config import AgentConfig
        from lokal.agent.status import read_status

        index = self.index
        config = self.agent_config or AgentConfig(index=index.path, roots=())
        agent = read_status(config)
        agent["problem_count"] = len(agent.pop("problems"))
        identity = index.identity
        agent["identity"] = {
            "name": identity.name,
            "quantization": identity.quantization,
            "dimension": identity.dimension,
            "key": identity.key,
            "index_quantization": index.quantization,
        }
        keys: set[str] = set()
        kinds: set[str] = set()
        for rec in index.get(limit=FACET_SAMPLE):
            keys.update(rec.metadata)
            if isinstance(rec.metadata.get("kind"), str):
                kinds.add(rec.metadata["kind"])
        return agent, {"keys": sorted(keys), "kinds": sorted(kinds)}

    async def page_problems(self, query: dict[str, Any]) -> dict[str, Any]:
        """Files skipped or failed, and files indexed with a warning: ``q`` (words in the path
        or reason), ``offset``, ``limit``."""
        index = self._file_index()
        q = (query.get("q") or "").strip().lower()
        offset = _query_int(query, "offset", 0, 0, 2**31)
        limit = _query_int(query, "limit", 20, 1, MAX_PAGE)

        def read() -> dict[str, Any]:
            items, total = [], 0
            for doc in index.documents():
                reason = doc.error if doc.status != "indexed" else doc.metadata.get("warning")
                if not reason or (q and q not in f"{doc.uri}\n{reason}".lower()):
                    continue
                total += 1
                if offset < total <= offset + limit:
                    items.append({"path": doc.uri, "status": doc.status, "reason": str(reason)})
            return {"total": total, "offset": offset, "limit": limit, "items": items}

        return await asyncio.to_thread(read)

    async def page_passage(self, query: dict[str, Any]) -> dict[str, Any]:
        """A chunk by ``id`` and its ``around`` neighbours in its document, from the index."""
        index = self._file_index()
        chunk_id = query.get("id") or ""
        if not chunk_id:
            raise ApiError(400, "'id' is required: a chunk id from a search result", param="id")
        around = _query_int(query, "around", 2, 0, MAX_AROUND)

        def read() -> dict[str, Any]:
            found = index.get_by_ids([chunk_id])
            if not found:
                raise ApiError(404, "no chunk with this id in the index", param="id")
            hit = found[0]
            chunks = index.document_chunks(hit.document) if hit.document else [hit]
            pos = next((i for i, c in enumerate(chunks) if c.id == hit.id), 0)
            start = max(0, pos - around)
            window = chunks[start : pos + around + 1]
            return {
                "id": hit.id,
                "path": hit.document,
                "chunks": [
                    {
                        "id": c.id,
                        "ordinal": c.ordinal,
                        "lines": [c.line_start, c.line_end] if c.line_start is not None else None,
                        "text": c.text,
                        "hit": c.id == hit.id,
                    }
                    for c in window
                ],
                "before": start,
                "after": max(0, len(chunks) - start - len(window)),
            }

        return await asyncio.to_thread(read)


def _query_int(query: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    if not str(raw).isdigit() or not lo <= int(raw) <= hi:
        raise ApiError(400, f"'{key}' must be an integer {lo}..{hi}, got {raw!r}", param=key)
    return int(raw)
