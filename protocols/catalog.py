"""Every channel of the MQTT API with its payload, direction, QoS, retain flag and size limit.

The AsyncAPI document, the protocols README, broker ACLs and `decode_message` are all made
from this table, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocols.alerts import Alert
from protocols.base import Payload
from protocols.commands import CommandRequest, CommandResponse
from protocols.config import ConfigReport, NodeConfig
from protocols.events import MAX_SNAPSHOT_BYTES, DetectionEvent, Telemetry
from protocols.health import NodeHealth, NodeState
from protocols.receipts import Receipt
from protocols.topics import MAX_TOPIC_BYTES, Channel


class Direction(StrEnum):
    EDGE_TO_CLOUD = "edge→cloud"
    CLOUD_TO_EDGE = "cloud→edge"
    CLOUD_TO_APPS = "cloud→apps"


@dataclass(frozen=True)
class ChannelSpec:
    channel: Channel
    address: str  # AsyncAPI address with {parameters}
    direction: Direction
    qos: int
    retain: bool
    payload: type[Payload] | None  # None: raw JPEG bytes
    max_bytes: int
    summary: str


_NODE = "gw/v1/nodes/{node_id}"

CHANNELS: dict[Channel, ChannelSpec] = {
    spec.channel: spec
    for spec in (
        ChannelSpec(
            Channel.STATE,
            f"{_NODE}/state",
            Direction.EDGE_TO_CLOUD,
            1,
            True,
            NodeState,
            4 * 1024,
            "Online on every connect; the broker publishes the offline last will.",
        ),
        ChannelSpec(
            Channel.HEALTH,
            f"{_NODE}/health",
            Direction.EDGE_TO_CLOUD,
            1,
            False,
            NodeHealth,
            128 * 1024,
            "Node health every health interval.",
        ),
        ChannelSpec(
            Channel.EVENTS,
            f"{_NODE}/events",
            Direction.EDGE_TO_CLOUD,
            1,
            False,
            DetectionEvent,
            16 * 1024,
            "Detection events: start, updates and end of each situation.",
        ),
        ChannelSpec(
            Channel.SNAPSHOTS,
            f"{_NODE}/snapshots/{{event_id}}/{{variant}}",
            Direction.EDGE_TO_CLOUD,
            1,
            False,
            None,
            MAX_SNAPSHOT_BYTES,
            "JPEG bytes of an event's snapshot; metadata is in the event.",
        ),
        ChannelSpec(
            Channel.TELEMETRY,
            f"{_NODE}/telemetry",
            Direction.EDGE_TO_CLOUD,
            1,
            False,
            Telemetry,
            16 * 1024,
            "Sensor readings such as a river water level.",
        ),
        ChannelSpec(
            Channel.CONFIG_DESIRED,
            f"{_NODE}/config/desired",
            Direction.CLOUD_TO_EDGE,
            1,
            True,
            NodeConfig,
            1024 * 1024,
            "The configuration the node should run.",
        ),
        ChannelSpec(
            Channel.CONFIG_REPORTED,
            f"{_NODE}/config/reported",
            Direction.EDGE_TO_CLOUD,
            1,
            True,
            ConfigReport,
            64 * 1024,
            "What the node did with the desired configuration.",
        ),
        ChannelSpec(
            Channel.COMMANDS,
            f"{_NODE}/commands/{{request_id}}",
            Direction.CLOUD_TO_EDGE,
            1,
            False,
            CommandRequest,
            16 * 1024,
            "A command for the node.",
        ),
        ChannelSpec(
            Channel.RESPONSES,
            f"{_NODE}/responses/{{request_id}}",
            Direction.EDGE_TO_CLOUD,
            1,
            False,
            CommandResponse,
            256 * 1024,
            "The node's answer to a command, with the same request id.",
        ),
        ChannelSpec(
            Channel.RECEIPTS,
            f"{_NODE}/receipts",
            Direction.CLOUD_TO_EDGE,
            1,
            False,
            Receipt,
            64 * 1024,
            "The events of the node the county has stored: only a receipt lets the node "
            "forget an event (a PUBACK says only that the broker took it).",
        ),
        ChannelSpec(
            Channel.ALERTS,
            "gw/v1/alerts/{county}/{town}/{village}/{grid}/{kind}",
            Direction.CLOUD_TO_APPS,
            1,
            False,
            Alert,
            32 * 1024,
            "Alerts for grid apps, by jurisdiction; `-` fills levels above a grid.",
        ),
    )
}

PAYLOAD_MODELS: tuple[type[Payload], ...] = tuple(
    spec.payload for spec in CHANNELS.values() if spec.payload is not None
)

# Around a payload, a PUBLISH carries its fixed header (at most 5 bytes), the topic (2 + up to
# MAX_TOPIC_BYTES), a packet id (2) and its properties (none are sent today; room is left for
# a few, such as a message expiry or a correlation id).
PUBLISH_OVERHEAD_BYTES = 5 + 2 + MAX_TOPIC_BYTES + 2 + 1024


def max_packet_bytes() -> int:
    """The largest MQTT packet the protocol allows: the biggest channel's payload limit with
    its PUBLISH around it. A broker may refuse anything larger (Mosquitto: max_packet_size)."""
    return max(spec.max_bytes for spec in CHANNELS.values()) + PUBLISH_OVERHEAD_BYTES
