"""One metadata filter language for lokal's index, compiled to SQL with bound parameters.

The language is the dict style LangChain vector stores use, taken as JSON by the CLI and HTTP::

    {"kind": "manual"}                                   equality
    {"year": {"$gte": 2020}, "lang": {"$in": ["de", "en"]}}   several keys: all must hold
    {"$or": [{"kind": "manual"}, {"$not": {"draft": True}}]}

Comparison: ``$eq $ne $gt $gte $lt $lte $in $nin``; logic: ``$and $or $not``; arrays:
``$contains`` (the array holds the value), ``$any``, ``$all``; text: ``$text_match``
(substring), ``$text_match_insensitive``; presence: ``$exists``, ``$is_empty``. A missing key
never equals anything, except that ``None`` means "missing or null"; ``$ne`` and ``$nin``
match rows where the key is missing. Array operators match arrays only, text operators text
only, and ordering compares numbers with numbers and text with text.

Safety: keys must match :data:`KEY_PATTERN` (letters, digits, ``_``, ``-``, dotted paths for
nested objects) before they reach SQL, and every value is a bound parameter. Long ``$in``
lists travel as one JSON parameter, so no list is too long for SQLite's variable limit.

Limits, checked before any SQL runs (each a :class:`~lokal.errors.FilterError`): integers fit
SQLite's 64 bits, numbers are finite, a filter has at most :data:`MAX_CONDITIONS` conditions
and :data:`_MAX_DEPTH` levels. ``$and``/``$or`` lists are joined as balanced trees, so a long
list stays far below SQLite's expression depth limit (1,000).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from lokal.errors import FilterError

KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}(\.[A-Za-z_][A-Za-z0-9_-]{0,127}){0,7}$")
_SCALAR = (str, int, float, bool)
_MAX_DEPTH = 32
#: Conditions (one per operator on a key) in one filter. A list of many values for one key is
#: one ``$in`` condition, with no limit.
MAX_CONDITIONS = 1000
_INT64 = (-(2**63), 2**63 - 1)

COMPARISONS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = (
    *COMPARISONS,
    "$in",
    "$nin",
    "$contains",
    "$any",
    "$all",
    "$text_match",
    "$text_match_insensitive",
    "$exists",
    "$is_empty",
)


def _path(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        msg = (
            f"invalid metadata key {key!r}: keys are letters, digits, '_' and '-' (dots for "
            "nested fields), starting with a letter or '_'"
        )
        raise FilterError(msg)
    return "$." + ".".join(f'"{part}"' for part in key.split("."))


def _scalar(value: Any, op: str, key: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if not _INT64[0] <= value <= _INT64[1]:
            msg = (
                f"{op} on {key!r}: the integer {value} does not fit in 64 bits (SQLite's "
                f"integers run from {_INT64[0]} to {_INT64[1]})"
            )
            raise FilterError(msg)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"{op} on {key!r} takes a finite number, not {value!r}"
        raise FilterError(msg)
    if value is None or isinstance(value, _SCALAR):
        return value
    msg = f"{op} on {key!r} takes a string, number or boolean, not {type(value).__name__}"
    raise FilterError(msg)


def _list(value: Any, op: str, key: str) -> str:
    if not isinstance(value, list | tuple | set | frozenset):
        msg = f"{op} on {key!r} takes a list, not {type(value).__name__}"
        raise FilterError(msg)
    return json.dumps([_scalar(v, op, key) for v in value])


def compile_filter(
    flt: Mapping[str, Any] | None, column: str = "c.metadata"
) -> tuple[str, list[Any]]:
    """``(sql, params)`` for a filter over the JSON ``column``; ``("1", [])`` for no filter."""
    if not flt:
        return "1", []
    params: list[Any] = []
    sql = _node(flt, column, params, 0, [0])
    return sql, params


def _balanced(parts: list[str], op: str) -> str:
    """``parts`` joined by ``op`` as a balanced tree: depth log2(n), not n."""
    if len(parts) == 1:
        return parts[0]
    mid = len(parts) // 2
    return f"({_balanced(parts[:mid], op)} {op} {_balanced(parts[mid:], op)})"


def _count(conditions: list[int], n: int = 1) -> None:
    conditions[0] += n
    if conditions[0] > MAX_CONDITIONS:
        msg = (
            f"filter has more than {MAX_CONDITIONS} conditions; for many values of one key "
            'use one "$in" list: {"key": {"$in": [...]}}'
        )
        raise FilterError(msg)


def _node(flt: Any, column: str, params: list[Any], depth: int, conditions: list[int]) -> str:
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
            children = [_node(v, column, params, depth + 1, conditions) for v in value]
            parts.append(f"({_balanced(children, key[1:].upper())})")
        elif key == "$not":
            parts.append(f"(NOT {_node(value, column, params, depth + 1, conditions)})")
        elif isinstance(key, str) and key.startswith("$"):
            msg = f"unknown filter operator {key!r} at the top level"
            raise FilterError(msg)
        else:
            parts.append(_field(key, value, column, params, conditions))
    return "(" + _balanced(parts, "AND") + ")"


def _field(key: str, cond: Any, column: str, params: list[Any], conditions: list[int]) -> str:
    path = _path(key)
    if not isinstance(cond, Mapping):
        cond = {"$eq": cond}
    if not cond:
        msg = f"empty condition for {key!r}"
        raise FilterError(msg)
    _count(conditions, len(cond))
    value_sql = f"json_extract({column}, ?)"
    parts = []
    for op, value in cond.items():
        if op in COMPARISONS:
            if value is None and op in ("$eq", "$ne"):
                # None means "missing or JSON null"
                absent = f"coalesce(json_type({column}, ?), 'null') = 'null'"
                parts.append(f"(NOT {absent})" if op == "$ne" else f"({absent})")
                params.append(path)
                continue
            if op == "$ne":
                parts.append(f"({value_sql} IS NULL OR {value_sql} != ?)")
                params.extend([path, path, _scalar(value, op, key)])
            elif op == "$eq":
                parts.append(f"({value_sql} = ?)")
                params.extend([path, _scalar(value, op, key)])
            else:
                # Order only within one kind (numbers with numbers, text with text), as Python
                # does; SQLite alone would call every text greater than every number.
                value = _scalar(value, op, key)
                if value is None or isinstance(value, bool):
                    msg = f"{op} on {key!r} takes a number or a string, not {value!r}"
                    raise FilterError(msg)
                kinds = "('text')" if isinstance(value, str) else "('integer', 'real')"
                parts.append(
                    f"(json_type({column}, ?) IN {kinds} AND {value_sql} {COMPARISONS[op]} ?)"
                )
                params.extend([path, path, value])
        elif op in ("$in", "$nin"):
            member = f"{value_sql} IN (SELECT value FROM json_each(?))"
            if op == "$in":
                parts.append(f"({member})")
                params.extend([path, _list(value, op, key)])
            else:
                parts.append(f"({value_sql} IS NULL OR NOT {member})")
                params.extend([path, path, _list(value, op, key)])
        elif op == "$contains":
            parts.append(
                f"(json_type({column}, ?) = 'array' AND EXISTS "
                f"(SELECT 1 FROM json_each({column}, ?) WHERE value = ?))"
            )
            params.extend([path, path, _scalar(value, op, key)])
        elif op == "$any":
            parts.append(
                f"(json_type({column}, ?) = 'array' AND EXISTS (SELECT 1 FROM "
                f"json_each({column}, ?) WHERE value IN (SELECT value FROM json_each(?))))"
            )
            params.extend([path, path, _list(value, op, key)])
        elif op == "$all":
            parts.append(
                f"(json_type({column}, ?) = 'array' AND NOT EXISTS (SELECT 1 FROM "
                f"json_each(?) w WHERE w.value NOT IN (SELECT value FROM "
                f"json_each({column}, ?))))"
            )
            params.extend([path, _list(value, op, key), path])
        elif op in ("$text_match", "$text_match_insensitive"):
            if not isinstance(value, str):
                msg = f"{op} on {key!r} takes a string"
                raise FilterError(msg)
            text = f"json_type({column}, ?) = 'text'"
            if op == "$text_match":
                parts.append(f"({text} AND instr({value_sql}, ?) > 0)")
            else:
                parts.append(f"({text} AND instr(lower({value_sql}), lower(?)) > 0)")
            params.extend([path, path, value])
        elif op == "$exists":
            parts.append(f"(json_type({column}, ?) IS {'NOT ' if value else ''}NULL)")
            params.append(path)
        elif op == "$is_empty":
            empty = (
                f"(json_type({column}, ?) IS NULL OR json_type({column}, ?) = 'null' OR "
                f"{value_sql} = '' OR (json_type({column}, ?) = 'array' AND "
                f"json_array_length({column}, ?) = 0))"
            )
            parts.append(empty if value else f"(NOT {empty})")
            params.extend([path] * 5)
        else:
            msg = f"unknown filter operator {op!r} on {key!r}; known: {', '.join(OPERATORS)}"
            raise FilterError(msg)
    return "(" + _balanced(parts, "AND") + ")"


def matches(flt: Mapping[str, Any] | None, metadata: Mapping[str, Any]) -> bool:
    """Evaluate a filter on one metadata dict in Python (reference semantics for tests)."""
    if not flt:
        return True
    return _eval(flt, metadata)


_MISSING = object()


def _get(meta: Mapping[str, Any], key: str) -> Any:
    cur: Any = meta
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _eval(flt: Mapping[str, Any], meta: Mapping[str, Any]) -> bool:
    for key, value in flt.items():
        if key == "$and":
            ok = all(_eval(v, meta) for v in value)
        elif key == "$or":
            ok = any(_eval(v, meta) for v in value)
        elif key == "$not":
            ok = not _eval(value, meta)
        else:
            cond = value if isinstance(value, Mapping) else {"$eq": value}
            ok = all(_eval_op(op, _get(meta, key), v) for op, v in cond.items())
        if not ok:
            return False
    return True


def _eval_op(op: str, have: Any, want: Any) -> bool:
    if op == "$exists":
        return (have is not _MISSING) == bool(want)
    if op == "$is_empty":
        empty = have is _MISSING or have is None or have == "" or have == []
        return empty == bool(want)
    if op in ("$eq", "$ne") and want is None:
        return (have is _MISSING or have is None) == (op == "$eq")
    if op in ("$ne", "$nin") and have is _MISSING:
        return True
    if have is _MISSING:
        return False
    if op == "$eq":
        return bool(have == want)
    if op == "$ne":
        return bool(have != want)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if isinstance(have, bool) or (isinstance(have, str) != isinstance(want, str)):
            return False
        try:
            result = {
                "$gt": have > want,
                "$gte": have >= want,
                "$lt": have < want,
                "$lte": have <= want,
            }[op]
        except TypeError:
            return False
        return bool(result)
    if op == "$in":
        return have in want
    if op == "$nin":
        return have not in want
    seq = have if isinstance(have, list) else []
    if op == "$contains":
        return want in seq
    if op == "$any":
        return any(w in seq for w in want)
    if op == "$all":
        return isinstance(have, list) and all(w in seq for w in want)
    if op == "$text_match":
        return isinstance(have, str) and want in have
    if op == "$text_match_insensitive":
        return isinstance(have, str) and want.lower() in have.lower()
    msg = f"unknown filter operator {op!r}"
    raise FilterError(msg)
