"""Bad payloads raise InvalidPayload naming the topic, the field and the reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from protocols import (
    CommandResponse,
    ConfigReport,
    DetectionEvent,
    InvalidPayload,
    InvalidTopic,
    NodeConfig,
    decode,
    decode_message,
    encode,
)
from protocols.base import utc_now
from protocols.enums import SnapshotVariant
from protocols.topics import config_desired_topic, events_topic, snapshot_topic
from tests.factories import (
    make_alert,
    make_detection_event,
    make_node_config,
    new_uuid7,
)

NODE = "qx-tuxi-shuangfeng-01"
TOPIC = events_topic(NODE)


def event_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(encode(make_detection_event(node_id=NODE)))
    data.update(overrides)
    return data


def rejected(raw: bytes, model: type[Any] = DetectionEvent, **kwargs: Any) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as caught:
        decode(model, raw, topic=TOPIC, **kwargs)
    assert caught.value.topic == TOPIC
    return caught.value


def test_wrong_schema_version_names_the_field() -> None:
    error = rejected(orjson.dumps(event_dict(schema_version=2)))
    assert error.field == "schema_version"
    assert "unsupported schema version 2" in error.reason


def test_oversize_payload_is_refused_before_parsing() -> None:
    error = rejected(orjson.dumps(event_dict(label="x" * 100)), max_bytes=200)
    assert error.field == "$"
    assert "exceeds 200" in error.reason


def test_oversize_event_on_its_topic_uses_the_channel_limit() -> None:
    padded = event_dict(padding="p" * 20_000)  # unknown field, but the size still counts
    with pytest.raises(InvalidPayload, match="exceeds 16384"):
        decode_message(TOPIC, orjson.dumps(padded))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinite_numbers_name_the_field(literal: str) -> None:
    raw = orjson.dumps(event_dict(score=0.5)).replace(b'"score":0.5', f'"score":{literal}'.encode())
    error = rejected(raw)
    assert error.field == "score"
    assert "NaN or infinite" in error.reason


def test_nan_inside_a_nested_object_names_its_path() -> None:
    raw = orjson.dumps(event_dict()).replace(b'"x":0.41', b'"x":NaN')
    assert rejected(raw).field == "bbox.x"


@pytest.mark.parametrize(
    ("bbox", "field"),
    [
        ({"x": -0.1, "y": 0.1, "w": 0.2, "h": 0.2}, "bbox.x"),
        ({"x": 0.1, "y": 1.5, "w": 0.2, "h": 0.2}, "bbox.y"),
        ({"x": 0.9, "y": 0.1, "w": 0.2, "h": 0.2}, "bbox"),
        ({"x": 0.1, "y": 0.1, "w": 0.0, "h": 0.2}, "bbox.w"),
    ],
)
def test_bbox_outside_the_frame_names_the_field(bbox: dict[str, float], field: str) -> None:
    error = rejected(orjson.dumps(event_dict(bbox=bbox)))
    assert error.field == field


def test_timestamp_beyond_the_allowed_skew_is_refused() -> None:
    future = (utc_now() + timedelta(minutes=10)).isoformat()
    error = rejected(orjson.dumps(event_dict(observed_at=future)))
    assert error.field == "observed_at"
    assert "in the future" in error.reason


def test_timestamp_within_the_skew_is_accepted() -> None:
    soon = (utc_now() + timedelta(seconds=30)).isoformat()
    decode(DetectionEvent, orjson.dumps(event_dict(observed_at=soon)))


def test_skew_is_configurable() -> None:
    soon = (utc_now() + timedelta(seconds=30)).isoformat()
    error = rejected(orjson.dumps(event_dict(observed_at=soon)), max_future_skew_s=5)
    assert error.field == "observed_at"


def test_naive_timestamp_is_refused() -> None:
    error = rejected(orjson.dumps(event_dict(observed_at="2025-11-25T08:30:00")))
    assert error.field == "observed_at"


def test_non_utf8_bytes_are_refused() -> None:
    raw = orjson.dumps(event_dict(label="人")).replace("人".encode(), b"\xff\xfe")
    error = rejected(raw)
    assert "UTF-8" in error.reason


def test_invalid_json_is_refused() -> None:
    assert "not valid JSON" in rejected(b'{"event_id": ').reason


def test_json_that_is_not_an_object_is_refused() -> None:
    assert "JSON object" in rejected(b"[1, 2]").reason


def test_missing_field_is_named() -> None:
    data = event_dict()
    del data["seq"]
    assert rejected(orjson.dumps(data)).field == "seq"


def test_event_id_must_be_uuid7() -> None:
    data = event_dict(event_id="3f688b56-1189-485f-8e97-bb2f540f57a3")
    error = rejected(orjson.dumps(data))
    assert error.field == "event_id"
    assert "UUIDv7" in error.reason


def test_start_event_must_open_its_own_thread() -> None:
    error = rejected(orjson.dumps(event_dict(thread_id=str(new_uuid7()))))
    assert error.field == "DetectionEvent"
    assert "thread_id" in error.reason


def test_crowd_start_needs_a_count() -> None:
    error = rejected(orjson.dumps(event_dict(kind="crowd", count=None)))
    assert "count" in error.reason


def test_all_problems_are_kept_for_a_config_report() -> None:
    data = orjson.loads(encode(make_node_config(node_id=NODE)))
    data["version"] = 0
    data["cameras"][0]["detect_fps"] = -1
    with pytest.raises(InvalidPayload) as caught:
        decode(NodeConfig, orjson.dumps(data), topic=config_desired_topic(NODE))
    fields = [field for field, _ in caught.value.problems]
    assert fields == ["version", "cameras.0.detect_fps"]


def test_self_intersecting_zone_names_the_rule_zone() -> None:
    data = orjson.loads(encode(make_node_config(node_id=NODE)))
    data["cameras"][0]["rules"][0]["zone"] = [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]
    with pytest.raises(InvalidPayload) as caught:
        decode(NodeConfig, orjson.dumps(data))
    assert caught.value.field == "cameras.0.rules.0.intrusion.zone"
    assert "self-intersecting" in caught.value.reason


def test_zone_coordinates_outside_the_frame_are_refused() -> None:
    data = orjson.loads(encode(make_node_config(node_id=NODE)))
    data["cameras"][0]["rules"][0]["zone"] = [[0.1, 0.1], [1.2, 0.1], [0.5, 0.9]]
    with pytest.raises(InvalidPayload) as caught:
        decode(NodeConfig, orjson.dumps(data))
    assert caught.value.field == "cameras.0.rules.0.intrusion.zone.1.0"


def test_credentials_in_a_camera_url_are_refused() -> None:
    data = orjson.loads(encode(make_node_config(node_id=NODE)))
    data["cameras"][0]["url"] = "rtsp://admin:12345@192.168.1.64/Streaming/Channels/102"
    with pytest.raises(InvalidPayload) as caught:
        decode(NodeConfig, orjson.dumps(data))
    assert caught.value.field == "cameras.0.url"


def test_rejected_report_needs_errors() -> None:
    with pytest.raises(InvalidPayload) as caught:
        decode(
            ConfigReport,
            orjson.dumps(
                {
                    "node_id": NODE,
                    "version": 3,
                    "status": "rejected",
                    "reported_at": utc_now().isoformat(),
                    "errors": [],
                }
            ),
        )
    assert "errors" in caught.value.reason


def test_error_response_needs_an_error_message() -> None:
    with pytest.raises(InvalidPayload) as caught:
        decode(
            CommandResponse,
            orjson.dumps(
                {
                    "request_id": str(new_uuid7()),
                    "node_id": NODE,
                    "status": "error",
                    "responded_at": utc_now().isoformat(),
                }
            ),
        )
    assert "error message" in caught.value.reason


def test_payload_for_another_node_is_refused_on_its_topic() -> None:
    raw = encode(make_detection_event(node_id="qx-other-node"))
    with pytest.raises(InvalidPayload) as caught:
        decode_message(TOPIC, raw)
    assert caught.value.field == "node_id"


def test_alert_must_match_its_topic_org_path() -> None:
    alert = make_alert()
    topic = "gw/v1/alerts/511725/511725106/511725106201/511725106299001/intrusion"
    with pytest.raises(InvalidPayload) as caught:
        decode_message(topic, encode(alert))
    assert caught.value.field == "org"


def test_snapshot_must_be_a_jpeg() -> None:
    topic = snapshot_topic(NODE, new_uuid7(), SnapshotVariant.FRAME)
    with pytest.raises(InvalidPayload, match="not a JPEG"):
        decode_message(topic, b"GIF89a....")


def test_non_utf8_topic_is_refused() -> None:
    with pytest.raises(InvalidTopic, match="UTF-8"):
        decode_message(b"gw/v1/nodes/\xff/events", b"{}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"label": "per\u0000son"}, "label"),
        ({"model": {"profile": "yolox\u0000", "sha256": None}}, "model.profile"),
        ({"later_field": ["ok", "\u0000"]}, "later_field.1"),
    ],
)
def test_nul_characters_are_refused_with_the_field_named(
    change: dict[str, object], field: str
) -> None:
    error = rejected(orjson.dumps(event_dict(**change)))
    assert error.field == field
    assert "NUL characters" in error.reason


def test_an_escaped_backslash_before_u0000_is_no_nul() -> None:
    raw = orjson.dumps(event_dict(label="c:\\u0000"))
    assert b"\\\\u0000" in raw  # the byte search matches; the text holds no NUL
    assert decode_message(TOPIC, raw)[1].label == "c:\\u0000"  # type: ignore[union-attr]


def test_a_message_holding_a_nul_is_not_sent() -> None:
    event = make_detection_event(label="per\u0000son")
    with pytest.raises(ValueError, match="label: NUL characters"):
        encode(event)
