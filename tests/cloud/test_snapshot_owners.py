"""Snapshots belong to their node: attached only where its own event vouches for them."""

# Issue 19: a JPEG attaches only to an event (or a command answer) of the node that sent
# it whose listed sha256 its bytes match, in whichever order and transaction the two
# arrive; what nothing vouches for is dropped after the wait. First written as ingest's
# writer writes, on a real PostgreSQL (and TimescaleDB); last through Mosquitto and real
# ingest processes, served by the API.

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx2 as httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb
from uuid6 import uuid7

from cloud.app import create_app
from cloud.db.schema import prepare_database
from cloud.ingest.snapshot_uploads import Quota
from cloud.ingest.writer import Batch, BatchWriter, WriteResult
from cloud.settings import CloudSettings
from cloud.snapshots import LocalSnapshotStore, sha256_hex
from protocols import Channel, encode
from protocols.enums import ReplyStatus, SnapshotVariant
from protocols.events import DetectionEvent, Snapshot
from protocols.fast_events import to_fast
from protocols.topics import NodeTopic, snapshot_topic
from tests.conftest import BrokerFactory
from tests.factories import make_command_response, make_detection_event
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.county import TEST_JWT_SECRET, bearer
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.ports import free_port, wait_until

NODE = "qx-owner-b"
OTHER = "qx-owner-a"
WAIT_S = 600.0
FRAME = SnapshotVariant.FRAME


def jpeg(tag: bytes) -> bytes:
    return b"\xff\xd8\xff\xe0" + tag * 64


def listed(data: bytes, variant: SnapshotVariant = FRAME) -> Snapshot:
    """What an event says of one of its snapshots."""
    return Snapshot(
        variant=variant, size_bytes=len(data), sha256=sha256_hex(data), width=640, height=360
    )


def event_with(data: bytes, node_id: str = NODE, seq: int = 1) -> DetectionEvent:
    return make_detection_event(node_id=node_id, seq=seq, snapshots=[listed(data)])


def upload(
    node_id: str, event_id: UUID, data: bytes, at: datetime, variant: SnapshotVariant = FRAME
) -> tuple[NodeTopic, bytes, datetime]:
    """A snapshot as ingest decodes it from `gw/v1/nodes/<node_id>/snapshots/<id>/<variant>`."""
    return NodeTopic(node_id, Channel.SNAPSHOTS, event_id=event_id, variant=variant), data, at


@pytest.fixture
def store(tmp_path: Path) -> LocalSnapshotStore:
    return LocalSnapshotStore(tmp_path / "snapshots")


def make_writer(store: LocalSnapshotStore) -> BatchWriter:
    """One ingest process's writer (two of them stand for two processes), with the default
    wait (WAIT_S)."""
    return BatchWriter(timescale=False, store=store, timezone=ZoneInfo("Asia/Shanghai"))


def write(url: str, writer: BatchWriter, batch: Batch) -> WriteResult:
    """Write one batch in one transaction, as ingest does."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        return writer.write(conn, batch)


def dropped(result: WriteResult) -> list[str]:
    """Why the batch's snapshots were dropped, if any were."""
    return [drop.reason for drop in result.snapshots_dropped]


def sweep(url: str, writer: BatchWriter, now: datetime) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        return [dropped.reason for dropped in writer.sweep_snapshots(conn, now)]


