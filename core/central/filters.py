"""lokal's filter language (:mod:`lokal.index.filters`) compiled to PostgreSQL over ``jsonb``.

The same dicts mean the same rows on a central store as on an index file, plus two keys
that name columns instead of metadata: ``site`` (the box a row came from) and ``path`` (the
document's path on that box)::

    {"site": "plant-7", "kind": "manual"}
    {"site": {"$in": ["plant-7", "plant-9"]}, "year": {"$gte": 2020}}

Safety as in the index file: keys must match :data:`~lokal.index.filters.KEY_PATTERN` and
reach SQL only as a bound ``text[]`` path (``metadata #> %s``); every value is a bound
parameter (lists travel as one ``jsonb`` array). Values PostgreSQL cannot hold (NaN, infinity,
strings with NUL or lone surrogates, numbers too long to write) are a
:class:`~lokal.errors.FilterError`, never an SQL error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from lokal.errors import FilterError
from lokal.index.filters import COMPARISONS, KEY_PATTERN, OPERATORS

#: Filter keys that name columns of ``<schema>.chunks`` rather than metadata keys.
COLUMN_KEYS = {"site": "c.site", "path": "c.path"}
_MAX_DEPTH = 32
_SCALAR = (str, int, float, bool)


def _check_key(key: Any) -> list[str]:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        msg = (
            f"invalid metadata key {key!r}: keys are letters, digits, '_' and '-' (dots for "
            "nested fields), starting with a letter or '_'"
        )
        raise FilterError(msg)
    return key.split(".")


def _scalar(value: Any, op: str, key: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            msg = f"{op} on {key!r}: the string is not valid Unicode text"
            raise FilterError(msg) from exc
        if "\x00" in value:
            msg = f"{op} on {key!r}: strings cannot contain NUL characters"
            raise FilterError(msg)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"{op} on {key!r} takes a finite number, not {value!r}"
        raise FilterError(msg)
    if isinstance(value, _SCALAR):
        return value
    msg = f"{op} on {key!r} takes a string, number or boolean, not {type(value).__name__}"
    raise FilterError(msg)


def _norm_sql(x: str) -> str:
    """The jsonb ``x`` with booleans as 0 / 1: Python (and SQLite) hold ``True == 1``."""
    return (
        f"(CASE WHEN jsonb_typeof({x}) = 'boolean' THEN to_jsonb(({x})::boolean::int) ELSE {x} END)"
    )


def _norm(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


#: The value (``{v}``) and an array element (``e``) with booleans as numbers.
NV = _norm_sql("{v}")
NE = _norm_sql("e")


def _json(value: Any, op: str, key: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError as exc:  # e.g. an int longer than Python will write (4300 digits)
        msg = f"{op} on {key!r}: the value cannot be written as JSON ({exc})"
        raise FilterError(msg) from exc


def _list(value: Any, op: str, key: str) -> str:
    if not isinstance(value, list | tuple | set | frozenset):
        msg = f"{op} on {key!r} takes a list, not {type(value).__name__}"
        raise FilterError(msg)
    return _json([_norm(_scalar(v, op, key)) for v in value], op, key)


def compile_filter(flt: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    """``(sql, params)`` over ``<schema>.chunks c`` with psycopg ``%s`` placeholders;
    ``("TRUE", [])`` for no filter."""
    if flt is None or (isinstance(flt, Mapping) and not flt):
        return "TRUE", []
    params: list[Any] = []
    return _node(flt, params, 0), params


def _node(flt: Any, params: list[Any], depth: int) -> str:
    if depth > _MAX_DEPTH:
        msg = f"filter nested deeper than {_MAX_DEPTH} levels"
        raise FilterError(msg)
    if not isinstance(flt, Mapping) or not flt:
        msg = f"a filter is a non-empty dict, got {flt!r}"
        raise FilterError(msg)
    parts = []
    for key, value in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                msg = f"{key} takes a non-empty list of filters"
                raise FilterError(msg)
            joined = f" {key[1:].upper()} ".join(_node(v, params, depth + 1) for v in value)
            parts.append(f"({joined})")
        elif key == "$not":
            parts.append(f"(NOT {_node(value, params, depth + 1)})")
        elif isinstance(key, str) and key.startswith("$"):
            msg = f"unknown filter operator {key!r} at the top level"
            raise FilterError(msg)
        else:
            parts.append(_field(key, value, params))
    return "(" + " AND ".join(parts) + ")"


def _field(key: str, cond: Any, params: list[Any]) -> str:
    path = _check_key(key)
    if not isinstance(cond, Mapping):
        cond = {"$eq": cond}
    if not cond:
        msg = f"empty condition for {key!r}"
        raise FilterError(msg)
    column = COLUMN_KEYS.get(key)
    parts = []
    for op, value in cond.items():
        if column is not None and op == "$eq" and isinstance(value, str):
            parts.append(f"({column} = %s)")  # the plain column: its btree index serves it
            params.append(_scalar(value, op, key))
            continue
        if column is not None:
            v = f"to_jsonb({column})"  # NULL when the column is NULL: "missing"
        else:
            v = "(c.metadata #> %s)"
        parts.append(_condition(op, value, key, v, [] if column else [path], params))
    return "(" + " AND ".join(parts) + ")"


def _condition(op: str, value: Any, key: str, v: str, path: list[Any], params: list[Any]) -> str:
    """SQL for one ``op`` on the jsonb expression ``v``. Templates name it ``{v}``; when ``v``
    binds the key's path (``metadata #> %s``), each use of it binds ``path`` again, in order."""

    def use(template: str, *values: Any) -> str:
        pieces = template.split("{v}")
        it = iter(values)
        for i, piece in enumerate(pieces):
            params.extend(next(it) for _ in range(piece.count("%s")))
            if i < len(pieces) - 1:
                params.extend(path)
        return v.join(pieces)

    if op in COMPARISONS:
        if value is None and op in ("$eq", "$ne"):
            absent = "({v} IS NULL OR jsonb_typeof({v}) = 'null')"
            return use("(NOT " + absent + ")" if op == "$ne" else absent)
        scalar = _scalar(value, op, key)
        if op == "$eq":
            return use(f"({NV} = %s::jsonb)", _json(_norm(scalar), op, key))
        if op == "$ne":
            return use(f"({{v}} IS NULL OR {NV} <> %s::jsonb)", _json(_norm(scalar), op, key))
        if scalar is None or isinstance(scalar, bool):
            msg = f"{op} on {key!r} takes a number or a string, not {value!r}"
            raise FilterError(msg)
        sign = COMPARISONS[op]
        if isinstance(scalar, str):
            # code point order, as Python and SQLite compare text
            return use(
                "(jsonb_typeof({v}) = 'string' AND ({v} #>> '{}') COLLATE \"C\" "
                + sign
                + ' %s COLLATE "C")',
                scalar,
            )
        return use(
            "(jsonb_typeof({v}) = 'number' AND {v} " + sign + " %s::jsonb)",
            _json(scalar, op, key),
        )
    if op in ("$in", "$nin"):
        member = NV + " IN (SELECT jsonb_array_elements(%s::jsonb))"
        if op == "$in":
            return use("(" + member + ")", _list(value, op, key))
        return use("({v} IS NULL OR NOT " + member + ")", _list(value, op, key))
    if op == "$contains":
        return use(
            "(jsonb_typeof({v}) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements({v}) "
            "e WHERE " + NE + " = %s::jsonb))",
            _json(_norm(_scalar(value, op, key)), op, key),
        )
    if op == "$any":
        return use(
            "(jsonb_typeof({v}) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements({v}) "
            "e WHERE " + NE + " IN (SELECT jsonb_array_elements(%s::jsonb))))",
            _list(value, op, key),
        )
    if op == "$all":
        return use(
            "(jsonb_typeof({v}) = 'array' AND NOT EXISTS (SELECT 1 FROM "
            "jsonb_array_elements(%s::jsonb) w WHERE w NOT IN "
            "(SELECT " + NE + " FROM jsonb_array_elements({v}) e)))",
            _list(value, op, key),
        )
    if op in ("$text_match", "$text_match_insensitive"):
        if not isinstance(value, str):
            msg = f"{op} on {key!r} takes a string"
            raise FilterError(msg)
        text = _scalar(value, op, key)
        if op == "$text_match":
            return use("(jsonb_typeof({v}) = 'string' AND strpos({v} #>> '{}', %s) > 0)", text)
        return use(
            "(jsonb_typeof({v}) = 'string' AND strpos(lower({v} #>> '{}'), lower(%s)) > 0)",
            text,
        )
    if op == "$exists":
        return use("({v} IS NOT NULL)" if value else "({v} IS NULL)")
    if op == "$is_empty":
        empty = (
            "({v} IS NULL OR jsonb_typeof({v}) = 'null' OR {v} = '\"\"'::jsonb "
            "OR {v} = '[]'::jsonb)"
        )
        return use(empty if value else "(NOT " + empty + ")")
    msg = f"unknown filter operator {op!r} on {key!r}; known: {', '.join(OPERATORS)}"
    raise FilterError(msg)
