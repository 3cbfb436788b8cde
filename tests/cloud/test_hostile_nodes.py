"""Hostile nodes against the real ingest and a real PostgreSQL, on a county broker configured
exactly as `gridwatch cloud broker sync` configures one: whatever a box account publishes on
its own topics, ingest stays up, a well-behaved box's events are all stored, and a box's
word reaches no further than its own unit. (What the broker itself refuses is in
test_hostile_broker.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uuid6 import uuid7

from cloud.db.escalation import escalate_due
from cloud.db.routing import STRAY_CAMERAS_NAMED
from cloud.ingest.throttle import BURST
from protocols import encode
from protocols.base import utc_now
from protocols.catalog import CHANNELS
from protocols.enums import EventKind, Severity
from protocols.passwords import hash_password
from protocols.topics import Channel, events_topic, health_topic, response_topic
from tests.cloud.county_fixtures import OTHER_NODE, VILLAGE_NODE, County, county_database
from tests.factories import make_command_response, make_detection_event, make_node_health
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.county import COUNTY, GRID, TOWN, VILLAGE
from tests.support.mosquitto import CountyBroker, county_broker
from tests.support.mqtt import MqttProbe
from tests.support.ports import wait_until

# The attacker holds the village box's account (its password read off the box's disk);
# the well-behaved box of another town publishes beside it, on the same county broker.
ATTACKER, GOOD = VILLAGE_NODE, OTHER_NODE
PASSWORDS = {ATTACKER: "read off the village box's disk", GOOD: "the good box's password"}
SERVICE_PASSWORD = "the service accounts' password"


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    for county_ in county_database(postgres_admin_url, tmp_path_factory.mktemp("hostile")):
        with psycopg.connect(county_.url, autocommit=True) as conn:
            for node_id, password in PASSWORDS.items():
                conn.execute(
                    "INSERT INTO node_credentials (node_id, password_hash, issued_by) "
                    "VALUES (%s, %s, 'test')",
                    (node_id, hash_password(password)),
                )
        yield county_


@pytest.fixture(scope="module")
def broker(county: County, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountyBroker]:
    """Configured exactly as `gridwatch cloud broker sync` configures the county's."""
    broker_ = county_broker(
        tmp_path_factory.mktemp("county-broker"), county.url, SERVICE_PASSWORD
    ).start()
    yield broker_
    broker_.stop()


@pytest.fixture(scope="module")
def ingest(
    county: County, broker: CountyBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IngestProcess]:
    yield from ingest_process(county, broker, tmp_path_factory)


def ingest_process(
    county: County, broker: CountyBroker, tmp_path_factory: pytest.TempPathFactory, **env: str
) -> Iterator[IngestProcess]:
    """Ingest with the service accounts' password (and `env`), subscribed; killed after."""
    process = IngestProcess(
        tmp_path_factory.mktemp("ingest"),
        county.url,
        broker.port,
        "ingest.1",
        CLOUD_BROKER_USERNAME="ingest.1",
        CLOUD_BROKER_PASSWORD=SERVICE_PASSWORD,
        **env,
    ).start()
    process.wait_subscribed()
    yield process
    process.kill()


@pytest.fixture(scope="module")
def attacker(broker: CountyBroker) -> Iterator[MqttProbe]:
    """A client written from the published contract only, with the village box's account."""
    probe = MqttProbe(
        broker.port, username=ATTACKER, password=PASSWORDS[ATTACKER], client_id=ATTACKER
    ).connect()
    yield probe
    probe.close()


@pytest.fixture(scope="module")
def good_box(broker: CountyBroker) -> Iterator[FakeNodes]:
    nodes = FakeNodes(broker.port, passwords={GOOD: PASSWORDS[GOOD]})
    yield nodes
    nodes.close()


class GoodBox:
    """The well-behaved box's next events, numbered on across the module's tests."""

    seq = 0

    @classmethod
    def send(cls, nodes: FakeNodes, n: int = 1) -> list[bytes]:
        seqs = range(cls.seq, cls.seq + n)
        cls.seq += n
        return nodes.publish(GOOD, seqs)


def stored_ids(url: str, payloads: list[bytes]) -> int:
    ids = [orjson.loads(p)["event_id"] for p in payloads]
    return count(url, "SELECT count(*) FROM events WHERE event_id = ANY(%s::uuid[])", ids)


def assert_alive(process: IngestProcess) -> None:
    assert process.process is not None
    assert process.process.poll() is None, process.log()[-3000:]


def send_raw(attacker: MqttProbe, payloads: list[bytes]) -> None:
    """On the attacker's own events topic, each acknowledged by the broker."""
    for payload in payloads:
        reason = attacker.publish(events_topic(ATTACKER), payload)
        assert reason is not None
        assert not reason.is_failure, reason


