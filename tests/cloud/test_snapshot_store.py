"""Snapshots in an S3-compatible object store: stored by real ingest processes, served by the
API, and nothing lost while the store is away.

The store here is moto's S3 server on loopback, a wire-level double of S3 (the real
services cannot run on this machine); boto3 talks HTTP to it exactly as to MinIO or AWS."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID
from zoneinfo import ZoneInfo

import boto3
import psycopg
import pytest
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from cloud.app import create_app
from cloud.errors import NotFound, StorageError
from cloud.ingest.writer import Batch, BatchWriter
from cloud.settings import CloudSettings, S3Settings
from cloud.snapshots import sha256_hex, snapshot_store, storage_key
from protocols import Channel
from protocols.enums import SnapshotVariant
from protocols.events import Snapshot
from protocols.fast_events import to_fast
from protocols.topics import NodeTopic
from tests.conftest import BrokerFactory
from tests.factories import make_detection_event
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.county import TEST_JWT_SECRET, bearer
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.ports import free_port, wait_until

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40
SECOND = JPEG + b"another frame"

CREDENTIALS = {"access_key_id": "gridwatch", "secret_access_key": "test-secret"}


class S3Server:
    """moto's S3 server on a free loopback port, restartable (its data lives in memory)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def make_bucket(self, name: str) -> None:
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["access_key_id"],
            aws_secret_access_key=CREDENTIALS["secret_access_key"],
        ).create_bucket(Bucket=name)


@pytest.fixture
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


def s3_env(s3: S3Server, url: str) -> dict[str, str]:
    return {
        "CLOUD_SNAPSHOT_URL": url,
        "CLOUD_S3__ENDPOINT_URL": s3.endpoint,
        "CLOUD_S3__REGION": "us-east-1",
        "CLOUD_S3__ACCESS_KEY_ID": CREDENTIALS["access_key_id"],
        "CLOUD_S3__SECRET_ACCESS_KEY": CREDENTIALS["secret_access_key"],
    }


def settings_for(s3: S3Server, url: str, **fields: object) -> CloudSettings:
    return CloudSettings(
        snapshot_url=url,
        s3=S3Settings(endpoint_url=s3.endpoint, region="us-east-1", **CREDENTIALS),
        **fields,  # type: ignore[arg-type]
    )


def test_the_store_keeps_and_returns_bytes_and_names_what_is_missing(s3: S3Server) -> None:
    s3.make_bucket("snaps")
    store = snapshot_store(settings_for(s3, "s3://snaps/county/qx"))
    store.put("2026/11/25/a_frame.jpg", JPEG)
    assert store.get("2026/11/25/a_frame.jpg") == JPEG
    with pytest.raises(NotFound, match="b_frame"):
        store.get("2026/11/25/b_frame.jpg")
    missing_bucket = snapshot_store(settings_for(s3, "s3://no-such-bucket"))
    with pytest.raises(StorageError, match="no-such-bucket"):
        missing_bucket.put("2026/11/25/a_frame.jpg", JPEG)


def test_a_bad_store_url_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="snapshot_url"):
        CloudSettings(snapshot_url="http://snaps")


def test_ingest_stores_snapshots_in_s3_and_waits_while_the_store_is_away(
    s3: S3Server, cloud_db: str, broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    broker: MosquittoBroker = broker_factory(BrokerOptions(persistence=True))
    s3.make_bucket("snaps")
    ingest = IngestProcess(
        tmp_path,
        cloud_db,
        broker.port,
        "ingest-s3",
        CLOUD_INGEST_GROUP="s3",
        **s3_env(s3, "s3://snaps/qx"),
    ).start()
    nodes = FakeNodes(broker.port, tmp_path / "nodes")
    node = "qx-s3-node"
    try:
        ingest.wait_subscribed()
        nodes.publish(node, [0], snapshots=[listed(JPEG)])
        first = nodes.published[-1]
        nodes.publish_snapshot(node, first.event_id, SnapshotVariant.FRAME, JPEG)
        wait_until(
            lambda: count(cloud_db, "SELECT count(*) FROM snapshots WHERE node_id = %s", node) == 1,
            30,
            "the first snapshot stored",
        )

        s3.stop()  # the object store goes away: ingest must hold, not acknowledge
        nodes.publish(node, [1], snapshots=[listed(SECOND)])
        second = nodes.published[-1]
        nodes.publish_snapshot(node, second.event_id, SnapshotVariant.FRAME, SECOND)
        wait_until(
            lambda: "snapshot store unavailable, retrying" in ingest.log(),
            60,
            "ingest noticing the store is gone",
        )
        s3.start()  # back, empty (moto keeps nothing): the bucket is made again
        s3.make_bucket("snaps")
        wait_until(
            lambda: count(cloud_db, "SELECT count(*) FROM snapshots WHERE node_id = %s", node) == 2,
            90,
            "the second snapshot stored once the store returned",
        )
        assert count(cloud_db, "SELECT count(*) FROM events WHERE node_id = %s", node) == 2

        settings = settings_for(
            s3,
            "s3://snaps/qx",
            database_url=cloud_db,
            broker_url=broker.url,
            jwt_secret=TEST_JWT_SECRET,
        )
        with TestClient(create_app(settings)) as client:
            event = client.get(f"/api/v1/events/{second.event_id}", headers=bearer()).json()
            image = client.get(event["snapshot_urls"]["frame"], headers=bearer())
            assert image.status_code == 200
            assert image.content == SECOND
            key = storage_key(node, second.event_id, "frame", sha256_hex(SECOND))
            assert snapshot_store(settings).get(key) == SECOND
    finally:
        ingest.kill()
        nodes.close()


def test_a_snapshot_changed_in_the_object_store_is_refused_when_served(
    s3: S3Server, cloud_db: str, broker: MosquittoBroker
) -> None:
    s3.make_bucket("tamper")
    settings = settings_for(
        s3,
        "s3://tamper/qx",
        database_url=cloud_db,
        broker_url=broker.url,
        jwt_secret=TEST_JWT_SECRET,
    )
    store = snapshot_store(settings)
    node = "qx-s3-tamper"
    event = make_detection_event(node_id=node, seq=1, snapshots=[listed(JPEG)])
    topic = NodeTopic(
        node, Channel.SNAPSHOTS, event_id=event.event_id, variant=SnapshotVariant.FRAME
    )
    now = datetime.now(UTC)
    writer = BatchWriter(timescale=False, store=store, timezone=ZoneInfo("Asia/Shanghai"))
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        writer.write(conn, Batch(events=[(to_fast(event), now)], snapshots=[(topic, JPEG, now)]))
    key = stored_key(cloud_db, event.event_id)
    url = f"/api/v1/events/{event.event_id}/snapshots/frame"
    with TestClient(create_app(settings)) as client:
        assert client.get(url, headers=bearer()).content == JPEG
        store.put(key, SECOND)  # someone with write access to the bucket
        refused = client.get(url, headers=bearer())
    assert refused.status_code == 500
    assert refused.json() == {"detail": "snapshot does not match its recorded sha256"}


def stored_key(database_url: str, event_id: UUID) -> str:
    """The storage key the snapshots row of the event's frame names."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT storage_key FROM snapshots WHERE event_id = %s AND variant = 'frame'",
            (event_id,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def listed(data: bytes) -> Snapshot:
    """What an event says of its frame: a snapshot attaches only to an event listing it."""
    return Snapshot(
        variant=SnapshotVariant.FRAME,
        size_bytes=len(data),
        sha256=sha256_hex(data),
        width=640,
        height=360,
    )