def attached(url: str, node_id: str, event_id: UUID) -> tuple[str, str] | None:
    """The (storage key, sha256) the API would serve for the event's frame, if any."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT storage_key, sha256 FROM snapshots "
            "WHERE event_id = %s AND variant = 'frame' AND node_id = %s",
            (event_id, node_id),
        ).fetchone()
    return None if row is None else (row[0], row[1])


def any_row(url: str, event_id: UUID) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM snapshots WHERE event_id = %s", (event_id,))
        return bool(row.fetchone()[0])  # type: ignore[index]


def files(store: LocalSnapshotStore) -> set[bytes]:
    return {path.read_bytes() for path in store.root.rglob("*.jpg")}


def test_a_snapshot_attaches_whether_it_comes_before_or_after_its_event(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    writer = make_writer(store)
    now = datetime.now(UTC)
    first, later = jpeg(b"after"), jpeg(b"before")

    after = event_with(first, seq=1)
    write(cloud_db, writer, Batch(events=[(to_fast(after), now)]))
    attaching = write(cloud_db, writer, Batch(snapshots=[upload(NODE, after.event_id, first, now)]))

    before = event_with(later, seq=2)
    write(cloud_db, writer, Batch(snapshots=[upload(NODE, before.event_id, later, now)]))
    # Nothing points at a snapshot until an event of its node vouches for its bytes.
    assert not any_row(cloud_db, before.event_id)
    write(cloud_db, writer, Batch(events=[(to_fast(before), now)]))

    for event, data in ((after, first), (before, later)):
        row = attached(cloud_db, NODE, event.event_id)
        assert row is not None, f"{data[4:10]!r} not attached"
        key, sha256 = row
        assert NODE in key.split("/"), "the storage key holds the node id"
        assert sha256 == sha256_hex(data)
        assert store.get(key) == data
    assert dropped(attaching) == []


def test_a_snapshot_and_its_event_in_concurrent_transactions_attach_at_the_sweep(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    # Two ingest processes on the shared subscription: one got the snapshot, the other the
    # event, and each transaction ran before the other committed.
    snapshot_process, event_process = make_writer(store), make_writer(store)
    data = jpeg(b"race")
    event = event_with(data, seq=3)
    now = datetime.now(UTC)
    snapshot = Batch(snapshots=[upload(NODE, event.event_id, data, now)])
    with (
        psycopg.connect(cloud_db, autocommit=True) as first,
        psycopg.connect(cloud_db, autocommit=True) as second,
        first.transaction(),
    ):
        snapshot_process.write(first, snapshot)
        with second.transaction():  # commits first, the snapshot's transaction still open
            event_process.write(second, Batch(events=[(to_fast(event), now)]))
    assert not any_row(cloud_db, event.event_id)  # neither transaction saw the other
    assert sweep(cloud_db, event_process, now + timedelta(seconds=1)) == []
    row = attached(cloud_db, NODE, event.event_id)
    assert row is not None
    assert store.get(row[0]) == data


def test_a_snapshot_without_its_event_waits_then_is_dropped(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    writer = make_writer(store)
    data = jpeg(b"orphan")
    event_id = uuid7()
    at = datetime.now(UTC)
    write(cloud_db, writer, Batch(snapshots=[upload(NODE, event_id, data, at)]))
    assert not any_row(cloud_db, event_id)
    assert sweep(cloud_db, writer, at + timedelta(seconds=WAIT_S - 1)) == []
    assert data in files(store), "kept while its event may still come"
    assert sweep(cloud_db, writer, at + timedelta(seconds=WAIT_S + 1)) == ["no_event"]
    assert data not in files(store)
    assert sweep(cloud_db, writer, at + timedelta(seconds=WAIT_S + 2)) == []  # counted once
    assert not any_row(cloud_db, event_id)


def test_bytes_that_do_not_match_the_events_sha256_are_refused(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    writer = make_writer(store)
    now = datetime.now(UTC)
    real, forged = jpeg(b"real"), jpeg(b"forged")

    # The event first: the forged bytes are refused on arrival, the real ones attach.
    event = event_with(real, seq=10)
    write(cloud_db, writer, Batch(events=[(to_fast(event), now)]))
    refused = write(cloud_db, writer, Batch(snapshots=[upload(NODE, event.event_id, forged, now)]))
    assert not any_row(cloud_db, event.event_id)
    assert dropped(refused) == ["sha256"]
    write(cloud_db, writer, Batch(snapshots=[upload(NODE, event.event_id, real, now)]))
    row = attached(cloud_db, NODE, event.event_id)
    assert row is not None
    assert store.get(row[0]) == real

    # The forged bytes first, their event later: refused once the event says otherwise.
    late = event_with(real, seq=11)
    write(cloud_db, writer, Batch(snapshots=[upload(NODE, late.event_id, forged, now)]))
    write(cloud_db, writer, Batch(events=[(to_fast(late), now)]))
    assert sweep(cloud_db, writer, now + timedelta(seconds=1)) == ["sha256"]
    assert not any_row(cloud_db, late.event_id)

    # A variant the event does not list is refused too.
    crop = upload(NODE, event.event_id, forged, now, SnapshotVariant.CROP)
    assert dropped(write(cloud_db, writer, Batch(snapshots=[crop]))) == ["variant"]
    assert forged not in files(store)


def test_a_snapshot_for_another_nodes_event_is_refused(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    writer = make_writer(store)
    now = datetime.now(UTC)
    mine, theirs = jpeg(b"node b"), jpeg(b"node a")
    event = event_with(mine, seq=20)
    write(
        cloud_db,
        writer,
        Batch(events=[(to_fast(event), now)], snapshots=[upload(NODE, event.event_id, mine, now)]),
    )
    # Node A, on its own topic, with B's event id.
    refused = write(cloud_db, writer, Batch(snapshots=[upload(OTHER, event.event_id, theirs, now)]))
    row = attached(cloud_db, NODE, event.event_id)
    assert row is not None
    assert store.get(row[0]) == mine
    assert attached(cloud_db, OTHER, event.event_id) is None
    assert theirs not in files(store)
    assert dropped(refused) == ["other_node"]


def test_a_recheck_snapshot_belongs_to_the_node_the_command_went_to(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    writer = make_writer(store)
    now = datetime.now(UTC)
    picture, hostile = jpeg(b"recheck"), jpeg(b"hostile")
    request_id = uuid7()
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO commands (request_id, node_id, command, args, issued_at, expires_at, "
            "issued_by) VALUES (%s, %s, 'snapshot', %s, %s, %s, 'test')",
            (request_id, NODE, Jsonb({"camera_id": "cam01"}), now, now + timedelta(minutes=5)),
        )
    # The picture before the node's answer, which names its sha256.
    write(cloud_db, writer, Batch(snapshots=[upload(NODE, request_id, picture, now)]))
    assert not any_row(cloud_db, request_id)
    answer = make_command_response(
        request_id=request_id,
        node_id=NODE,
        status=ReplyStatus.OK,
        data={
            "camera_id": "cam01",
            "snapshot_topic": snapshot_topic(NODE, request_id, FRAME),
            "sha256": sha256_hex(picture),
            "size_bytes": len(picture),
        },
    )
    write(cloud_db, writer, Batch(responses=[(answer, encode(answer), now)]))
    # Another node's picture for the same request is refused.
    refused = write(cloud_db, writer, Batch(snapshots=[upload(OTHER, request_id, hostile, now)]))
    row = attached(cloud_db, NODE, request_id)
    assert row is not None
    assert store.get(row[0]) == picture
    assert attached(cloud_db, OTHER, request_id) is None
    assert dropped(refused) == ["other_node"]


@pytest.mark.parametrize(
    "bad_id",
    [
        UUID("ffffffff-ffff-7fff-bfff-ffffffffffff"),  # a UUIDv7 of a time past year 9999
        UUID("3f2a1c9e-8b7d-4e6f-9a5b-1c2d3e4f5a6b"),  # a UUIDv4
    ],
)
def test_a_snapshot_whose_id_is_no_uuid7_is_dropped_and_its_batch_stored(
    cloud_db: str, store: LocalSnapshotStore, bad_id: UUID
) -> None:
    writer = make_writer(store)
    now = datetime.now(UTC)
    good, poison = jpeg(b"good"), jpeg(b"poison")
    event = event_with(good, seq=30 if bad_id.version == 7 else 31)
    batch = Batch(
        events=[(to_fast(event), now)],
        snapshots=[upload(NODE, bad_id, poison, now), upload(NODE, event.event_id, good, now)],
    )
    result = write(cloud_db, writer, batch)
    row = attached(cloud_db, NODE, event.event_id)
    assert row is not None
    assert store.get(row[0]) == good
    assert poison not in files(store)
    assert dropped(result) == ["no_event"]


def test_snapshots_wait_attach_and_expire_on_timescaledb(
    timescale_url: str, tmp_path: Path
) -> None:
    # The same tables and statements where events are a hypertable (one connection at a
    # time: the endpoint's limit).
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        assert prepare_database(conn, CloudSettings(database_url=timescale_url))
    store = LocalSnapshotStore(tmp_path / "snapshots")
    writer = BatchWriter(timescale=True, store=store, timezone=ZoneInfo("Asia/Shanghai"))
    now = datetime.now(UTC)
    data, orphan = jpeg(b"hypertable"), jpeg(b"no event")
    event = event_with(data, node_id="qx-owner-ts", seq=1)
    orphan_id = uuid7()
    write(
        timescale_url, writer, Batch(snapshots=[upload("qx-owner-ts", event.event_id, data, now)])
    )
    write(timescale_url, writer, Batch(snapshots=[upload("qx-owner-ts", orphan_id, orphan, now)]))
    assert not any_row(timescale_url, event.event_id)
    write(timescale_url, writer, Batch(events=[(to_fast(event), now)]))
    row = attached(timescale_url, "qx-owner-ts", event.event_id)
    assert row is not None
    assert store.get(row[0]) == data
    assert sweep(timescale_url, writer, now + timedelta(seconds=WAIT_S + 1)) == ["no_event"]
    assert files(store) == {data}


# ---- through Mosquitto and a real ingest process ------------------------------------------


@pytest.fixture(scope="module")
def durable_broker(broker_factory: BrokerFactory) -> MosquittoBroker:
    return broker_factory(BrokerOptions(persistence=True))


class Ingest(IngestProcess):
    """An ingest process with its own group, snapshot folder and /metrics port."""

    def __init__(
        self, tmp_path: Path, url: str, broker: MosquittoBroker, name: str, **env: str
    ) -> None:
        self.metrics_port = free_port()
        self.snapshots = tmp_path / "snapshots"
        super().__init__(
            tmp_path / name,
            url,
            broker.port,
            name,
            CLOUD_INGEST_GROUP=name.replace("-", "_"),
            CLOUD_SNAPSHOT_DIR=str(self.snapshots),
            CLOUD_INGEST_METRICS_PORT=str(self.metrics_port),
            CLOUD_METRICS_OPEN="true",
            **env,
        )

    def dropped(self, reason: str) -> float:
        """gridwatch_ingest_snapshots_dropped_total{reason} as the process reports it."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "gridwatch_ingest_snapshots_dropped_total"
                    and sample.labels.get("reason") == reason
                ):
                    return float(sample.value)
        return 0.0


