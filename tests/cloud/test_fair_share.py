"""Each box has its share of ingest: a box sending thousands of valid events a second no
longer puts its backlog in front of every other box's. What it sends beyond its share is
parked and stored as the share refills; nothing is lost; a box past its parking limit
loses only its own messages, as dead letters that say so. Against the real ingest, broker
and PostgreSQL of test_hostile_nodes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx2 as httpx
import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloud.ingest.deferred import units
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
from tests.support.ports import free_port, wait_until

RATE, BURST = 20, 50  # units a second, and at once: a small share, to see it at work
METRICS_PORT = free_port()


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
        CLOUD_INGEST_NODE_RATE=str(RATE),
        CLOUD_INGEST_NODE_BURST=str(BURST),
        CLOUD_INGEST_NODE_DEFERRED_MAX_MB="1",
        CLOUD_INGEST_METRICS_PORT=str(METRICS_PORT),
        CLOUD_METRICS_OPEN="true",
    )


def parked_total() -> float:
    """Messages ingest parked, from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "gridwatch_ingest_parked":
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    return 0.0


FLOODED_SQL = "SELECT coalesce(sum(deliveries), 0) FROM ingest_dead_letters WHERE cause = 'flood'"


def flood_payloads(first_seq: int, n: int) -> list[bytes]:
    return [encode(make_detection_event(node_id=ATTACKER, seq=first_seq + i)) for i in range(n)]


def test_a_box_flooding_valid_events_waits_its_turn_and_loses_nothing(
    county: County,  # noqa: F811
    ingest: IngestProcess,
    attacker: MqttProbe,  # noqa: F811
    good_box: FakeNodes,  # noqa: F811
) -> None:
    sent = flood_payloads(1, 400)
    send_raw(attacker, sent)
    good = GoodBox.send(good_box, 5)  # after the flood, on the same broker
    wait_until(lambda: stored_ids(county.url, good) == 5, 30, "the good box's events")
    # The good box went first: the flood is stored at its share, 20 a second after a
    # burst of 50, so most of it is still waiting (storing it all takes 17 s or more).
    assert stored_ids(county.url, sent) < len(sent) / 2
    assert count(county.url, "SELECT count(*) FROM ingest_deferred") > 0
    wait_until(lambda: stored_ids(county.url, sent) == len(sent), 120, "the whole flood")
    assert count(county.url, "SELECT count(*) FROM ingest_deferred") == 0


def test_a_suspended_boxs_parked_events_wait_for_it_and_are_stored_when_it_is_let_back(
    county: County,  # noqa: F811
    ingest: IngestProcess,
    attacker: MqttProbe,  # noqa: F811
) -> None:
    """Parked events were receipted when parked (the box deleted them): a suspension that
    comes while they wait must not drop them, as it drops what the broker still held."""
    sent = flood_payloads(5000, 400)
    send_raw(attacker, sent)

    def parked() -> int:
        return count(
            county.url, "SELECT count(*) FROM ingest_deferred WHERE payload = ANY(%s)", sent
        )

    # All of it taken from the broker (stored, or parked past the share) before the
    # suspension: what the broker still holds then is dropped for the box to send again,
    # which this raw client never does (waiting for "more than 100 parked" let that race).
    wait_until(lambda: parked() + stored_ids(county.url, sent) == len(sent), 30, "the flood parked")
    with psycopg.connect(county.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO node_suspensions (node_id, since, until, reason, suspended_by) "
            "VALUES (%s, now(), now() + interval '1 hour', 'a test', 'test')",
            (ATTACKER,),
        )
        wait_until(lambda: f"box {ATTACKER} is suspended" in ingest.log(), 30, "ingest seeing it")
        waiting = count(county.url, "SELECT count(*) FROM ingest_deferred")
        conn.execute("DELETE FROM node_suspensions WHERE node_id = %s", (ATTACKER,))
    wait_until(lambda: stored_ids(county.url, sent) == len(sent), 120, "every parked event")
    assert waiting > 0


