"""The one way to turn messages into bytes and bytes into messages (orjson + pydantic).

`decode` returns a validated model or raises `InvalidPayload(topic, field, reason)`; it
never returns a half-parsed dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import orjson
from pydantic import ValidationError

from protocols.alerts import Alert
from protocols.base import (
    CONTEXT_MAX_FUTURE_SKEW_S,
    CONTEXT_NOW,
    DEFAULT_MAX_FUTURE_SKEW_S,
    SCHEMA_VERSION,
    Payload,
    utc_now,
)
from protocols.catalog import CHANNELS
from protocols.errors import InvalidPayload, InvalidTopic
from protocols.nesting import exceeds_depth, exceeds_values, max_depth, max_values
from protocols.topics import AlertTopic, Channel, NodeTopic, parse_topic

M = TypeVar("M", bound=Payload)

DEFAULT_MAX_BYTES = 1024 * 1024
_JPEG_MAGIC = b"\xff\xd8\xff"


def encode(message: Payload) -> bytes:
    """Serialise a message for the wire (compact UTF-8 JSON, times in UTC with `Z`).

    The wire carries no NUL character (U+0000): receivers refuse it (PostgreSQL cannot
    store it in text), so a message holding one is refused here, naming the field."""
    data = message.model_dump(mode="json")
    raw = orjson.dumps(data)
    if b"\\u0000" in raw and (field := _path_where(_has_nul, data)):
        raise ValueError(f"{field}: NUL characters (\\u0000) cannot be sent")
    return raw


def _path(loc: tuple[int | str, ...], model: type[Payload]) -> str:
    return ".".join(str(part) for part in loc) if loc else model.__name__


def _path_where(test: Callable[[Any], bool], value: Any, path: str = "") -> str | None:
    """The path of the first value inside `value` (dicts and lists) that passes `test`."""
    if test(value):
        return path or "$"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _path_where(test, item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _has_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _parse_json(raw: bytes, topic: str) -> Any:
    try:
        return orjson.loads(raw)  # validates UTF-8 itself: no separate pass on the hot path
    except orjson.JSONDecodeError as exc:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as utf8:
            raise InvalidPayload(topic, "$", f"not valid UTF-8 (byte {utf8.start})") from None
        # orjson refuses NaN/Infinity literals and overflowing numbers; find the field with
        # the lenient stdlib parser so the error can name it.
        try:
            lenient = json.loads(text)
        except ValueError:
            raise InvalidPayload(topic, "$", f"not valid JSON: {exc}") from None
        field = _path_where(_non_finite, lenient)
        if field is not None:
            raise InvalidPayload(topic, field, "NaN or infinite numbers are not allowed") from None
        raise InvalidPayload(topic, "$", f"not valid JSON: {exc}") from None


def decode(
    model: type[M],
    raw: bytes,
    *,
    topic: str = "",
    now: datetime | None = None,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> M:
    """Decode `raw` into `model` or raise InvalidPayload naming the topic and the field.

    Types are as strict as the published JSON Schema: a number is not taken from a string,
    an integer not from a boolean or a float, a time not from a number."""
    check_unparsed(model, raw, topic=topic, max_bytes=max_bytes)
    obj = _parse_json(raw, topic)
    if not isinstance(obj, dict):
        raise InvalidPayload(topic, "$", "payload must be a JSON object")
    # PostgreSQL cannot store U+0000 in text, and no field has a use for it. A NUL can only
    # arrive escaped (JSON refuses raw control characters): a byte search spares the walk.
    if b"\\u0000" in raw and (field := _path_where(_has_nul, obj)):
        raise InvalidPayload(topic, field, "NUL characters (\\u0000) are not allowed")
    version = obj.get("schema_version", SCHEMA_VERSION)
    # `type(...) is int`: true and 1.0 equal 1 in Python, and are not the integer 1.
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidPayload(
            topic,
            "schema_version",
            f"unsupported schema version {version!r}; this receiver reads {SCHEMA_VERSION}",
        )
    context = {CONTEXT_NOW: now or utc_now(), CONTEXT_MAX_FUTURE_SKEW_S: max_future_skew_s}
    try:
        # Strict JSON mode: pydantic's own parser, the JSON types as the schema states them.
        return model.model_validate_json(raw, strict=True, context=context)
    except ValidationError as exc:
        problems = [
            (_path(error["loc"], model), _reason(error)) for error in exc.errors(include_url=False)
        ]
        raise InvalidPayload(topic, *problems[0], problems=problems) from None


def check_unparsed(
    model: type[Payload], raw: bytes, *, topic: str = "", max_bytes: int = DEFAULT_MAX_BYTES
) -> None:
    """The checks that need no parser (size, depth, how many values), as `decode` makes
    them first; raises InvalidPayload."""
    if len(raw) > max_bytes:
        raise InvalidPayload(topic, "$", f"payload of {len(raw)} bytes exceeds {max_bytes}")
    depth = max_depth(model)
    if exceeds_depth(raw, depth):  # before any parser, all of which recurse
        raise InvalidPayload(topic, "$", f"JSON nested deeper than {depth} levels")
    most = max_values(model)
    if most is not None and exceeds_values(raw, most):  # each value costs the parsers
        raise InvalidPayload(topic, "$", f"JSON holds more than {most} values")


def _reason(error: Mapping[str, Any]) -> str:
    if error["type"] == "uuid_version":  # pydantic's own words name no version
        expected = (error.get("ctx") or {}).get("expected_version")
        try:
            got = f", got version {UUID(str(error['input'])).version}"
        except ValueError:
            got = ""
        return f"must be a UUIDv{expected} (time-ordered){got}"
    return str(error["msg"]).removeprefix("Value error, ")


def check_snapshot(raw: bytes, *, topic: str = "") -> bytes:
    """Check a snapshot payload: a JPEG within the size limit."""
    limit = CHANNELS[Channel.SNAPSHOTS].max_bytes
    if len(raw) > limit:
        raise InvalidPayload(topic, "$", f"snapshot of {len(raw)} bytes exceeds {limit}")
    if not raw.startswith(_JPEG_MAGIC):
        raise InvalidPayload(topic, "$", "snapshot is not a JPEG image")
    return raw


def decode_message(
    topic: str | bytes,
    raw: bytes,
    *,
    now: datetime | None = None,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
) -> tuple[NodeTopic | AlertTopic, Payload | bytes]:
    """Parse the topic, then decode the payload with the channel's model and size limit.

    Raises InvalidTopic for a topic outside the tree and InvalidPayload for a bad payload,
    including one that contradicts its topic (a node speaking for another node).
    """
    if isinstance(topic, bytes):
        try:
            topic = topic.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidTopic(repr(topic), "not valid UTF-8") from None
    parts = parse_topic(topic)
    channel = parts.channel if isinstance(parts, NodeTopic) else Channel.ALERTS
    spec = CHANNELS[channel]
    if spec.payload is None:
        return parts, check_snapshot(raw, topic=topic)
    message = decode(
        spec.payload,
        raw,
        topic=topic,
        now=now,
        max_future_skew_s=max_future_skew_s,
        max_bytes=spec.max_bytes,
    )
    _check_matches_topic(topic, parts, message)
    return parts, message


def _check_matches_topic(topic: str, parts: NodeTopic | AlertTopic, message: Payload) -> None:
    if isinstance(parts, AlertTopic):
        assert isinstance(message, Alert)
        org = message.org
        if (org.county, org.town, org.village, org.grid) != (
            parts.county,
            parts.town,
            parts.village,
            parts.grid,
        ):
            raise InvalidPayload(topic, "org", "does not match the topic's org path")
        if message.kind.value != parts.kind:
            raise InvalidPayload(topic, "kind", "does not match the topic's kind")
        return
    payload_node = getattr(message, "node_id", parts.node_id)
    if payload_node != parts.node_id:
        raise InvalidPayload(
            topic, "node_id", f"{payload_node!r} does not match the topic's {parts.node_id!r}"
        )
    if parts.request_id is not None and getattr(message, "request_id", None) != parts.request_id:
        raise InvalidPayload(topic, "request_id", "does not match the topic's request id")
