"""The outbox on a real SQLite file: order, budget policy, sequence numbers, durability."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge.link import Link
from edge.outbox import Message, Outbox, Priority
from edge.publisher import Publisher
from edge.settings import EdgeSettings
from protocols.topics import events_topic, node_filter
from tests.conftest import REPO
from tests.support.mosquitto import MosquittoBroker
from tests.support.mqtt import MqttProbe
from tests.support.ports import wait_until
from tests.support.processes import wait_for_line


def test_drains_by_priority_then_age(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", budget_bytes=1 << 20)
    outbox.add(
        [
            Message("t/health", b"h1", Priority.HEALTH),
            Message("t/event", b"e1", Priority.EVENT),
            Message("t/snap", b"s1", Priority.SNAPSHOT),
        ]
    )
    outbox.add(
        [
            Message("t/alert", b"a1", Priority.ALERT),
            Message("t/event", b"e2", Priority.EVENT),
            Message("t/resp", b"r1", Priority.CONTROL),
        ]
    )
    assert [e.payload for e in outbox.pending(10)] == [b"r1", b"a1", b"e1", b"e2", b"s1", b"h1"]
    first_two = outbox.pending(2)
    assert [e.payload for e in outbox.pending(2, exclude={e.id for e in first_two})] == [
        b"e1",
        b"e2",
    ]
    outbox.remove([e.id for e in first_two])
    assert outbox.stats().depth == 4


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_event_waits_for_its_receipt_and_is_sent_again_without_one(tmp_path: Path) -> None:
    """The broker's PUBACK marks an event sent; only a receipt deletes it. Unreceipted, it
    is handed out again after the timeout, then after doubling waits."""
    clock = Clock()
    outbox = Outbox(tmp_path / "o.db", budget_bytes=1 << 20, receipt_timeout_s=60, clock=clock)
    outbox.add(
        [
            Message("t/event", b"e0", Priority.EVENT, seq=0),
            Message("t/event", b"e1", Priority.EVENT, seq=1),
            Message("t/health", b"h", Priority.HEALTH),
        ]
    )
    sent = outbox.pending(10)
    outbox.mark_sent([e.id for e in sent if e.seq is not None])
    outbox.remove([e.id for e in sent if e.seq is None])
    stats = outbox.stats()
    assert (stats.depth, stats.unreceipted, stats.unsent) == (2, 2, 0)
    assert outbox.pending(10) == []

    clock.now += 61  # no receipt came: both go again, and wait twice as long next time
    assert [e.seq for e in outbox.pending(10)] == [0, 1]
    outbox.mark_sent([e.id for e in outbox.pending(10)])
    clock.now += 61
    assert outbox.pending(10) == []
    clock.now += 60
    assert [e.seq for e in outbox.pending(10)] == [0, 1]

    before = outbox.stats().bytes
    assert outbox.receipted([(0, 0), (5, 9)]) == 1
    assert [e.seq for e in outbox.pending(10)] == [1]
    assert outbox.stats().bytes < before
    assert outbox.receipted([(1, 1)]) == 1
    assert outbox.stats().depth == 0
    assert outbox.stats().bytes == 0


def test_an_outbox_from_before_receipts_keeps_its_entries(tmp_path: Path) -> None:
    """A box upgraded with messages waiting: its outbox gains the receipt columns and
    sends what it holds."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "o.db")
    db.executescript(
        "CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, priority INTEGER NOT NULL, "
        "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, "
        "retain INTEGER NOT NULL, created_at REAL NOT NULL);"
        "INSERT INTO entries (priority, topic, payload, qos, retain, created_at) "
        "VALUES (2, 't/event', x'7b7d', 1, 0, 1.0);"
    )
    db.commit()
    db.close()
    outbox = Outbox(tmp_path / "o.db", budget_bytes=1 << 20)
    [entry] = outbox.pending(10)
    assert (entry.payload, entry.seq) == (b"{}", None)


