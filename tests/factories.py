"""Builders for test data: valid messages with overrides, instead of pasted dicts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import uuid6

from protocols import (
    Alert,
    CommandRequest,
    CommandResponse,
    ConfigReport,
    DetectionEvent,
    NodeConfig,
    NodeHealth,
    NodeState,
    Telemetry,
)
from protocols import examples as ex
from protocols.base import utc_now
from protocols.identifiers import uuid7_at


def new_uuid7() -> UUID:
    return UUID(str(uuid6.uuid7()))


def recent(seconds_ago: float = 1.0) -> datetime:
    return utc_now() - timedelta(seconds=seconds_ago)


def _with(example: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = example.model_dump()
    data.update(overrides)
    return data


def make_detection_event(**overrides: Any) -> DetectionEvent:
    """An event; its id is made at its observed time, as a box makes it."""
    observed_at = overrides.get("observed_at", recent())
    event_id = overrides.get("event_id", uuid7_at(observed_at))
    base = {"event_id": event_id, "thread_id": event_id, "observed_at": observed_at}
    return DetectionEvent(**_with(ex.DETECTION_EVENT, {**base, **overrides}))


def make_node_state(**overrides: Any) -> NodeState:
    return NodeState(**_with(ex.NODE_STATE, {"sent_at": recent(), **overrides}))


def make_node_health(**overrides: Any) -> NodeHealth:
    return NodeHealth(**_with(ex.NODE_HEALTH, {"sent_at": recent(), **overrides}))


def make_telemetry(**overrides: Any) -> Telemetry:
    base = {"telemetry_id": new_uuid7(), "observed_at": recent()}
    return Telemetry(**_with(ex.TELEMETRY, {**base, **overrides}))


def make_node_config(**overrides: Any) -> NodeConfig:
    return NodeConfig(**_with(ex.NODE_CONFIG, {"issued_at": recent(), **overrides}))


def make_config_report(**overrides: Any) -> ConfigReport:
    return ConfigReport(**_with(ex.CONFIG_REPORT, {"reported_at": recent(), **overrides}))


def make_command_request(**overrides: Any) -> CommandRequest:
    base = {"request_id": new_uuid7(), "issued_at": recent(), "expires_at": None}
    return CommandRequest(**_with(ex.COMMAND_REQUEST, {**base, **overrides}))


def make_command_response(**overrides: Any) -> CommandResponse:
    base = {"request_id": new_uuid7(), "responded_at": recent()}
    return CommandResponse(**_with(ex.COMMAND_RESPONSE, {**base, **overrides}))


def make_alert(**overrides: Any) -> Alert:
    base = {"alert_id": new_uuid7(), "sent_at": recent()}
    return Alert(**_with(ex.ALERT, {**base, **overrides}))
