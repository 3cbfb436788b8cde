"""The MQTT topic tree: builders, subscription filters, and a parser back to typed parts.

Node topics put the node id at a fixed level so one broker ACL pattern (`%u`) confines a
node to its own subtree; alert topics carry the org path so an app follows its
jurisdiction with one wildcard.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from protocols.enums import SnapshotVariant
from protocols.errors import InvalidIdentifier, InvalidTopic
from protocols.identifiers import check_node_id, check_org_code, check_token

ROOT = "gw/v1"  # bump the version segment only for breaking changes
NODES = f"{ROOT}/nodes"
ALERTS = f"{ROOT}/alerts"
NO_UNIT = "-"  # an alert above grid level fills the levels below it with this
MAX_TOPIC_BYTES = 512
SHARED_GROUP_DEFAULT = "ingest"


class Channel(StrEnum):
    """The kinds of topic; the value is the topic's suffix after the node id."""

    STATE = "state"
    HEALTH = "health"
    EVENTS = "events"
    SNAPSHOTS = "snapshots"
    TELEMETRY = "telemetry"
    CONFIG_DESIRED = "config/desired"
    CONFIG_REPORTED = "config/reported"
    COMMANDS = "commands"
    RESPONSES = "responses"
    RECEIPTS = "receipts"
    ALERTS = "alerts"


# ---- builders ---------------------------------------------------------------------------


def node_topic(node_id: str, channel: Channel) -> str:
    """Topic of a fixed-suffix node channel (state, health, events, telemetry, config/*)."""
    if channel in (Channel.SNAPSHOTS, Channel.COMMANDS, Channel.RESPONSES, Channel.ALERTS):
        raise ValueError(f"channel {channel.value} needs its own builder")
    return f"{NODES}/{check_node_id(node_id)}/{channel.value}"


def state_topic(node_id: str) -> str:
    return node_topic(node_id, Channel.STATE)


def health_topic(node_id: str) -> str:
    return node_topic(node_id, Channel.HEALTH)


def events_topic(node_id: str) -> str:
    return node_topic(node_id, Channel.EVENTS)


def telemetry_topic(node_id: str) -> str:
    return node_topic(node_id, Channel.TELEMETRY)


def config_desired_topic(node_id: str) -> str:
    return node_topic(node_id, Channel.CONFIG_DESIRED)


def config_reported_topic(node_id: str) -> str:
    return node_topic(node_id, Channel.CONFIG_REPORTED)


def receipts_topic(node_id: str) -> str:
    return node_topic(node_id, Channel.RECEIPTS)


def snapshot_topic(node_id: str, event_id: UUID, variant: SnapshotVariant) -> str:
    return f"{NODES}/{check_node_id(node_id)}/snapshots/{event_id}/{variant.value}"


def command_topic(node_id: str, request_id: UUID) -> str:
    return f"{NODES}/{check_node_id(node_id)}/commands/{request_id}"


def response_topic(node_id: str, request_id: UUID) -> str:
    return f"{NODES}/{check_node_id(node_id)}/responses/{request_id}"


def _org_segment(code: str | None) -> str:
    return NO_UNIT if code is None else check_org_code(code)


def alert_topic(
    county: str, town: str | None, village: str | None, grid: str | None, kind: str
) -> str:
    """Alert topic; missing lower levels (a town-level road camera) become `-`."""
    if (grid is not None and village is None) or (village is not None and town is None):
        raise InvalidIdentifier(
            "org_code",
            "/".join(map(str, (town, village, grid))),
            "a lower level needs every level above it",
        )
    segments = [
        check_org_code(county),
        _org_segment(town),
        _org_segment(village),
        _org_segment(grid),
        check_token(kind),
    ]
    return f"{ALERTS}/" + "/".join(segments)


# ---- subscription filters ---------------------------------------------------------------


def all_nodes_filter(channel: Channel) -> str:
    """Filter for one channel of every node, e.g. `gw/v1/nodes/+/events`."""
    if channel is Channel.ALERTS:
        raise ValueError("alerts are not a node channel")
    if channel in (Channel.SNAPSHOTS,):
        return f"{NODES}/+/snapshots/+/+"
    if channel in (Channel.COMMANDS, Channel.RESPONSES):
        return f"{NODES}/+/{channel.value}/+"
    return f"{NODES}/+/{channel.value}"


def node_filter(node_id: str) -> str:
    """Everything of one node: its subtree, as its broker ACL allows."""
    return f"{NODES}/{check_node_id(node_id)}/#"


def node_commands_filter(node_id: str) -> str:
    return f"{NODES}/{check_node_id(node_id)}/commands/+"


def shared(filter_: str, group: str = SHARED_GROUP_DEFAULT) -> str:
    """MQTT 5 shared subscription: N subscribers in `group` split the messages."""
    return f"$share/{check_token(group)}/{filter_}"