@pytest.fixture
def nodes(durable_broker: MosquittoBroker, tmp_path: Path) -> Iterator[FakeNodes]:
    fake = FakeNodes(durable_broker.port, tmp_path / "nodes")
    yield fake
    fake.close()


def processed(url: str, client_id: str) -> int:
    return count(
        url,
        "SELECT coalesce(sum(messages), 0) FROM ingest_progress WHERE client_id = %s",
        client_id,
    )


def test_a_node_cannot_replace_another_nodes_snapshot_as_served(
    cloud_db: str, durable_broker: MosquittoBroker, nodes: FakeNodes, tmp_path: Path
) -> None:
    ingest = Ingest(tmp_path, cloud_db, durable_broker, "ingest-owners").start()
    victim, attacker = "qx-owner-mqtt-b", "qx-owner-mqtt-a"
    evidence, forgery = jpeg(b"evidence"), jpeg(b"forgery")
    try:
        ingest.wait_subscribed()
        nodes.publish(victim, [0], snapshots=[listed(evidence)])
        event = nodes.published[-1]
        nodes.publish_snapshot(victim, event.event_id, FRAME, evidence)
        wait_until(lambda: processed(cloud_db, "ingest-owners") >= 2, 60, "B's event and picture")
        # Node A publishes on its own topic, naming B's event: gw/v1/nodes/A/snapshots/<id>/frame
        nodes.publish_snapshot(attacker, event.event_id, FRAME, forgery)
        wait_until(lambda: processed(cloud_db, "ingest-owners") >= 3, 60, "A's picture")

        settings = CloudSettings(
            database_url=cloud_db,
            broker_url=durable_broker.url,
            snapshot_dir=ingest.snapshots,
            jwt_secret=TEST_JWT_SECRET,
        )
        with TestClient(create_app(settings)) as client:
            url = client.get(f"/api/v1/events/{event.event_id}", headers=bearer()).json()[
                "snapshot_urls"
            ]["frame"]
            image = client.get(url, headers=bearer())
        assert image.status_code == 200
        assert image.content == evidence
        assert attached(cloud_db, attacker, event.event_id) is None
        assert ingest.dropped("other_node") == 1
    finally:
        ingest.kill()


