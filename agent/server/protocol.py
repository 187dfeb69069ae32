"""The wire: reading request fields, errors in each API's shape, encoding vectors."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lokal.agent.server.settings import Api
from lokal.agent.server.worker import Busy, Kind
from lokal.embedder import Truncated
from lokal.errors import (
    FilterError,
    LokalError,
    MissingDependency,
    ModelMismatch,
    ProfileError,
    TextTooLong,
)

try:
    from starlette.responses import Response
except ImportError as exc:  # pragma: no cover - exercised in a bare environment
    raise MissingDependency(extra="serve", feature="lokal serve") from exc

log = logging.getLogger(__name__)


#: JSON bodies larger than this are parsed on a thread, not on the event loop.
PARSE_INLINE = 64 * 1024


#: Responses with more vectors than this are encoded on a thread.
MANY = 32


#: A body over the limit is read and dropped up to this many times the limit (so the client
#: gets its 413 instead of a broken pipe); beyond, the connection is closed.
DRAIN_FACTOR = 4


INPUT_TYPES: dict[str, Kind] = {
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
EMBEDDING_TYPES = ("float", "base64", "binary", "ubinary")


#: conditions in a /v1/search filter; the integers SQLite stores
MAX_FILTER_TERMS = 256


INT64 = (-(2**63), 2**63 - 1)


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


def str_field(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ApiError(400, f"'{key}' is required", param=key)
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"'{key}' must be a string, not {json_type(value)}", param=key)
    return clean_text(value, key)


def int_field(
    body: Mapping[str, Any], key: str, default: int | None, lo: int = 1, hi: int | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{key}' must be an integer, not {json_type(value)}", param=key)
    if value < lo or (hi is not None and value > hi):
        bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ApiError(400, f"'{key}' must be {bounds}, got {value}", param=key)
    return value


def bool_field(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ApiError(400, f"'{key}' must be true or false, not {json_type(value)}", param=key)


def texts_field(value: Any, key: str, limit: int) -> list[str]:
    """A string or a list of strings (each checked), at most ``limit`` of them."""
    if isinstance(value, str):
        return [clean_text(value, key)]
    if not isinstance(value, list):
        raise ApiError(400, f"'{key}' must be a string or a list of strings", param=key)
    if len(value) > limit:
        raise ApiError(
            413, f"'{key}' has {len(value)} items; this server takes at most {limit}", param=key
        )
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ApiError(400, f"'{key}[{i}]' must be a string, not {json_type(item)}", param=key)
        out.append(clean_text(item, f"{key}[{i}]"))
    return out


def clean_text(text: str, where: str) -> str:
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


def json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def truncated_report(records: Sequence[Truncated]) -> list[dict[str, int]]:
    return [{"index": t.index, "tokens": t.tokens, "limit": t.limit} for t in records]


def check_filter(flt: dict[str, Any] | None) -> None:
    """Bounds the index's filter compiler relies on the caller for: at most
    :data:`MAX_FILTER_TERMS` conditions (SQLite refuses an expression over 1000 deep), numbers
    SQLite can hold (64-bit integers, finite floats). A walk, no recursion: it costs nothing
    next to a search."""
    if not flt:
        return
    terms, stack = 0, [flt]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            terms += len(node)
            if terms > MAX_FILTER_TERMS:
                raise ApiError(
                    400,
                    f"'filter' has over {MAX_FILTER_TERMS} conditions; for many values of one "
                    "key use $in",
                    param="filter",
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif (
            isinstance(node, int)
            and not isinstance(node, bool)
            and not INT64[0] <= node <= INT64[1]
        ):
            raise ApiError(400, f"'filter': the integer {node} is outside 64 bits", param="filter")
        elif isinstance(node, float) and not math.isfinite(node):
            raise ApiError(400, f"'filter': {node} is not a finite number", param="filter")


def api_of(path: str) -> Api:
    """The API a path belongs to, for errors outside a route (unknown paths, the door)."""
    if path.startswith("/api/"):
        return "ollama"
    if path.endswith(("/rerank", "/embed")):
        return "cohere"
    return "openai"


def is_tokens(value: Any) -> bool:
    """An OpenAI token array: a list of ints, or a list of lists of ints."""
    if not isinstance(value, list) or not value:
        return False
    first = value[0]
    if isinstance(first, list):
        return all(isinstance(t, int) and not isinstance(t, bool) for t in first)
    return isinstance(first, int) and not isinstance(first, bool)


def document_text(doc: Any, i: int, fields: list[str] | None) -> str:
    """Cohere documents: strings, or objects with a ``text`` (or the ``rank_fields``)."""
    if isinstance(doc, str):
        return clean_text(doc, f"documents[{i}]")
    if isinstance(doc, dict):
        keys = fields or ["text"]
        missing = [k for k in keys if not isinstance(doc.get(k), str)]
        if missing:
            raise ApiError(400, f"'documents[{i}]' has no string field '{missing[0]}'")
        if fields:
            return clean_text("\n".join(f"{k}: {doc[k]}" for k in keys), f"documents[{i}]")
        return clean_text(doc["text"], f"documents[{i}]")
    raise ApiError(400, f"'documents[{i}]' must be a string or an object with 'text'")


def embedding_types(body: Mapping[str, Any], version: str) -> list[str] | None:
    """Cohere's ``embedding_types``: v2 defaults to float; v1 without it answers the plain
    ``embeddings_floats`` shape (None)."""
    value = body.get("embedding_types")
    if value is None:
        return None if version == "1" else ["float"]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ApiError(
            400, "'embedding_types' must be a non-empty list of strings", param="embedding_types"
        )
    unknown = [t for t in value if t not in EMBEDDING_TYPES]
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
            f"returns {', '.join(EMBEDDING_TYPES)}",
            param="embedding_types",
        )
    return list(dict.fromkeys(value))


async def cohere_rows(vectors: np.ndarray, kind: str) -> list[Any]:
    """One of Cohere's embedding types. binary/ubinary pack the sign bits (x > 0), eight
    dimensions a byte, first dimension in the high bit; binary is ubinary - 128 (signed), as
    sentence-transformers' ``quantize_embeddings`` does."""
    if kind in ("float", "base64"):
        return await vector_rows(vectors, kind)
    packed = np.packbits(vectors > 0, axis=1)
    if kind == "binary":
        return (packed.astype(np.int16) - 128).tolist()  # type: ignore[no-any-return]  # numpy types tolist() as Any
    return packed.tolist()  # type: ignore[no-any-return]  # numpy types tolist() as Any