def alerts_filter(
    county: str,
    town: str | None = None,
    village: str | None = None,
    grid: str | None = None,
    kind: str | None = None,
) -> str:
    """Filter for a jurisdiction: the given levels fixed, everything below them matched.

    `alerts_filter("511725", "511725106")` follows a town, its villages and grids, and the
    town's own alerts (those with `-` below the town).
    """
    levels = [county, town, village, grid]
    fixed: list[str] = []
    for level in levels:
        if level is None:
            break
        fixed.append(check_org_code(level))
    if any(level is not None for level in levels[len(fixed) :]):
        raise InvalidIdentifier("org_code", repr(levels), "a level is set below a missing one")
    rest = ["+"] * (4 - len(fixed))
    kind_segment = "+" if kind is None else check_token(kind)
    return f"{ALERTS}/" + "/".join([*fixed, *rest, kind_segment])


# ---- parser -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeTopic:
    node_id: str
    channel: Channel
    event_id: UUID | None = None
    variant: SnapshotVariant | None = None
    request_id: UUID | None = None


@dataclass(frozen=True)
class AlertTopic:
    county: str
    town: str | None
    village: str | None
    grid: str | None
    kind: str


def _parse_uuid(topic: str, value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidTopic(topic, f"{what} {value!r} is not a UUID") from None


_FIXED_SUFFIXES = {
    ("state",): Channel.STATE,
    ("health",): Channel.HEALTH,
    ("events",): Channel.EVENTS,
    ("telemetry",): Channel.TELEMETRY,
    ("config", "desired"): Channel.CONFIG_DESIRED,
    ("config", "reported"): Channel.CONFIG_REPORTED,
    ("receipts",): Channel.RECEIPTS,
}


def _parse_node_topic(topic: str, rest: list[str]) -> NodeTopic:
    if not rest:
        raise InvalidTopic(topic, "no node id")
    try:
        node_id = check_node_id(rest[0])
    except InvalidIdentifier as exc:
        raise InvalidTopic(topic, exc.reason) from None
    suffix = tuple(rest[1:])
    if suffix in _FIXED_SUFFIXES:
        return NodeTopic(node_id, _FIXED_SUFFIXES[suffix])
    if len(suffix) == 3 and suffix[0] == "snapshots":
        try:
            variant = SnapshotVariant(suffix[2])
        except ValueError:
            raise InvalidTopic(topic, f"unknown snapshot variant {suffix[2]!r}") from None
        event_id = _parse_uuid(topic, suffix[1], "event id")
        return NodeTopic(node_id, Channel.SNAPSHOTS, event_id=event_id, variant=variant)
    if len(suffix) == 2 and suffix[0] in ("commands", "responses"):
        request_id = _parse_uuid(topic, suffix[1], "request id")
        return NodeTopic(node_id, Channel(suffix[0]), request_id=request_id)
    raise InvalidTopic(topic, f"unknown node channel {'/'.join(suffix)!r}")


def _parse_alert_topic(topic: str, rest: list[str]) -> AlertTopic:
    if len(rest) != 5:
        raise InvalidTopic(topic, "alert topics have county/town/village/grid/kind")
    try:
        county = check_org_code(rest[0])
        levels = [None if s == NO_UNIT else check_org_code(s) for s in rest[1:4]]
        kind = check_token(rest[4])
    except InvalidIdentifier as exc:
        raise InvalidTopic(topic, exc.reason) from None
    town, village, grid = levels
    if (grid is not None and village is None) or (village is not None and town is None):
        raise InvalidTopic(topic, "a lower level is set below a missing one")
    return AlertTopic(county, town, village, grid, kind)


@functools.lru_cache(maxsize=8192)
def parse_topic(topic: str) -> NodeTopic | AlertTopic:
    """Split a concrete topic (no wildcards) into its typed parts, or raise InvalidTopic.

    Cached: ingest sees the same few topics per node thousands of times (results are
    immutable, and invalid topics raise, which is not cached)."""
    if not topic:
        raise InvalidTopic(topic, "empty topic")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise InvalidTopic(topic[:64] + "...", f"longer than {MAX_TOPIC_BYTES} bytes")
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise InvalidTopic(topic, "wildcards or NUL are not allowed in a concrete topic")
    if not topic.startswith(ROOT + "/"):
        raise InvalidTopic(topic, f"not under {ROOT}/")
    segments = topic[len(ROOT) + 1 :].split("/")
    if segments[0] == "nodes":
        return _parse_node_topic(topic, segments[1:])
    if segments[0] == "alerts":
        return _parse_alert_topic(topic, segments[1:])
    raise InvalidTopic(topic, f"unknown branch {segments[0]!r}")


def may_be_retained(topic: str) -> bool:
    """Whether the protocol keeps a retained message on `topic` (a node's state, its
    configs); a message retained anywhere else holds broker memory for nothing."""
    from protocols.catalog import CHANNELS  # the catalog builds on this module

    try:
        parts = parse_topic(topic)
    except InvalidTopic:
        return False
    return isinstance(parts, NodeTopic) and CHANNELS[parts.channel].retain