def test_a_deeply_nested_event_is_a_dead_letter_and_the_stream_goes_on(
    county: County, ingest: IngestProcess, attacker: MqttProbe, good_box: FakeNodes
) -> None:
    event = orjson.loads(encode(make_detection_event(node_id=VILLAGE_NODE, seq=1)))
    nested = orjson.dumps(event)[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert len(nested) < 3000
    before = GoodBox.send(good_box, 5)
    send_raw(attacker, [nested])
    after = GoodBox.send(good_box, 5)
    wait_until(lambda: stored_ids(county.url, before + after) == 10, 30, "the good box's events")
    assert_alive(ingest)
    digest = hashlib.sha256(nested).hexdigest()
    reason = count(
        county.url,
        "SELECT count(*) FROM ingest_dead_letters WHERE sha256 = %s AND "
        "reason LIKE 'JSON nested deeper than%%'",
        digest,
    )
    assert reason == 1


def test_a_string_never_closed_full_of_escaped_quotes_holds_nothing_up(
    county: County, ingest: IngestProcess, attacker: MqttProbe, good_box: FakeNodes
) -> None:
    # At each channel's size limit: the depth check once took minutes over such a health
    # report, and ingest committed nothing meanwhile.
    hostile = {
        topic: b"[" * 10 + b'"' + b'\\"' * ((CHANNELS[channel].max_bytes - 11) // 2)
        for channel, topic in (
            (Channel.EVENTS, events_topic(ATTACKER)),
            (Channel.HEALTH, health_topic(ATTACKER)),
        )
    }
    before = GoodBox.send(good_box, 5)
    for topic, payload in hostile.items():
        reason = attacker.publish(topic, payload)
        assert reason is not None
        assert not reason.is_failure, reason
    after = GoodBox.send(good_box, 5)
    wait_until(lambda: stored_ids(county.url, before + after) == 10, 30, "the good box's events")
    assert_alive(ingest)
    digests = [hashlib.sha256(p).hexdigest() for p in hostile.values()]
    dead = count(
        county.url, "SELECT count(*) FROM ingest_dead_letters WHERE sha256 = ANY(%s)", digests
    )
    assert dead == 2


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)
_FIELDS = list(orjson.loads(encode(make_detection_event())))


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # integers beyond 64 bits too


@st.composite
def hostile_payloads(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, or a valid event with one field replaced by any JSON value, or
    JSON that is deep, wide or long."""
    base = orjson.loads(
        encode(make_detection_event(node_id=VILLAGE_NODE, seq=draw(st.integers(0, 9))))
    )
    kind = draw(st.sampled_from(["bytes", "field", "deep", "wide", "long"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000))
    if kind == "field":
        return _dumps(base | {draw(st.sampled_from(_FIELDS)): draw(_json_values)})
    if kind == "deep":
        depth = draw(st.integers(5, 20_000))
        opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        tail = closing * depth if draw(st.booleans()) else b""
        return (
            _dumps(base)[:-1]
            + b',"x":'
            + opening * depth
            + b"1" * (opening == b'{"a":')
            + tail
            + b"}"
        )
    if kind == "wide":
        return _dumps(base | {"x": [0] * draw(st.integers(1, 5000))})
    return _dumps(base | {draw(st.sampled_from(_FIELDS)): "x" * draw(st.integers(1, 20_000))})


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(hostile_payloads(), min_size=1, max_size=8))
def test_no_payload_stops_ingest_or_costs_another_box_an_event(
    county: County,
    ingest: IngestProcess,
    attacker: MqttProbe,
    good_box: FakeNodes,
    payloads: list[bytes],
) -> None:
    send_raw(attacker, payloads)
    good = GoodBox.send(good_box)
    wait_until(lambda: stored_ids(county.url, good) == 1, 30, "the good box's event")
    assert_alive(ingest)


def test_one_event_id_is_one_event_whatever_its_time_or_content(
    county: County, ingest: IngestProcess, attacker: MqttProbe, good_box: FakeNodes
) -> None:
    first = make_detection_event(node_id=VILLAGE_NODE, seq=100, camera_id="cam01")
    later = orjson.loads(encode(first)) | {
        "observed_at": (first.observed_at - timedelta(minutes=10)).isoformat()
    }
    other = orjson.loads(encode(first)) | {"label": "car", "seq": 101}
    old = make_detection_event(
        node_id=VILLAGE_NODE, seq=102, observed_at=utc_now() - timedelta(days=40)
    )
    send_raw(attacker, [encode(first)])
    wait_until(
        lambda: (
            count(county.url, "SELECT count(*) FROM events WHERE event_id = %s", first.event_id)
            == 1
        ),
        30,
        "the first copy",
    )
    send_raw(attacker, [encode(first)])  # sent again: a redelivery, not an error
    send_raw(attacker, [orjson.dumps(later), orjson.dumps(other), encode(old)])
    good = GoodBox.send(good_box)
    wait_until(lambda: stored_ids(county.url, good) == 1, 30, "the good box's event")
    rows = count(county.url, "SELECT count(*) FROM events WHERE event_id = %s", first.event_id)
    assert rows == 1
    with psycopg.connect(county.url) as conn:
        dead = conn.execute(
            "SELECT sha256, cause, field FROM ingest_dead_letters WHERE sha256 = ANY(%s)",
            (
                [
                    hashlib.sha256(p).hexdigest()
                    for p in (orjson.dumps(later), orjson.dumps(other), encode(first), encode(old))
                ],
            ),
        ).fetchall()
    causes = sorted((cause, field) for _, cause, field in dead)
    # The exact copy is a redelivery, not an error; the others are dead letters.
    assert causes == [
        ("conflict", "event_id"),
        ("conflict", "event_id"),
        ("too_old", "observed_at"),
    ]
    assert count(county.url, "SELECT count(*) FROM events WHERE event_id = %s", old.event_id) == 0


def test_a_dead_letter_describes_its_message_once_however_often_it_comes(
    county: County, ingest: IngestProcess, attacker: MqttProbe, good_box: FakeNodes
) -> None:
    junk = b"\x00junk" + bytes(range(256)) * 4000  # about 1 MB
    for _ in range(3):
        send_raw(attacker, [junk])
    good = GoodBox.send(good_box)
    wait_until(lambda: stored_ids(county.url, good) == 1, 30, "the good box's event")
    wait_until(
        lambda: (
            count(
                county.url,
                "SELECT coalesce(max(deliveries), 0) FROM ingest_dead_letters WHERE sha256 = %s",
                hashlib.sha256(junk).hexdigest(),
            )
            == 3
        ),
        30,
        "three deliveries counted",
    )
    with psycopg.connect(county.url) as conn:
        rows = conn.execute(
            "SELECT size_bytes, length(prefix), node_id FROM ingest_dead_letters WHERE sha256 = %s",
            (hashlib.sha256(junk).hexdigest(),),
        ).fetchall()
        [[table_bytes]] = conn.execute(
            "SELECT pg_total_relation_size('ingest_dead_letters')"
        ).fetchall()
    assert rows == [(len(junk), 256, VILLAGE_NODE)]
    assert table_bytes < len(junk)


def test_a_box_naming_cameras_it_does_not_have_raises_nothing_above_its_unit(
    county: County, ingest: IngestProcess, attacker: MqttProbe, good_box: FakeNodes
) -> None:
    made_up = [f"fake{i:03d}" for i in range(STRAY_CAMERAS_NAMED + 36)]
    events = [
        make_detection_event(
            node_id=VILLAGE_NODE,
            seq=1000 + i,
            camera_id=camera,
            kind=EventKind.INTRUSION,
            severity=Severity.CRITICAL,  # an emergency starts at the town, for a real camera
        )
        for i, camera in enumerate(made_up)
    ]
    real = make_detection_event(
        node_id=VILLAGE_NODE,
        seq=1000 + len(made_up),
        camera_id="cam01",
        kind=EventKind.CROWD,
        count=9,
        severity=Severity.CRITICAL,
    )
    send_raw(attacker, [encode(e) for e in [*events, real]])
    ids = [e.event_id for e in [*events, real]]
    wait_until(
        lambda: (
            count(county.url, "SELECT count(*) FROM events WHERE event_id = ANY(%s)", ids)
            == len(ids)
        ),
        30,
        "every event stored",
    )
    with psycopg.connect(county.url) as conn:
        units = conn.execute(
            "SELECT DISTINCT unit_code FROM events WHERE node_id = %s AND camera_id LIKE 'fake%%'",
            (VILLAGE_NODE,),
        ).fetchall()
        cases: list[Any] = conn.execute(
            "SELECT camera_id, unit_code, responsible_unit_code, event_count FROM cases "
            "WHERE node_id = %s AND source = 'camera' AND first_event_id = ANY(%s)",
            (VILLAGE_NODE, ids),
        ).fetchall()
        orders = conn.execute(
            "SELECT unit_code, state FROM cases WHERE node_id = %s "
            "AND category = 'camera_unregistered'",
            (VILLAGE_NODE,),
        ).fetchall()
        # Named once each, on the order's opening or when they first turned up after it.
        [[reason, named]] = conn.execute(
            "SELECT string_agg(h.detail->>'reason', ' '), "
            "jsonb_agg(c2) FROM case_history h JOIN cases c USING (case_id), "
            "jsonb_array_elements_text(h.detail->'cameras') c2 "
            "WHERE c.node_id = %s AND c.category = 'camera_unregistered'",
            (VILLAGE_NODE,),
        ).fetchall()
    assert units == [(VILLAGE,)]
    by_camera = {camera: (unit, responsible, n) for camera, unit, responsible, n in cases}
    # One case for all of them, not one a camera: a box cannot make up hundreds of cases.
    assert sorted(by_camera) == ["cam01", "fake000"]
    assert by_camera["fake000"] == (VILLAGE, VILLAGE, len(made_up))
    assert by_camera["cam01"] == (GRID, TOWN, 1)  # a registered camera's emergency: as before
    assert not any(COUNTY in (u, r) for u, r, _ in by_camera.values())
    assert orders == [(VILLAGE, "intake")]  # one work order for the box, however many cameras
    assert "fake000" in reason
    # Named once each, and no more than an order names: the box writes no more there.
    assert sorted(named) == made_up[:STRAY_CAMERAS_NAMED]

    # Nobody acknowledges them: the made-up cameras' cases stay at the village (their
    # supervision rises), the registered camera's goes up a tier.
    async def escalate() -> None:
        async with await psycopg.AsyncConnection.connect(county.url, autocommit=True) as conn:
            for day in (1, 2, 3):
                await escalate_due(conn, now=utc_now() + timedelta(days=day))

    asyncio.run(escalate())
    with psycopg.connect(county.url) as conn:
        after = {
            camera: (responsible, level)
            for camera, responsible, level in conn.execute(
                "SELECT camera_id, responsible_unit_code, supervision_level FROM cases "
                "WHERE node_id = %s AND source = 'camera' AND first_event_id = ANY(%s)",
                (VILLAGE_NODE, ids),
            ).fetchall()
        }
    assert after["fake000"] == (VILLAGE, 3)
    assert after["cam01"][0] == COUNTY


def test_a_node_the_registry_does_not_know_opens_no_case(county: County) -> None:
    """On a broker that takes anonymous clients (the laptop's), any node id can publish:
    its events are kept, and route nowhere."""
    stranger = make_detection_event(
        node_id="qx-not-registered", seq=1, camera_id="cam01", severity=Severity.CRITICAL
    )
    county.write([stranger], utc_now())
    assert count(county.url, "SELECT count(*) FROM events WHERE node_id = 'qx-not-registered'") == 1
    assert count(county.url, "SELECT count(*) FROM cases WHERE node_id = 'qx-not-registered'") == 0


def test_a_box_flooding_health_reports_is_throttled_and_others_go_on(
    county: County, ingest: IngestProcess, attacker: MqttProbe, good_box: FakeNodes
) -> None:
    """Health says how a box is now: past a burst, a flood of it is acknowledged, counted
    and not parsed or stored (each 80 KB one cost 4.5 ms to refuse)."""
    now = utc_now()
    for i in range(200):
        report = encode(make_node_health(node_id=ATTACKER, sent_at=now - timedelta(seconds=i)))
        reason = attacker.publish(health_topic(ATTACKER), report)
        assert reason is not None
        assert not reason.is_failure, reason
    # The broker hands ingest the flood before these (it took them first): once they are
    # stored, so is whatever of the flood was.
    good = GoodBox.send(good_box, 5)
    wait_until(lambda: stored_ids(county.url, good) == 5, 30, "the good box's events")
    stored = count(county.url, "SELECT count(*) FROM node_health WHERE node_id = %s", ATTACKER)
    assert 1 <= stored <= BURST + 5  # a few refilled while the flood went in
    assert_alive(ingest)


def test_answers_to_requests_never_sent_are_dropped_before_parsing(
    county: County, ingest: IngestProcess, attacker: MqttProbe, good_box: FakeNodes
) -> None:
    """The request id is in the topic: made-up ones cost one lookup a batch, not parsing
    (250 KB forged answers held every box's events up by two minutes)."""
    forged = [uuid7() for _ in range(50)]
    big = {f"k{i}": "x" * 3900 for i in range(64)}  # about 250 KB, valid under the schema
    for request_id in forged:
        answer = make_command_response(request_id=request_id, node_id=ATTACKER, data=big)
        reason = attacker.publish(response_topic(ATTACKER, request_id), encode(answer))
        assert reason is not None
        assert not reason.is_failure, reason
    good = GoodBox.send(good_box, 5)
    wait_until(lambda: stored_ids(county.url, good) == 5, 30, "the good box's events")
    kept = count(
        county.url,
        "SELECT count(*) FROM ingest_dead_letters WHERE topic = ANY(%s)",
        [response_topic(ATTACKER, r) for r in forged],
    )
    assert kept == 0  # not parsed, so not described either: counted in the metric
    assert_alive(ingest)