def error_body(api: Api, err: ApiError) -> dict[str, Any]:
    """The error in the API's own shape."""
    if api == "ollama":
        return {"error": err.message}
    if api == "cohere":
        return {"message": err.message}
    kind = "server_error" if err.status >= 500 else "invalid_request_error"
    return {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}


def as_api_error(exc: Exception, api: Api, path: str) -> ApiError:
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


async def vector_rows(vectors: np.ndarray, fmt: str = "float") -> list[Any]:
    """Vectors as JSON-ready rows (float lists, or base64 of little-endian float32); many of
    them are converted on a thread, off the event loop."""
    if len(vectors) > MANY:
        return await asyncio.to_thread(encode_rows, vectors, fmt)
    return encode_rows(vectors, fmt)


def encode_rows(vectors: np.ndarray, fmt: str) -> list[Any]:
    if fmt == "base64":
        little = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    return vectors.tolist()  # type: ignore[no-any-return]  # numpy types tolist() as Any


async def json_response(data: Any) -> Response:
    """JSON, encoded on a thread when it carries many vectors."""
    # Cohere's v2 embeddings are an object of lists; its "texts" has as many items
    many = isinstance(data, dict) and any(
        isinstance(data.get(k), list) and len(data[k]) > MANY
        for k in ("embeddings", "data", "texts")
    )
    text = await asyncio.to_thread(dumps, data) if many else dumps(data)
    return Response(text, media_type="application/json")


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
