"""What a central row holds, and the checks a value passes before PostgreSQL stores it.

:class:`CentralRecord` and :class:`CentralHit` are the index's :class:`~lokal.index.Record` and
:class:`~lokal.index.Hit` with one more field, ``site``; :data:`COLUMNS` and :func:`fields` read
them from a row (as :mod:`lokal.index.records` does for an index file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lokal.index import search
from lokal.index.store import Hit, Record

#: Site names as lokal.central.schema accepts them.
SITE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")

COLUMNS = (
    "c.site, c.chunk_id, c.text, c.metadata, c.path, c.ordinal, c.char_start, c.char_end, "
    "c.line_start, c.line_end, c.tokens"
)


@dataclass(frozen=True)
class CentralRecord(Record):
    """A stored chunk of the central store: a :class:`~lokal.index.Record` and its ``site``."""

    site: str = ""


@dataclass(frozen=True)
class CentralHit(Hit):
    """A search result of the central store: a :class:`~lokal.index.Hit` and its ``site``."""

    site: str = ""


Key = tuple[str, str]  # (site, chunk_id)


def fields(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "site": row[0],
        "id": row[1],
        "text": row[2],
        "metadata": row[3] if isinstance(row[3], dict) else json.loads(row[3]),
        "document": row[4],
        "ordinal": row[5],
        "char_start": row[6],
        "char_end": row[7],
        "line_start": row[8],
        "line_end": row[9],
        "tokens": row[10],
    }


def vector_array(vector: Any) -> np.ndarray:
    """A pgvector value as float32 (pgvector-python >= 0.4 returns ``Vector`` objects)."""
    to_numpy = getattr(vector, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else vector, dtype=np.float32)


def relevance(distance: float) -> float:
    return float(search.relevance(1.0 - float(distance)))


def check_site(site: str) -> None:
    if not isinstance(site, str) or not SITE_PATTERN.match(site):
        msg = f"invalid site name {site!r}: letters, digits, '_', '.' and '-'"
        raise ValueError(msg)


def pg_text(value: str, what: str) -> str:
    if "\x00" in value:
        msg = f"PostgreSQL cannot store a NUL character (in the chunk's {what})"
        raise ValueError(msg)
    return value


def pg_json(metadata: Mapping[str, Any]) -> str:
    text = json.dumps(dict(metadata), allow_nan=False)
    if "\\u0000" in text:
        msg = "PostgreSQL cannot store a NUL character (in the chunk's metadata)"
        raise ValueError(msg)
    return text
