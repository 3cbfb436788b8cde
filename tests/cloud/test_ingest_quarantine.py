"""Redelivered messages are tried in a child process first: a message that kills or hangs
its decoder is a dead letter, and the rest of its batch goes on (real processes, a real
segfault); after ingest is killed with messages in flight, the redeliveries are screened
and every event is stored once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from cloud.ingest.quarantine import Quarantine
from cloud.ingest.subscriber import Received
from protocols import encode
from protocols.topics import events_topic
from tests.conftest import BrokerFactory
from tests.factories import make_detection_event
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.poison import HANG, POISON, crash_on_poison
from tests.support.ports import wait_until


def redelivered(payloads: list[bytes]) -> list[Received]:
    topic = events_topic("qx-quarantine")
    return [
        Received(i, 1, topic, p, datetime.now(UTC), duplicate=True) for i, p in enumerate(payloads)
    ]


def test_a_message_that_kills_or_hangs_its_decoder_is_a_dead_letter_and_no_other() -> None:
    good = [encode(make_detection_event(node_id="qx-quarantine", seq=i)) for i in range(6)]
    messages = redelivered([good[0], POISON, good[1], good[2], HANG, good[3], POISON, *good[4:]])
    survivors, dead = Quarantine(probe=crash_on_poison, hang_s=1.0).screen(messages)
    assert [m.payload for m in survivors] == good
    assert [(d.payload, d.reason, d.cause.value) for d in dead] == [
        (POISON, "killed the decoder (SIGSEGV)", "crash"),
        (HANG, "hung the decoder for more than 1 s", "crash"),
        (POISON, "killed the decoder (SIGSEGV)", "crash"),
    ]


def test_the_real_decoder_passes_everything_it_survives() -> None:
    payloads = [encode(make_detection_event(node_id="qx-quarantine", seq=i)) for i in range(50)]
    survivors, dead = Quarantine().screen(redelivered([*payloads, b"{not json", b"[" * 9000]))
    assert len(survivors) == 52  # refusals are for the decoder to name, not crashes
    assert dead == []


@pytest.fixture
def durable_broker(broker_factory: BrokerFactory) -> MosquittoBroker:
    return broker_factory(BrokerOptions(persistence=True))


@pytest.fixture
def blocking(cloud_db: str) -> Iterator[psycopg.Connection]:
    """A session that can hold the events table: ingest's batch then waits, unacknowledged."""
    with psycopg.connect(cloud_db) as conn:
        yield conn


def test_after_a_kill_with_messages_in_flight_the_redeliveries_are_screened_and_stored_once(
    cloud_db: str,
    durable_broker: MosquittoBroker,
    blocking: psycopg.Connection,
    tmp_path: Path,
) -> None:
    def start() -> IngestProcess:
        process = IngestProcess(tmp_path, cloud_db, durable_broker.port, "ingest-q").start()
        process.wait_subscribed()
        return process

    def stored() -> int:
        return count(cloud_db, "SELECT count(*) FROM events WHERE node_id = 'qx-inflight'")

    ingest = start()
    nodes = FakeNodes(durable_broker.port)
    blocking.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # the next batch waits
    nodes.publish("qx-inflight", range(500))
    wait_until(nodes.delivered, 30, "the broker to take all 500")
    wait_until(
        lambda: (
            count(
                cloud_db,
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE NOT l.granted AND a.application_name <> 'gridwatch-test'",
            )
            >= 1
        ),
        30,
        "ingest's batch to wait on the lock",
    )
    ingest.kill()  # with the batch in flight: nothing of it acknowledged
    blocking.rollback()
    ingest = start()
    wait_until(lambda: stored() == 500, 60, "all 500 stored after the restart")
    log = ingest.log()
    ingest.kill()
    nodes.close()
    assert "redelivered messages screened in the quarantine" in log
    assert (
        count(cloud_db, "SELECT count(DISTINCT event_id) FROM events WHERE node_id = 'qx-inflight'")
        == 500
    )
