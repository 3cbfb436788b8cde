"""The depth check that runs before any JSON parser: exact on real JSON, never recursing,
and limits just above what each payload defines."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import CHANNELS, InvalidPayload, decode_message
from protocols.codec import encode
from protocols.examples import EXAMPLES
from protocols.nesting import exceeds_depth, max_depth
from protocols.topics import events_topic, health_topic
from tests.factories import make_detection_event

# Strings full of what the check must not mistake for structure.
_tricky_text = st.text(st.sampled_from('[]{}"\\ab\n\u00e9'), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_tricky_text, inner, max_size=4),
    max_leaves=40,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@given(json_values, st.integers(0, 8), st.booleans())
def test_the_check_agrees_with_a_parser_on_any_json(value: Any, limit: int, ascii: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii).encode()
    assert exceeds_depth(raw, limit) == (depth_of(value) > limit)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000,  # never closed
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'["' + b"\\" * 10_000 + b'"' + b"[" * 10,  # escaped backslashes, then the string ends
        # A string never closed, full of escaped quotes: a pattern for whole strings
        # backtracked on it for minutes.
        b"[" * 10 + b'"' + b'\\"' * 130_000,
    ],
)
def test_deep_text_is_refused_without_recursion(raw: bytes) -> None:
    assert exceeds_depth(raw, 4)


def test_brackets_inside_strings_are_text() -> None:
    text = json.dumps({"label": "[[[[[[{{{{{{", "zone": 'a\\"[[[[[[[['}).encode()
    assert not exceeds_depth(text, 1)


def test_each_example_fits_its_channel_and_one_level_more_does_not() -> None:
    for spec in CHANNELS.values():
        if spec.payload is None:
            continue
        example = EXAMPLES[spec.payload]
        limit = max_depth(spec.payload)
        raw = encode(example)
        assert not exceeds_depth(raw, limit), spec.channel
        assert exceeds_depth(raw[:-1] + b',"newer":' + b"[" * limit + b"]" * limit + b"}", limit)


def test_a_payload_nested_too_deep_is_refused_naming_the_limit() -> None:
    body = encode(make_detection_event(node_id="qx-deep"))[:-1]
    raw = body + b',"newer_field":' + b"[" * 1000 + b"]" * 1000 + b"}"
    with pytest.raises(InvalidPayload) as error:
        decode_message(events_topic("qx-deep"), raw)
    assert error.value.field == "$"
    assert "nested deeper than 4 levels" in error.value.reason
    with pytest.raises(InvalidPayload, match="nested deeper"):
        decode_message(health_topic("qx-deep"), b"[" * 3000 + b"]" * 3000)
