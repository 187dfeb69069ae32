"""A batch of upserts as PostgreSQL's binary COPY stream, in the central table's column order.

Encoding the whole batch as bytes, rather than row by row into psycopg's ``write_row``, lets
``lokal sync`` do it in its reader thread while the server applies the batch before
(:mod:`lokal.central.applying`), so the client's CPU overlaps the server's instead of taking
turns with it; it is also a little cheaper (~7 us a row at 384 dimensions against ~10 us for
``write_row`` with pgvector's dumper, here). The stream is PostgreSQL's "Binary Format" of
COPY: a signature, then per row a field count and each field as a length and its bytes in
the type's binary form, then a trailer. A batch's vectors become big-endian float32 at once.

Types (:data:`lokal.central.schema.COLUMN_TYPES`): ``text`` as UTF-8, ``int4`` big-endian,
``jsonb`` as version byte 1 and the JSON text, ``vector`` (pgvector) as dimension (int2),
an unused int2 and the big-endian float4 values.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from lokal.index.feed import Change

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_INT4 = struct.Struct("!i")
_FIELDS = struct.Struct("!h").pack(12)  # schema.COLUMNS
_INT4_LENGTH = _INT4.pack(4)


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return _INT4.pack(len(data)) + data


def _int4(value: int | None) -> bytes:
    return _NULL if value is None else _INT4_LENGTH + _INT4.pack(value)


def encode(site: str, upserts: Sequence[Change]) -> bytes:
    """The whole COPY stream (signature to trailer) of ``upserts`` for ``site``, in the order
    of :data:`lokal.central.schema.COLUMNS`. Every upsert has a vector of one dimension."""
    dimension = len(upserts[0].vector) if upserts and upserts[0].vector is not None else 0
    vectors = np.empty((len(upserts), dimension), dtype=">f4")
    for i, c in enumerate(upserts):
        if c.vector is None or len(c.vector) != dimension:
            msg = f"change {c.seq} ({c.chunk_id}) has no vector of {dimension} floats"
            raise ValueError(msg)
        vectors[i] = c.vector
    raw = vectors.tobytes()
    size = 4 * dimension
    vector_head = _INT4.pack(4 + size) + struct.pack("!HH", dimension, 0)
    site_field = _text(site)
    parts = [SIGNATURE]
    add = parts.append
    for i, c in enumerate(upserts):
        metadata = b"\x01" + c.metadata_json.encode()
        add(_FIELDS)
        add(site_field)
        add(_text(c.chunk_id))
        add(_text(c.document))
        add(_int4(c.ordinal))
        add(_text(c.text))
        add(_int4(c.char_start))
        add(_int4(c.char_end))
        add(_int4(c.line_start))
        add(_int4(c.line_end))
        add(_int4(c.tokens))
        add(_INT4.pack(len(metadata)))
        add(metadata)
        add(vector_head)
        add(raw[i * size : (i + 1) * size])
    add(TRAILER)
    return b"".join(parts)