def test_sequence_numbers_grow_across_restarts(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", budget_bytes=1 << 20)
    seqs = [outbox.next_seq() for _ in range(3)]
    outbox.add([Message("t", b"x", Priority.EVENT)])
    outbox.close()
    reopened = Outbox(tmp_path / "o.db", budget_bytes=1 << 20)
    assert seqs == [0, 1, 2]
    assert reopened.next_seq() == 3


def test_full_budget_drops_snapshots_first_oldest_first_and_counts_them(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "o.db", budget_bytes=60_000)
    events = [Message("t/events", f"event {i}".encode(), Priority.EVENT) for i in range(20)]
    outbox.add(events[:10])
    outbox.add([Message(f"t/snap/{i}", bytes(10_000), Priority.SNAPSHOT) for i in range(5)])
    outbox.add([Message("t/health", bytes(1_000), Priority.HEALTH)])
    outbox.add([Message("t/snap/new", bytes(10_000), Priority.SNAPSHOT)])  # over budget now
    outbox.add(events[10:])
    stats = outbox.stats()
    left = outbox.pending(100)
    assert stats.bytes <= 60_000
    assert [e.payload for e in left if e.priority is Priority.EVENT] == [m.payload for m in events]
    snapshots = [e.topic for e in left if e.priority is Priority.SNAPSHOT]
    assert snapshots[-1] == "t/snap/new"  # the newest kept; the oldest went
    assert "t/snap/0" not in snapshots
    assert stats.dropped_health == 1
    assert stats.dropped_snapshots == 6 - len(snapshots)
    assert stats.dropped_events == 0


def test_events_go_last_and_are_counted_too(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", budget_bytes=5_000)
    for i in range(100):
        outbox.add([Message("t/events", f"{i:04d}".encode() * 10, Priority.EVENT)])
    left = outbox.pending(1000)
    stats = outbox.stats()
    assert stats.dropped_events == 100 - len(left)
    assert left[-1].payload.startswith(b"0099")  # oldest dropped, newest kept


def test_what_add_acknowledged_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.outbox_writer", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    wait_for_line(writer, "stored 200")
    writer.send_signal(signal.SIGKILL)
    acknowledged = [
        line.split()[1] for line in writer.stdout.read().splitlines() if line.startswith("stored")
    ]
    writer.wait()
    stored = {
        e.payload.split(b":")[0].decode()
        for e in Outbox(path, budget_bytes=1 << 30).pending(100_000)
    }
    # Every entry whose add() returned before the kill is there: 0..200 were read while
    # waiting, the rest after the kill.
    assert {str(i) for i in range(201)} <= stored
    assert set(acknowledged) <= stored


def test_publisher_sends_each_entry_once_and_empties_the_outbox(
    broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    node = "qx-publisher-once"
    cloud = MqttProbe(broker.port).connect()
    cloud.subscribe(node_filter(node))
    outbox = Outbox(tmp_path / "o.db", budget_bytes=1 << 30)
    outbox.add([Message(events_topic(node), f"{i}".encode(), Priority.EVENT) for i in range(1200)])
    settings = EdgeSettings(
        node_id=node,
        broker_url=f"mqtt://127.0.0.1:{broker.port}",
        data_dir=tmp_path,
        metrics_port=0,
    )  # type: ignore[call-arg]
    publisher: Publisher
    link = Link(
        settings,
        boot_id=None,
        subscriptions=[],
        on_published=lambda mid, reason: publisher.on_published(mid, reason),
    )
    publisher = Publisher(outbox, link)
    publisher.start()
    link.start()
    try:
        received = [cloud.expect(events_topic(node)).payload for _ in range(1200)]
        wait_until(publisher.idle, 10, "the outbox emptied")
        assert [int(p) for p in received] == list(range(1200))  # in the order of storage
        with pytest.raises(TimeoutError):
            cloud.expect(events_topic(node), timeout_s=1)  # and nothing twice
    finally:
        publisher.stop()
        link.stop()
        cloud.close()


def test_drops_are_reported_in_the_nodes_health(tmp_path: Path) -> None:
    from edge.analyzer import Analyzer
    from edge.health import HealthReporter
    from protocols import NodeHealth, decode, encode

    outbox = Outbox(tmp_path / "o.db", budget_bytes=40_000)
    outbox.add([Message("t/e", b"event", Priority.EVENT)])
    for i in range(8):
        outbox.add([Message(f"t/s/{i}", bytes(10_000), Priority.SNAPSHOT)])
    reporter = HealthReporter(
        "qx-drops",
        analyzer=Analyzer(lambda events: None),
        outbox=outbox,
        data_dir=tmp_path,
        model=lambda: None,
        config_version=lambda: None,
    )
    health = decode(NodeHealth, encode(reporter.snapshot()))
    assert health.dropped.snapshots >= 4
    assert health.dropped.events == 0
    assert health.outbox.depth == outbox.stats().depth
    assert health.outbox.bytes <= health.outbox.budget_bytes == 40_000


def test_messages_nobody_subscribes_to_stay_in_the_outbox_until_someone_does(
    broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    node = "qx-unheard"
    outbox = Outbox(tmp_path / "o.db", budget_bytes=1 << 30)
    settings = EdgeSettings(
        node_id=node,
        broker_url=f"mqtt://127.0.0.1:{broker.port}",
        data_dir=tmp_path,
        metrics_port=0,
    )  # type: ignore[call-arg]
    publisher: Publisher
    link = Link(
        settings,
        boot_id=None,
        subscriptions=[],
        on_published=lambda mid, reason: publisher.on_published(mid, reason),
    )
    publisher = Publisher(outbox, link)
    publisher.start()
    link.start()
    try:
        outbox.add([Message(events_topic(node), b"kept", Priority.EVENT)])
        publisher.notify()
        # The broker answers "no matching subscribers" (MQTT 5): the entry must stay.
        wait_until(lambda: publisher.unheard >= 1, 10, "the no-subscriber PUBACK")
        assert outbox.stats().depth == 1
        cloud = MqttProbe(broker.port).connect()
        cloud.subscribe(events_topic(node))  # ingest (re)subscribes
        assert cloud.expect(events_topic(node), timeout_s=20).payload == b"kept"
        wait_until(publisher.idle, 10, "the outbox emptied")
        cloud.close()
    finally:
        publisher.stop()
        link.stop()
