"""A box's day: one box account cannot fill the county's disk. Beyond its units for the
county day (CLOUD_INGEST_NODE_DAILY_UNITS, counted across ingest processes) its messages
wait parked for the next day; nothing is lost and no other box waits. Against the real
ingest, broker and PostgreSQL of test_hostile_nodes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from cloud.ingest.deferred import Share
from cloud.ingest.subscriber import Received
from protocols import encode
from tests.cloud.county_fixtures import County
from tests.cloud.test_hostile_nodes import (  # noqa: F401 - the same county, broker, boxes
    ATTACKER,
    GoodBox,
    attacker,
    broker,
    county,
    good_box,
    ingest_process,
    send_raw,
    stored_ids,
)
from tests.factories import make_detection_event
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.mosquitto import CountyBroker
from tests.support.mqtt import MqttProbe
from tests.support.ports import wait_until

DAY = 60  # units: a small day, to see it at work (an event of under 2 KiB is one unit)
DAY_SQL = "SELECT coalesce(sum(units), 0) FROM ingest_node_days WHERE node_id = %s"


def test_a_box_past_its_day_waits_for_the_next_and_loses_nothing(
    county: County,  # noqa: F811
    broker: CountyBroker,  # noqa: F811
    attacker: MqttProbe,  # noqa: F811
    good_box: FakeNodes,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    sent = [encode(make_detection_event(node_id=ATTACKER, seq=i)) for i in range(1, 101)]
    today = ingest_process(county, broker, tmp_path_factory, CLOUD_INGEST_NODE_DAILY_UNITS=str(DAY))
    process: IngestProcess = next(today)
    try:
        send_raw(attacker, sent)
        good = GoodBox.send(good_box, 5)
        wait_until(lambda: stored_ids(county.url, good) == 5, 30, "the good box's events")
        wait_until(
            lambda: "its messages wait parked until the county's next day" in process.log(),
            30,
            "the box's day reached",
        )
        wait_until(
            lambda: count(county.url, "SELECT count(*) FROM ingest_deferred") == 40,
            30,
            "the rest of the flood parked",
        )
        # Parked messages are taken up every second: the box's day holds them back.
        later = GoodBox.send(good_box, 5)
        wait_until(lambda: stored_ids(county.url, later) == 5, 30, "the good box, later")
        assert stored_ids(county.url, sent) == DAY
        assert count(county.url, DAY_SQL, ATTACKER) == DAY
    finally:
        next(today, None)

    # The next day (a process allowed more stands for it): the rest is stored, once.
    tomorrow = ingest_process(county, broker, tmp_path_factory)
    next(tomorrow)
    try:
        wait_until(lambda: stored_ids(county.url, sent) == len(sent), 60, "the whole flood")
        assert count(county.url, "SELECT count(*) FROM ingest_deferred") == 0
        assert count(county.url, DAY_SQL, ATTACKER) == len(sent)
    finally:
        next(tomorrow, None)


def test_a_box_day_starts_again_at_the_county_midnight() -> None:
    day = [date(2026, 12, 7)]
    share = Share(0, 1, daily=3, timezone=ZoneInfo("Asia/Shanghai"), today=lambda _: day[0])
    topic = f"gw/v1/nodes/{ATTACKER}/events"
    events = [Received(0, 1, topic, b"{}", datetime.now(UTC)) for _ in range(4)]
    within, beyond, used = share.split(events)
    assert (len(within), len(beyond), used) == (3, 1, {ATTACKER: 3.0})
    share.recorded({ATTACKER: 3})
    assert share.over_the_day(ATTACKER)
    assert share.room(ATTACKER) == 0
    day[0] = date(2026, 12, 8)  # the county's midnight
    assert share.room(ATTACKER) == 3
    within, beyond, _ = share.split(events)
    assert (len(within), len(beyond)) == (3, 1)
