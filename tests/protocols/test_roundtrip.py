"""Every message survives encode → decode unchanged, and matches its exported JSON Schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from protocols import PAYLOAD_MODELS, decode, encode
from protocols.export import json_schema
from tests.protocols.strategies import STRATEGIES

# Generated timestamps lie before 2026; decode as if now were later than all of them.
NOW = datetime(2100, 1, 1, tzinfo=UTC)


def test_every_payload_model_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(PAYLOAD_MODELS)


@pytest.mark.parametrize("model", PAYLOAD_MODELS, ids=lambda m: m.__name__)
def test_roundtrip_keeps_every_field(model: type[Any]) -> None:
    validator = jsonschema.Draft202012Validator(json_schema(model))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(STRATEGIES[model])
    def check(message: Any) -> None:
        raw = encode(message)
        decoded = decode(model, raw, now=NOW)
        assert decoded == message
        assert encode(decoded) == raw
        validator.validate(orjson.loads(raw))

    check()


def test_unknown_fields_are_ignored() -> None:
    from tests.factories import make_detection_event

    event = make_detection_event()
    data = orjson.loads(encode(event))
    data["added_in_a_newer_edge"] = {"anything": [1, 2]}
    decoded = decode(type(event), orjson.dumps(data))
    assert decoded == event
