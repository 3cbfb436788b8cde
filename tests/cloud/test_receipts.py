"""Receipts end to end, with a real edge agent, a real Mosquitto and a real ingest process:
a box forgets an event only when the county's receipt says it is stored, so a broker
killed with events it had acknowledged (and not yet saved) costs nothing."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from cloud.ingest.dead_letters import Cause
from cloud.ingest.decode import decode_batch
from cloud.ingest.receipts import refused_for_now, settled
from cloud.ingest.subscriber import Received
from protocols import encode
from protocols.topics import events_topic
from tests.conftest import BrokerFactory
from tests.factories import make_detection_event
from tests.support.agent import AgentProcess, motion_config
from tests.support.cloud import IngestProcess, count
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.ports import wait_until

NODE = "qx-receipts-01"


@pytest.fixture
def forgetful_broker(broker_factory: BrokerFactory) -> MosquittoBroker:
    """Saves its sessions and queues once an hour: killed, it loses what it took since."""
    return broker_factory(BrokerOptions(persistence=True, autosave_interval_s=3600))


def stored_below(url: str, seq: int) -> int:
    return count(url, "SELECT count(*) FROM events WHERE node_id = %s AND seq < %s", NODE, seq)


def test_events_a_killed_broker_had_acknowledged_are_sent_again_and_stored_once(
    cloud_db: str, forgetful_broker: MosquittoBroker, assets_dir: Path, tmp_path: Path
) -> None:
    broker = forgetful_broker
    clip = assets_dir / "video" / "car-detection.mp4"

    def ingest() -> IngestProcess:
        process = IngestProcess(
            tmp_path / "ingest",
            cloud_db,
            broker.port,
            "ingest-r",
            CLOUD_INGEST_REORDER_WINDOW_S="0",
        ).start()
        process.wait_subscribed()
        return process

    ingest().stop()  # its session waits on the broker, queueing the box's events
    agent = AgentProcess(
        tmp_path / "agent",
        NODE,
        broker.port,
        config=motion_config(NODE, clip, cameras=2),
        EDGE_RECEIPT_TIMEOUT_S="2",
    ).start()
    running = None
    try:

        def twenty_taken() -> bool:
            try:
                return agent.events_generated() >= 20 and agent.outbox_unsent() == 0
            except sqlite3.OperationalError:
                return False  # its outbox not made yet

        wait_until(
            twenty_taken,
            90,
            "20 events taken (PUBACK) by the broker",
        )
        taken = agent.events_generated()
        broker.kill()  # ... before its next save: what it queued for ingest is gone
        broker.start()
        running = ingest()
        wait_until(
            lambda: stored_below(cloud_db, taken) >= taken,
            90,
            f"the {taken} events the broker took before it died stored",
        )
        assert agent.stop() == 0
    finally:
        agent.kill()
        if running is not None:
            running.kill()
    with psycopg.connect(cloud_db) as conn:
        seqs = [
            s
            for (s,) in conn.execute(
                "SELECT seq FROM events WHERE node_id = %s AND seq < %s ORDER BY seq", (NODE, taken)
            )
        ]
        still_open = conn.execute(
            "SELECT count(*) FROM seq_gaps WHERE node_id = %s AND closed_at IS NULL "
            "AND first_seq < %s",
            (NODE, taken),
        ).fetchone()
    assert seqs == list(range(taken))  # each once
    assert still_open == (0,)


def test_an_event_from_a_clock_running_ahead_is_refused_for_now_and_not_receipted() -> None:
    """Its time further ahead than clock skew allows: sent again once its time has come it
    is taken, so the box must keep it (a receipt made the box delete it, lost for good)."""
    now = datetime.now(UTC)
    node = "qx-fast-clock"
    on_time = make_detection_event(node_id=node, seq=1, observed_at=now)
    ahead = make_detection_event(node_id=node, seq=2, observed_at=now + timedelta(seconds=400))
    messages = [
        Received(i, 1, events_topic(node), encode(e), now) for i, e in enumerate([on_time, ahead])
    ]
    batch = decode_batch(messages)
    assert [letter.cause for letter in batch.dead] == [Cause.AHEAD]
    assert settled(messages, batch, refused_for_now(batch.dead)) == {node: {1}}
