"""How deeply a payload's JSON may nest and how many values it may hold, and checks of both
that run before any parser.

JSON parsers recurse: a few kilobytes of `[[[[...` made the event decoder raise
RecursionError and stopped ingest. And parsers build an object per value: 128 KiB of empty
arrays in a field nobody reads cost ingest about 28 ms a health report, so a box sending
twenty a second held up every other box's events.

Every payload model has a deepest structure (an event: the event, its snapshot list, a
snapshot), so each gets a limit one level above it (room for an edge newer than its
receiver), and free-form JSON (a command's arguments, a response's data) gets
FREE_FORM_DEPTH levels. `exceeds_depth` decides on the bytes with
C-speed byte operations, never recursing, before the payload reaches a parser.

`exceeds_values` counts the objects and arrays a text opens and the commas between its
values: at most twice the values (objects, arrays, scalars) it holds, and cheap to count.
`max_values` is three times what a payload's model can hold (each list and map at its
largest, free-form JSON at FREE_FORM_VALUES), twice for the count and once more, with
NEWER_FIELD_VALUES, for an edge newer than its receiver.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Final

from pydantic import BaseModel

# Levels of free-form JSON (`JsonValue`) a payload may carry below such a field: a command
# response's `{"labels": [...]}` needs two.
FREE_FORM_DEPTH: Final = 3
# Values free-form JSON may hold, and room for fields a newer edge adds.
FREE_FORM_VALUES: Final = 256
NEWER_FIELD_VALUES: Final = 64

# JSON text reduced to its brackets (objects and arrays alike: only depth matters here),
# its quotes and backslashes.
_STRUCTURE: Final = b'[]{}"\\'
_DROP: Final = bytes(b for b in range(256) if b not in _STRUCTURE)
# For counting values: what starts a container, what separates two values, quotes.
_VALUE_MARKS: Final = b'[{,"'
_DROP_BUT_VALUES: Final = bytes(b for b in range(256) if b not in _VALUE_MARKS)
_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
# An escape and the byte it escapes. Matched left to right, pairs never overlap, so
# `\\"` is an escaped backslash and then a quote; one pass, no backtracking. (A pattern
# for whole strings backtracked on an unclosed one full of `\"`: quadratic, minutes at
# 256 KiB.)
_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)


@cache
def max_depth(model: type[BaseModel]) -> int:
    """The deepest nesting `model` allows in its JSON (the top object is level 1), plus one."""
    schema = model.model_json_schema(mode="validation")
    return _depth(schema, schema.get("$defs", {}), ()) + 1


def _depth(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> int:
    """Levels of objects and arrays below `node` (a JSON Schema), itself included."""
    if node is True or node == {}:
        return FREE_FORM_DEPTH  # any JSON value
    if not isinstance(node, dict):
        return 0
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name in seen:  # a recursive type: only free-form nesting is bounded here
            return FREE_FORM_DEPTH
        return _depth(defs[name], defs, (*seen, name))
    depth = max(
        (_depth(n, defs, seen) for key in ("anyOf", "oneOf", "allOf") for n in node.get(key, [])),
        default=0,
    )
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        inner = [_depth(n, defs, seen) for n in node.get("properties", {}).values()]
        extra = node.get("additionalProperties")
        if extra is not None and extra is not False:
            inner.append(_depth(extra, defs, seen))
        depth = max(depth, 1 + max(inner, default=0))
    if kind == "array":
        items = [node.get("items", True), *node.get("prefixItems", [])]
        depth = max(depth, 1 + max(_depth(n, defs, seen) for n in items))
    return depth


@cache
def max_values(model: type[BaseModel]) -> int | None:
    """The most `exceeds_values` lets `model`'s JSON count (see the module's doc); None where
    a list or map has no largest size (then only the payload's byte limit bounds it)."""
    schema = model.model_json_schema(mode="validation")
    values = _values(schema, schema.get("$defs", {}), ())
    return None if values is None else 3 * values + NEWER_FIELD_VALUES


def _values(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> int | None:
    """The most values a JSON value matching `node` (a JSON Schema) holds, itself included;
    None for no bound."""
    if node is True or node == {}:
        return FREE_FORM_VALUES
    if not isinstance(node, dict):
        return 1
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name in seen:
            return FREE_FORM_VALUES
        return _values(defs[name], defs, (*seen, name))
    branches = [
        _values(n, defs, seen) for key in ("anyOf", "oneOf", "allOf") for n in node.get(key, [])
    ]
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        inner = [_values(n, defs, seen) for n in node.get("properties", {}).values()]
        extra = node.get("additionalProperties")
        if extra is not None and extra is not False:
            most = node.get("maxProperties")
            each = _values(extra, defs, seen)
            inner.append(None if most is None or each is None else most * each)
        branches.append(None if None in inner else 1 + sum(v for v in inner if v is not None))
    elif kind == "array":
        most = node.get("maxItems")
        items = [_values(n, defs, seen) for n in node.get("prefixItems", [])]
        items.append(_values(node.get("items", True), defs, seen))
        if most is None or None in items:
            branches.append(None)
        else:
            branches.append(1 + most * max(v for v in items if v is not None))
    elif not branches:
        return 1
    if None in branches:
        return None
    return max(v for v in branches if v is not None)


def exceeds_values(raw: bytes, limit: int) -> bool:
    """Whether JSON text `raw` opens more than `limit` objects and arrays and commas between
    values together (at most twice the values it holds).

    Exact for well-formed JSON, as `exceeds_depth`; three byte counts when the text holds
    no more of those marks than the limit, text included."""
    if raw.count(b",") + raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    marks = b"".join(raw.translate(None, _DROP_BUT_VALUES).split(b'"')[::2])
    return len(marks) > limit


def exceeds_depth(raw: bytes, limit: int) -> bool:
    """Whether JSON text `raw` nests objects and arrays deeper than `limit`.

    Exact for well-formed JSON; malformed text may be called too deep where a parser
    would have called it malformed (it is refused either way). Costs two byte counts when
    the text holds no more brackets than the limit, as most payloads do."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)  # escaped quotes are not a string's end
    skeleton = raw.translate(_SQUARE, _DROP)
    # Without escapes, quotes pair up: every other piece is a string's text, whose
    # brackets are not structure.
    skeleton = b"".join(skeleton.split(b'"')[::2])
    # Each pass removes the innermost pairs, one level of every nest. An opening bracket
    # never closed may still hold levels: count it in.
    levels = 0
    while b"[]" in skeleton:
        skeleton = skeleton.replace(b"[]", b"")
        levels += 1
        if levels > limit:
            return True
    return levels + skeleton.count(b"[") > limit
