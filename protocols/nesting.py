"""How deeply a payload's JSON may nest, and a check of it that runs before any parser.

JSON parsers recurse: a few kilobytes of `[[[[...` made the event decoder raise
RecursionError and stopped ingest. Every payload model has a deepest structure (an event:
the event, its snapshot list, a snapshot), so each gets a limit one level above it (room
for an edge newer than its receiver), and free-form JSON (a command's arguments, a
response's data) gets FREE_FORM_DEPTH levels. `exceeds_depth` decides on the bytes with
C-speed byte operations, never recursing, before the payload reaches a parser.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Final

from pydantic import BaseModel

# Levels of free-form JSON (`JsonValue`) a payload may carry below such a field: a command
# response's `{"labels": [...]}` needs two.
FREE_FORM_DEPTH: Final = 3

# JSON text reduced to its brackets (objects and arrays alike: only depth matters here),
# its quotes and backslashes.
_STRUCTURE: Final = b'[]{}"\\'
_DROP: Final = bytes(b for b in range(256) if b not in _STRUCTURE)
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