def test_a_box_past_its_parking_limit_loses_only_its_own_messages(
    county: County,  # noqa: F811
    ingest: IngestProcess,
    attacker: MqttProbe,  # noqa: F811
    good_box: FakeNodes,  # noqa: F811
) -> None:
    big = [
        orjson.dumps({**orjson.loads(p), "note": "x" * 12_000})  # a newer field, 12 KB
        for p in flood_payloads(5000, 150)
    ]
    send_raw(attacker, big)  # 1.8 MB beyond a 50-unit burst, against a 1 MB limit
    good = GoodBox.send(good_box, 5)
    wait_until(lambda: stored_ids(county.url, good) == 5, 30, "the good box's events")
    wait_until(lambda: count(county.url, FLOODED_SQL) > 0, 30, "dead letters past the limit")
    flooded = count(county.url, FLOODED_SQL)
    wait_until(lambda: stored_ids(county.url, big) + flooded == len(big), 120, "the rest stored")


def test_what_will_be_refused_anyway_is_refused_now_not_parked(
    county: County,  # noqa: F811
    ingest: IngestProcess,
    attacker: MqttProbe,  # noqa: F811
    good_box: FakeNodes,  # noqa: F811
) -> None:
    """16 KiB events full of [] beyond the share filled a box's parking in seconds and held
    every box up by 15 s: the checks that need no parsing refuse them at once."""
    base = flood_payloads(9000, 1)[0][:-1]
    junk = [base + b',"x":[' + b"[]," * 4000 + b'[]],"n":%d}' % i for i in range(200)]
    send_raw(attacker, junk)
    good = GoodBox.send(good_box, 5)
    wait_until(lambda: stored_ids(county.url, good) == 5, 30, "the good box's events")
    wait_until(
        lambda: (
            count(
                county.url,
                "SELECT coalesce(sum(deliveries), 0) FROM ingest_dead_letters "
                "WHERE reason LIKE 'JSON holds more than%%'",
            )
            >= len(junk) - BURST
        ),
        30,
        "the junk refused",
    )
    parked = count(
        county.url,
        "SELECT count(*) FROM ingest_deferred WHERE position('[],[],'::bytea IN payload) > 0",
    )
    assert parked == 0


def test_what_is_not_json_at_all_is_refused_now_not_parked(
    county: County,  # noqa: F811
    ingest: IngestProcess,
    attacker: MqttProbe,  # noqa: F811
    good_box: FakeNodes,  # noqa: F811
) -> None:
    """1.23M junk messages beyond a box's share were parked and took 41 minutes to refuse:
    what is not JSON is refused at once (parsing is the cheap part of decoding)."""
    before = count(county.url, "SELECT coalesce(sum(deliveries), 0) FROM ingest_dead_letters")
    parked_before = parked_total()
    send_raw(attacker, [b"not json %d" % i for i in range(200)])
    good = GoodBox.send(good_box, 5)
    wait_until(lambda: stored_ids(county.url, good) == 5, 30, "the good box's events")
    wait_until(
        lambda: (
            count(county.url, "SELECT coalesce(sum(deliveries), 0) FROM ingest_dead_letters")
            >= before + 200
        ),
        30,
        "the junk refused",
    )
    assert parked_total() == parked_before


def test_user_properties_count_towards_a_boxs_share() -> None:
    """60 events a second carrying 1.9 MB of MQTT 5 user properties each were stored at
    once, one unit apiece: what the broker and ingest carry counts, read or not."""
    topic = f"gw/v1/nodes/{ATTACKER}/events"
    plain = Received(1, 1, topic, b"{}" * 300, datetime.now(UTC))
    heavy = Received(1, 1, topic, b"{}" * 300, datetime.now(UTC), extra_bytes=1_900_000)
    assert units(plain) == 1
    assert units(heavy) == 1 + 1_900_000 // 2048
