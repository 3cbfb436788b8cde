"""The API serves a snapshot only while its bytes hash to the sha256 on record."""

# A file changed on disk is refused with a clear error and a log line, never served (the
# same on S3: tests/cloud/test_snapshot_store.py).

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.ingest.writer import Batch, BatchWriter
from cloud.settings import CloudSettings
from cloud.snapshots import LocalSnapshotStore, sha256_hex
from protocols import Channel
from protocols.enums import SnapshotVariant
from protocols.events import Snapshot
from protocols.fast_events import to_fast
from protocols.topics import NodeTopic
from tests.factories import make_detection_event
from tests.support.county import TEST_JWT_SECRET, bearer
from tests.support.mosquitto import MosquittoBroker

NODE = "qx-serve-node"
JPEG = b"\xff\xd8\xff\xe0" + b"evidence" * 64
TAMPERED = b"\xff\xd8\xff\xe0" + b"tampered" * 64


def test_a_snapshot_file_changed_on_disk_is_refused_when_served(
    cloud_db: str, broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    event = make_detection_event(
        node_id=NODE,
        seq=1,
        snapshots=[
            Snapshot(
                variant=SnapshotVariant.FRAME,
                size_bytes=len(JPEG),
                sha256=sha256_hex(JPEG),
                width=640,
                height=360,
            )
        ],
    )
    topic = NodeTopic(
        NODE, Channel.SNAPSHOTS, event_id=event.event_id, variant=SnapshotVariant.FRAME
    )
    now = datetime.now(UTC)
    writer = BatchWriter(
        timescale=False, store=LocalSnapshotStore(tmp_path), timezone=ZoneInfo("Asia/Shanghai")
    )
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        writer.write(conn, Batch(events=[(to_fast(event), now)], snapshots=[(topic, JPEG, now)]))
        row = conn.execute(
            "SELECT storage_key FROM snapshots WHERE event_id = %s", (event.event_id,)
        ).fetchone()
    assert row is not None
    settings = CloudSettings(
        database_url=cloud_db,
        broker_url=broker.url,
        snapshot_dir=tmp_path,
        jwt_secret=TEST_JWT_SECRET,
    )
    url = f"/api/v1/events/{event.event_id}/snapshots/frame"
    with TestClient(create_app(settings)) as client:
        assert client.get(url, headers=bearer()).content == JPEG
        (tmp_path / row[0]).write_bytes(TAMPERED)  # someone with access to the disk
        with caplog.at_level(logging.ERROR, logger="cloud.snapshots"):
            refused = client.get(url, headers=bearer())
    assert refused.status_code == 500
    assert refused.json() == {"detail": "snapshot does not match its recorded sha256"}
    assert TAMPERED not in refused.content
    assert row[0] in caplog.text
