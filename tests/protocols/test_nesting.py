"""The depth and value checks that run before any JSON parser: exact on real JSON, never
recursing, and limits just above what each payload defines."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, JsonValue

from protocols import CHANNELS, DetectionEvent, InvalidPayload, decode_message
from protocols.codec import encode
from protocols.examples import EXAMPLES
from protocols.nesting import (
    NEWER_FIELD_VALUES,
    exceeds_depth,
    exceeds_values,
    max_depth,
    max_values,
)
from protocols.topics import Channel, events_topic, health_topic
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


def values_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(values_of(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(values_of(v) for v in value.values())
    return 1


def marks_of(value: Any) -> int:
    """What `exceeds_values` counts: containers opened and commas between values."""
    if isinstance(value, list | dict):
        inner = list(value.values()) if isinstance(value, dict) else value
        return 1 + max(len(inner) - 1, 0) + sum(marks_of(v) for v in inner)
    return 0


@given(json_values, st.integers(0, 60), st.booleans())
def test_the_value_count_agrees_with_a_parser_on_any_json(
    value: Any, limit: int, ascii: bool
) -> None:
    raw = json.dumps(value, ensure_ascii=ascii).encode()
    assert exceeds_values(raw, limit) == (marks_of(value) > limit)
    assert marks_of(value) <= 2 * values_of(value)  # what max_values allows for


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


def test_each_example_at_its_largest_fits_its_values_and_a_flood_does_not() -> None:
    """The health report of a box with the most cameras passes; the same report with an
    unknown field of empty arrays up to the size limit is refused before parsing."""
    health = CHANNELS[Channel.HEALTH]
    assert health.payload is not None
    example = EXAMPLES[health.payload].model_dump(mode="json")
    camera = example["cameras"][0]
    cameras = [dict(camera, camera_id=f"cam{i:03d}") for i in range(256)]  # the model's most
    raw = orjson.dumps({**example, "cameras": cameras})
    decode_message(health_topic(example["node_id"]), raw)
    flood = raw[:-1] + b',"newer":[' + b"[]," * 25_000 + b"[]]}"
    assert len(flood) < health.max_bytes
    with pytest.raises(InvalidPayload, match=f"more than {max_values(health.payload)} values"):
        decode_message(health_topic(example["node_id"]), flood)


def test_strings_full_of_commas_are_text() -> None:
    body = encode(make_detection_event(node_id="qx-commas"))[:-1]
    limit = max_values(DetectionEvent)
    assert limit is not None
    raw = body + b',"note":"' + b",[{" * limit + b'\\"' + b'"}'
    decode_message(events_topic("qx-commas"), raw)


def test_an_unbounded_map_has_no_value_limit_and_a_bounded_one_does() -> None:
    class Free(BaseModel):
        data: dict[str, JsonValue]

    class Bounded(BaseModel):
        data: dict[str, int] = Field(max_length=3)
        items: list[bool] = Field(max_length=2)

    assert max_values(Free) is None
    assert max_values(Bounded) == 3 * (1 + (1 + 3) + (1 + 2)) + NEWER_FIELD_VALUES
