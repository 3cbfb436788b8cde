"""Topic builders, filters and the parser, including hostile identifiers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from protocols import topics
from protocols.acl import Access, app_acl, cloud_acl, node_acl
from protocols.catalog import CHANNELS
from protocols.enums import SnapshotVariant
from protocols.errors import InvalidIdentifier, InvalidTopic
from protocols.topics import AlertTopic, Channel, NodeTopic, parse_topic
from tests.factories import new_uuid7
from tests.protocols.strategies import node_ids, org_codes, tokens

NODE = "qx-tuxi-shuangfeng-01"

HOSTILE_IDS = [
    "",
    "a/b",
    "+",
    "#",
    "node+",
    "node#",
    "$SYS",
    "../x",
    "a b",
    "node\n",
    "\x00",
    "节点",
    "-leading-dash",
    "_leading",
    "x" * 65,
    "node\u200b",
]


@pytest.mark.parametrize("node_id", HOSTILE_IDS)
def test_hostile_node_ids_are_refused_by_every_builder(node_id: str) -> None:
    builders = [
        topics.state_topic,
        topics.events_topic,
        topics.health_topic,
        topics.config_desired_topic,
        topics.node_filter,
        lambda n: topics.command_topic(n, new_uuid7()),
    ]
    for build in builders:
        with pytest.raises(InvalidIdentifier):
            build(node_id)


@pytest.mark.parametrize("node_id", HOSTILE_IDS[1:])
def test_hostile_node_ids_are_refused_by_the_parser(node_id: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_topic(f"gw/v1/nodes/{node_id}/events")


@given(node_ids)
def test_node_topics_roundtrip(node_id: str) -> None:
    for channel in (
        Channel.STATE,
        Channel.HEALTH,
        Channel.EVENTS,
        Channel.TELEMETRY,
        Channel.CONFIG_DESIRED,
        Channel.CONFIG_REPORTED,
    ):
        assert parse_topic(topics.node_topic(node_id, channel)) == NodeTopic(node_id, channel)


def test_snapshot_command_and_response_topics_roundtrip() -> None:
    event_id, request_id = new_uuid7(), new_uuid7()
    assert parse_topic(topics.snapshot_topic(NODE, event_id, SnapshotVariant.CROP)) == NodeTopic(
        NODE, Channel.SNAPSHOTS, event_id=event_id, variant=SnapshotVariant.CROP
    )
    assert parse_topic(topics.command_topic(NODE, request_id)) == NodeTopic(
        NODE, Channel.COMMANDS, request_id=request_id
    )
    assert parse_topic(topics.response_topic(NODE, request_id)) == NodeTopic(
        NODE, Channel.RESPONSES, request_id=request_id
    )


@given(org_codes, st.lists(org_codes, max_size=3), tokens)
def test_alert_topics_roundtrip(county: str, lower: list[str], kind: str) -> None:
    levels = [*lower, None, None, None][:3]
    topic = topics.alert_topic(county, *levels, kind)
    assert parse_topic(topic) == AlertTopic(county, *levels, kind)


def test_alert_above_grid_level_uses_placeholders() -> None:
    topic = topics.alert_topic("511725", "511725106", None, None, "node_offline")
    assert topic == "gw/v1/alerts/511725/511725106/-/-/node_offline"


def test_alert_topic_refuses_a_gap_in_the_path() -> None:
    with pytest.raises(InvalidIdentifier):
        topics.alert_topic("511725", None, "511725106201", None, "intrusion")
    with pytest.raises(InvalidTopic):
        parse_topic("gw/v1/alerts/511725/-/511725106201/-/intrusion")


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "gw/v2/nodes/n1/events",
        "gw/v1/nodes",
        "gw/v1/nodes/n1",
        "gw/v1/nodes/n1/unknown",
        "gw/v1/nodes/n1/events/extra",
        "gw/v1/nodes/n1/snapshots/not-a-uuid/frame",
        "gw/v1/nodes/n1/snapshots/01a211d3-73b8-7cfb-9c56-2dbaf68e978b/thumbnail",
        "gw/v1/nodes/n1/commands/xyz",
        "gw/v1/nodes/+/events",
        "gw/v1/nodes/#",
        "gw/v1/alerts/511725/511725106/-/-",
        "gw/v1/alerts/511725/5117/-/-/Intrusion",
        "gw/v1/other/x",
        "/gw/v1/nodes/n1/events",
        "gw/v1/nodes//events",
        "gw/v1/nodes/n1/" + "a" * 600,
    ],
)
def test_malformed_topics_are_refused_with_a_reason(topic: str) -> None:
    with pytest.raises(InvalidTopic) as caught:
        parse_topic(topic)
    assert caught.value.reason


def test_filters_match_the_topics_they_are_for() -> None:
    event_id, request_id = new_uuid7(), new_uuid7()
    assert topic_matches_sub(topics.all_nodes_filter(Channel.EVENTS), topics.events_topic(NODE))
    assert not topic_matches_sub(topics.all_nodes_filter(Channel.EVENTS), topics.health_topic(NODE))
    assert topic_matches_sub(
        topics.all_nodes_filter(Channel.SNAPSHOTS),
        topics.snapshot_topic(NODE, event_id, SnapshotVariant.FRAME),
    )
    assert topic_matches_sub(
        topics.all_nodes_filter(Channel.RESPONSES), topics.response_topic(NODE, request_id)
    )
    assert topic_matches_sub(
        topics.node_commands_filter(NODE), topics.command_topic(NODE, request_id)
    )
    assert topic_matches_sub(topics.node_filter(NODE), topics.config_desired_topic(NODE))
    assert not topic_matches_sub(topics.node_filter(NODE), topics.events_topic("other"))


def test_jurisdiction_filter_covers_its_units_and_not_the_neighbours() -> None:
    town_filter = topics.alerts_filter("511725", "511725106")
    grid_alert = topics.alert_topic(
        "511725", "511725106", "511725106201", "511725106201003", "intrusion"
    )
    town_alert = topics.alert_topic("511725", "511725106", None, None, "node_offline")
    neighbour = topics.alert_topic("511725", "511725107", "511725107201", None, "crowd")
    assert topic_matches_sub(town_filter, grid_alert)
    assert topic_matches_sub(town_filter, town_alert)
    assert not topic_matches_sub(town_filter, neighbour)
    grid_filter = topics.alerts_filter("511725", "511725106", "511725106201", "511725106201003")
    assert topic_matches_sub(grid_filter, grid_alert)
    assert not topic_matches_sub(grid_filter, town_alert)


def test_shared_subscription_wraps_the_filter() -> None:
    assert topics.shared("gw/v1/nodes/+/events") == "$share/ingest/gw/v1/nodes/+/events"


def test_node_acl_lets_a_node_write_only_its_reports_and_read_only_its_orders() -> None:
    rules = node_acl(NODE)
    writes = [t for a, t in rules if a is Access.WRITE]
    reads = [t for a, t in rules if a is Access.READ]
    assert all(t.startswith(f"gw/v1/nodes/{NODE}/") for t in writes + reads)
    assert topic_matches_sub(writes[2], topics.events_topic(NODE))
    assert any(topic_matches_sub(t, topics.config_desired_topic(NODE)) for t in reads)
    assert not any(topic_matches_sub(t, topics.config_desired_topic(NODE)) for t in writes)
    assert any(topic_matches_sub(t, topics.command_topic(NODE, new_uuid7())) for t in reads)
    assert len(rules) == len(CHANNELS) - 1  # every node channel, not alerts


def test_cloud_and_app_acls() -> None:
    assert (Access.WRITE, "gw/v1/alerts/+/+/+/+/+") in cloud_acl()
    assert (Access.READ, "gw/v1/nodes/+/events") in cloud_acl()
    assert app_acl("511725", "511725106") == [(Access.READ, "gw/v1/alerts/511725/511725106/#")]
