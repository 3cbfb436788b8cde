"""The wire contract between edge, cloud and apps: MQTT topics, payload models, the codec.

Nothing else in gridwatch spells a topic string or a payload field; everything imports
them from here. This package does no I/O.
"""

from protocols.alerts import Alert, OrgPath
from protocols.base import SCHEMA_VERSION, Payload, WireModel
from protocols.catalog import CHANNELS, PAYLOAD_MODELS, ChannelSpec, Direction
from protocols.codec import check_snapshot, decode, decode_message, encode
from protocols.commands import CommandRequest, CommandResponse
from protocols.config import CameraConfig, ConfigFieldError, ConfigReport, ModelSpec, NodeConfig
from protocols.errors import InvalidIdentifier, InvalidPayload, InvalidTopic, ProtocolError
from protocols.events import DetectionEvent, ModelRef, Reading, Snapshot, Telemetry
from protocols.health import CameraHealth, NodeHealth, NodeState, OutboxHealth
from protocols.receipts import Receipt
from protocols.topics import AlertTopic, Channel, NodeTopic, parse_topic

__all__ = [
    "CHANNELS",
    "PAYLOAD_MODELS",
    "SCHEMA_VERSION",
    "Alert",
    "AlertTopic",
    "CameraConfig",
    "CameraHealth",
    "Channel",
    "ChannelSpec",
    "CommandRequest",
    "CommandResponse",
    "ConfigFieldError",
    "ConfigReport",
    "DetectionEvent",
    "Direction",
    "InvalidIdentifier",
    "InvalidPayload",
    "InvalidTopic",
    "ModelRef",
    "ModelSpec",
    "NodeConfig",
    "NodeHealth",
    "NodeState",
    "NodeTopic",
    "OrgPath",
    "OutboxHealth",
    "Payload",
    "ProtocolError",
    "Reading",
    "Receipt",
    "Snapshot",
    "Telemetry",
    "WireModel",
    "check_snapshot",
    "decode",
    "decode_message",
    "encode",
    "parse_topic",
]
