"""Broker access rules derived from the channel table: what a node, each cloud process and
an app may read and write. Rendered into the broker's own terms (Mosquitto's dynamic-security
roles) by whoever manages the broker."""

from __future__ import annotations

import re
from enum import StrEnum

from protocols.catalog import CHANNELS, ChannelSpec, Direction
from protocols.topics import Channel, alerts_filter

NODE_PLACEHOLDER = "%u"  # Mosquitto's acl_file substitutes the client's username


class Access(StrEnum):
    READ = "read"  # subscribe to the filter and receive what matches it
    WRITE = "write"  # publish to topics the filter matches


def _filter_of(spec: ChannelSpec, node_id: str) -> str:
    address = spec.address.replace("{node_id}", node_id)
    return re.sub(r"\{[a-z_]+\}", "+", address)


def node_acl(node_id: str = NODE_PLACEHOLDER) -> list[tuple[Access, str]]:
    """A node writes what it reports and reads its desired config and commands, only under
    its own id (the plugin does not substitute placeholders: one set of rules per node)."""
    rules = []
    for spec in CHANNELS.values():
        if spec.direction is Direction.EDGE_TO_CLOUD:
            rules.append((Access.WRITE, _filter_of(spec, node_id)))
        elif spec.direction is Direction.CLOUD_TO_EDGE:
            rules.append((Access.READ, _filter_of(spec, node_id)))
    return rules


def cloud_acl() -> list[tuple[Access, str]]:
    """The cloud as a whole reads every node's reports and writes configs, commands,
    receipts and alerts."""
    rules = []
    for spec in CHANNELS.values():
        access = Access.READ if spec.direction is Direction.EDGE_TO_CLOUD else Access.WRITE
        rules.append((access, _filter_of(spec, "+")))
    return rules


def ingest_acl() -> list[tuple[Access, str]]:
    """Ingest reads every node's reports (on the broker, only as a member of its shared
    subscription group), and writes only where the protocol retains nothing: to remove a
    retained copy a box left there (an empty retained message)."""
    rules: list[tuple[Access, str]] = [r for r in cloud_acl() if r[0] is Access.READ]
    for spec in CHANNELS.values():
        if spec.direction is Direction.EDGE_TO_CLOUD and not spec.retain:
            rules.append((Access.WRITE, _filter_of(spec, "+")))
    rules.append((Access.WRITE, _filter_of(CHANNELS[Channel.RECEIPTS], "+")))
    return rules


def api_acl() -> list[tuple[Access, str]]:
    """The API writes desired configs, commands and alerts (receipts are ingest's: only
    what stored an event may say so), and reads nothing."""
    receipts = _filter_of(CHANNELS[Channel.RECEIPTS], "+")
    return [
        (access, topic)
        for access, topic in cloud_acl()
        if access is Access.WRITE and topic != receipts
    ]


def app_acl(
    county: str, town: str | None = None, village: str | None = None, grid: str | None = None
) -> list[tuple[Access, str]]:
    """A grid app or integration reads the alerts of its jurisdiction and nothing else. The
    rule ends in `#` so that both forms of following a jurisdiction are allowed: the broker
    checks a SUBSCRIBE filter against the rule as if it were a topic, and `.../+/+/+` names
    no topic that `.../#` (as a filter) does not match, while the reverse does not hold."""
    levels = alerts_filter(county, town, village, grid).split("/")
    fixed = [level for level in levels[:-1] if level != "+"]
    return [(Access.READ, "/".join([*fixed, "#"]))]