def test_a_snapshot_whose_event_never_comes_is_dropped_after_the_wait_and_counted(
    cloud_db: str, durable_broker: MosquittoBroker, nodes: FakeNodes, tmp_path: Path
) -> None:
    # No wait, and a sweep every second (half the reorder window, at least a second).
    ingest = Ingest(
        tmp_path,
        cloud_db,
        durable_broker,
        "ingest-orphans",
        CLOUD_INGEST_SNAPSHOT_WAIT_S="0",
        CLOUD_INGEST_REORDER_WINDOW_S="0",
    ).start()
    node, event_id = "qx-owner-orphan", uuid7()
    try:
        ingest.wait_subscribed()
        nodes.publish_snapshot(node, event_id, FRAME, jpeg(b"no event"))
        wait_until(lambda: ingest.dropped("no_event") >= 1, 60, "the snapshot dropped and counted")
        assert ingest.dropped("no_event") == 1
        assert not any_row(cloud_db, event_id)
        assert list(ingest.snapshots.rglob("*.jpg")) == []
        assert f"event_id={event_id}" in ingest.log()
    finally:
        ingest.kill()


def test_an_answer_belongs_to_the_node_the_command_went_to(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    writer = make_writer(store)
    now = datetime.now(UTC)
    request_id = uuid7()
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO commands (request_id, node_id, command, args, issued_at, expires_at, "
            "issued_by) VALUES (%s, %s, 'identify', %s, %s, %s, 'test')",
            (request_id, NODE, Jsonb({}), now, now + timedelta(minutes=5)),
        )
    forged = make_command_response(request_id=request_id, node_id=OTHER, status=ReplyStatus.OK)
    real = make_command_response(request_id=request_id, node_id=NODE, status=ReplyStatus.OK)
    refused = write(cloud_db, writer, Batch(responses=[(forged, encode(forged), now)]))
    # The forgery in the answer's own batch too: refused all the same.
    together = write(
        cloud_db,
        writer,
        Batch(responses=[(real, encode(real), now), (forged, encode(forged), now)]),
    )
    kept = write(
        cloud_db, writer, Batch(responses=[(real, encode(real), now), (real, encode(real), now)])
    )
    forgery = [("request_id", f"gw/v1/nodes/{OTHER}/responses/{request_id}")]
    assert [(d.field, d.topic) for d in refused.dead] == forgery
    assert [(d.field, d.topic) for d in together.dead] == forgery
    assert kept.dead == []
    with psycopg.connect(cloud_db) as conn:
        answers = conn.execute(
            "SELECT node_id FROM command_responses WHERE request_id = %s", (request_id,)
        ).fetchall()
    assert answers == [(NODE,)]


def test_a_box_has_a_quota_of_pictures_waiting_and_others_are_not_held_by_it(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    flooder, other = "qx-quota-a", "qx-quota-b"
    pictures = [jpeg(b"flood%d" % i) for i in range(5)]
    quota = 3 * len(pictures[0])
    writer = BatchWriter(
        timescale=False,
        store=store,
        timezone=ZoneInfo("Asia/Shanghai"),
        snapshot_quota=Quota(waiting_bytes=quota),
    )
    now = datetime.now(UTC)
    first = event_with(pictures[0], node_id=flooder, seq=1)
    flood = [upload(flooder, first.event_id, pictures[0], now)] + [
        upload(flooder, uuid7(), p, now) for p in pictures[1:]
    ]
    theirs = jpeg(b"theirs")
    result = write(cloud_db, writer, Batch(snapshots=[*flood, upload(other, uuid7(), theirs, now)]))
    assert dropped(result) == ["quota", "quota"]
    assert files(store) == {*pictures[:3], theirs}
    # Its event attaches the first: the box has room for one more.
    write(cloud_db, writer, Batch(events=[(to_fast(first), now)]))
    assert attached(cloud_db, flooder, first.event_id) is not None
    again = write(cloud_db, writer, Batch(snapshots=[upload(flooder, uuid7(), pictures[3], now)]))
    assert dropped(again) == []


def test_a_box_that_vouches_for_its_own_pictures_has_a_day_quota(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    """Its events list every picture it sends, so each would attach: the day's quota stops
    it, pictures older than a day do not count, and another box is not held by it."""
    flooder, other = "qx-day-a", "qx-day-b"
    pictures = [jpeg(b"day%d" % i) for i in range(4)]
    writer = BatchWriter(
        timescale=False,
        store=store,
        timezone=ZoneInfo("Asia/Shanghai"),
        snapshot_quota=Quota(daily_bytes=2 * len(pictures[0])),
    )
    now = datetime.now(UTC)
    with psycopg.connect(cloud_db, autocommit=True) as conn:  # yesterday's pictures
        conn.execute(
            "INSERT INTO snapshots (event_id, variant, node_id, sha256, size_bytes, "
            "storage_key, received_at) VALUES (%s, 'frame', %s, 'x', 1000000, 'old', %s)",
            (uuid7(), flooder, now - timedelta(days=1, minutes=1)),
        )
    events = [event_with(p, node_id=flooder, seq=i + 1) for i, p in enumerate(pictures)]
    write(cloud_db, writer, Batch(events=[(to_fast(e), now) for e in events]))
    theirs = event_with(jpeg(b"theirs"), node_id=other)
    write(cloud_db, writer, Batch(events=[(to_fast(theirs), now)]))
    first = write(
        cloud_db,
        writer,
        Batch(
            snapshots=[
                upload(flooder, e.event_id, p, now)
                for e, p in zip(events[:3], pictures[:3], strict=True)
            ]
        ),
    )
    later = write(
        cloud_db,
        writer,
        Batch(
            snapshots=[
                upload(flooder, events[3].event_id, pictures[3], now),
                upload(other, theirs.event_id, jpeg(b"theirs"), now),
            ]
        ),
    )
    assert dropped(first) == ["day_quota"]
    assert dropped(later) == ["day_quota"]
    assert [attached(cloud_db, flooder, e.event_id) is not None for e in events] == [
        True,
        True,
        False,
        False,
    ]
    assert attached(cloud_db, other, theirs.event_id) is not None
    assert files(store) == {*pictures[:2], jpeg(b"theirs")}


def test_a_box_has_a_quota_of_pictures_waiting_however_small(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    """Three-byte "pictures" to made-up ids fit a byte quota by the million, each a row the
    sweep looks at again and again (300 a second held every box's events up by 47 s)."""
    writer = BatchWriter(
        timescale=False,
        store=store,
        timezone=ZoneInfo("Asia/Shanghai"),
        snapshot_quota=Quota(waiting_count=3),
    )
    now = datetime.now(UTC)
    tiny = [upload("qx-tiny", uuid7(), b"\\xff\\xd8\\xff" + bytes([i]), now) for i in range(5)]
    result = write(cloud_db, writer, Batch(snapshots=tiny))
    assert dropped(result) == ["quota", "quota"]
    assert len(files(store)) == 3


def test_a_box_has_a_day_quota_of_pictures_however_small(
    cloud_db: str, store: LocalSnapshotStore
) -> None:
    """700-byte pictures fit the day's byte quota 1.5 million times a day, each a file and
    an inode: the day counts pictures too."""
    node = "qx-day-count"
    pictures = [jpeg(b"tiny%d" % i) for i in range(4)]
    writer = BatchWriter(
        timescale=False,
        store=store,
        timezone=ZoneInfo("Asia/Shanghai"),
        snapshot_quota=Quota(daily_count=2),
    )
    now = datetime.now(UTC)
    events = [event_with(p, node_id=node, seq=i + 1) for i, p in enumerate(pictures)]
    write(cloud_db, writer, Batch(events=[(to_fast(e), now) for e in events]))
    result = write(
        cloud_db,
        writer,
        Batch(
            snapshots=[
                upload(node, e.event_id, p, now) for e, p in zip(events, pictures, strict=True)
            ]
        ),
    )
    assert dropped(result) == ["day_quota", "day_quota"]
    assert [attached(cloud_db, node, e.event_id) is not None for e in events] == [
        True,
        True,
        False,
        False,
    ]
