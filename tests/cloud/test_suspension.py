"""A box account that sends what the county refuses, faster than any fault would, is shut
out of the broker for a while: ingest suspends it, `broker sync` disables its account (the
broker disconnects it and refuses it), the fleet monitor opens a work order for its
technician, and an operator may let it back sooner. Against the real ingest, a broker
configured as `broker sync` configures the county's, and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.fleet.monitor import check_fleet
from cloud.ingest.suspend import Guard, Limit
from cloud.settings import FleetSettings
from protocols import encode
from tests.cloud.county_fixtures import County, app_settings, signed_in
from tests.cloud.test_hostile_nodes import (  # noqa: F401 - the same county, broker, boxes
    ATTACKER,
    PASSWORDS,
    GoodBox,
    attacker,
    broker,
    county,
    good_box,
    ingest_process,
    send_raw,
    stored_ids,
)
from tests.conftest import BrokerFactory
from tests.factories import make_detection_event
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.mosquitto import CountyBroker
from tests.support.mqtt import MqttProbe
from tests.support.ports import wait_until

RATE, WINDOW_S = 50, 2  # refused messages a second over 2 s: small, to see it at work
SUSPENDED_SQL = "SELECT count(*) FROM node_suspensions WHERE node_id = %s AND until > now()"


@pytest.fixture(scope="module")
def ingest(
    county: County,  # noqa: F811
    broker: CountyBroker,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[IngestProcess]:
    yield from ingest_process(
        county,
        broker,
        tmp_path_factory,
        CLOUD_INGEST_SUSPEND_REFUSED_RATE=str(RATE),
        CLOUD_INGEST_SUSPEND_WINDOW_S=str(WINDOW_S),
    )


def connects(county_broker: CountyBroker) -> bool:
    probe = MqttProbe(
        county_broker.port, username=ATTACKER, password=PASSWORDS[ATTACKER], client_id=ATTACKER
    )
    try:
        probe.connect()
    except ConnectionRefusedError:
        return False
    probe.close()
    return True


def test_a_box_sending_junk_is_shut_out_until_an_operator_lets_it_back(
    county: County,  # noqa: F811
    broker: CountyBroker,  # noqa: F811
    ingest: IngestProcess,
    attacker: MqttProbe,  # noqa: F811
    good_box: FakeNodes,  # noqa: F811
    broker_factory: BrokerFactory,
) -> None:
    # Junk on its own topics, as fast as it goes: each is refused, a dead letter.
    send_raw(attacker, [b"not json %d" % i for i in range(400)])
    wait_until(lambda: count(county.url, SUSPENDED_SQL, ATTACKER) == 1, 30, "the suspension")
    assert f"box {ATTACKER} suspended until" in ingest.log()
    good = GoodBox.send(good_box, 5)
    wait_until(lambda: stored_ids(county.url, good) == 5, 30, "the good box's events")
    # What it still sends before the broker shuts it out (a queue of millions stood in
    # front of every other box's while it was parked) is dropped, not stored or receipted:
    # a real box keeps those events and sends them again once let back in.
    queued = [encode(make_detection_event(node_id=ATTACKER, seq=70_000 + i)) for i in range(50)]
    send_raw(attacker, queued)
    after = GoodBox.send(good_box, 2)
    wait_until(lambda: stored_ids(county.url, after) == 2, 30, "the good box behind them")
    assert stored_ids(county.url, queued) == 0
    assert f"box {ATTACKER} is suspended: what the broker still held" in ingest.log()

    # `broker sync` (as --follow does on the notice): the account disabled, the box
    # disconnected and refused; the good box and its password file untouched.
    passwords = broker.files.password_file.read_bytes()
    broker.sync()
    assert broker.files.password_file.read_bytes() == passwords  # no restart for everyone
    wait_until(lambda: bool(attacker.disconnects), 10, "the box disconnected")
    assert not connects(broker)
    more = GoodBox.send(good_box, 3)
    wait_until(lambda: stored_ids(county.url, more) == 3, 30, "the good box, after")

    # The technician hears of it: a work order that says why.
    fleet = FleetSettings()
    with psycopg.connect(county.url, autocommit=True) as conn:
        check_fleet(conn, fleet, datetime.now(UTC))
        orders = conn.execute(
            "SELECT c.state, h.detail->>'reason' FROM cases c JOIN case_history h "
            "USING (case_id) WHERE c.node_id = %s AND c.category = 'node_suspended' "
            "AND h.action = 'open'",
            (ATTACKER,),
        ).fetchall()
    assert [(state, "refuses" in reason) for state, reason in orders] == [("intake", True)]

    # An operator lets it back (audited); sync enables the account.
    with TestClient(create_app(app_settings(county, broker_factory().url))) as client:
        headers = signed_in(client, county, "county-op")
        shown = client.get(f"/api/v1/nodes/{ATTACKER}", headers=headers).json()
        assert shown["suspension"]["suspended_by"] == "ingest"
        town = signed_in(client, county, "other-town-op")  # not this box's town
        lift = f"/api/v1/nodes/{ATTACKER}/suspension?reason=firmware+reflashed"
        assert client.delete(lift, headers=town).status_code == 404
        no_reason = client.delete(f"/api/v1/nodes/{ATTACKER}/suspension", headers=headers)
        assert no_reason.status_code == 422  # a lift says why
        lifted = client.delete(lift, headers=headers)
        assert lifted.status_code == 204, lifted.text
        assert client.delete(lift, headers=headers).status_code == 404
    assert (
        count(
            county.url,
            "SELECT count(*) FROM audit_log WHERE action = 'node.suspension_lifted' "
            "AND detail->>'reason' = 'firmware reflashed'",
        )
        == 1
    )
    broker.sync()
    assert connects(broker)
    with psycopg.connect(county.url, autocommit=True) as conn:
        check_fleet(conn, fleet, datetime.now(UTC))
        [(state,)] = conn.execute(
            "SELECT state FROM cases WHERE node_id = %s AND category = 'node_suspended'",
            (ATTACKER,),
        ).fetchall()
    assert state == "closed"

    # Let back in, it starts afresh: the same junk again is suspended again (ingest held
    # it immune until its own ten minutes ran out).
    wait_until(
        lambda: f"box {ATTACKER} let back in" in ingest.log(), 10, "ingest to follow the lift"
    )
    back = MqttProbe(
        broker.port, username=ATTACKER, password=PASSWORDS[ATTACKER], client_id=ATTACKER
    ).connect()
    try:
        send_raw(back, [b"not json again %d" % i for i in range(400)])
        wait_until(lambda: count(county.url, SUSPENDED_SQL, ATTACKER) == 1, 30, "again")
    finally:
        back.close()


def test_valid_messages_beyond_the_share_suspend_only_far_beyond_a_long_outages_replay() -> None:
    now = [0.0]
    guard = Guard(
        Limit(1000, 10, "messages the county refuses"),
        Limit(5000, 30, "valid messages beyond its share, in units,"),
        600,
        clock=lambda: now[0],
    )
    # A busy town box's three days offline, 130,000 events, replayed as fast as a LAN goes.
    for _ in range(13):
        assert guard.count("parked", {"gw-town-01": 10_000}) == {}
        now[0] += 0.5
    # A box sending 12,000 valid events a second, beyond its share: suspended within a minute.
    tripped: dict[str, str] = {}
    seconds = 0
    while not tripped and seconds < 60:
        tripped = guard.count("parked", {"gw-rogue-01": 12_000})
        now[0] += 1
        seconds += 1
    assert list(tripped) == ["gw-rogue-01"]
    assert "beyond its share" in tripped["gw-rogue-01"]
    assert seconds <= 30
    assert guard.count("parked", {"gw-rogue-01": 12_000}) == {}  # once while it lasts


def test_a_box_let_back_in_starts_afresh_and_one_suspended_elsewhere_is_here_too() -> None:
    now = [0.0]
    guard = Guard(Limit(10, 2, "refused"), Limit(10, 2, "parked"), 600, clock=lambda: now[0])
    assert list(guard.count("refused", {"gw-a-01": 100})) == ["gw-a-01"]
    assert guard.shut_out("gw-a-01")
    # An operator lifts it (the database holds no suspension for it any more): it is
    # counted again from a full bucket, and suspended again when it goes on.
    assert guard.follow({}) == ["gw-a-01"]
    assert not guard.shut_out("gw-a-01")
    assert guard.count("refused", {"gw-a-01": 5}) == {}
    assert list(guard.count("refused", {"gw-a-01": 100})) == ["gw-a-01"]
    # Another process suspended a box: this one shuts it out too, for the time it has left.
    guard.follow({"gw-a-01": 500, "gw-b-01": 30})
    assert guard.shut_out("gw-b-01")
    now[0] += 31
    assert not guard.shut_out("gw-b-01")
