"""A camera counts online by what a health report's interval saw, not the instant of the
report: a stream that reconnected 0.4 s before a report read offline, and the screen said
half the county's cameras were down while every one streamed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from cloud.ingest.writer import Batch, BatchWriter
from cloud.snapshots import LocalSnapshotStore
from edge.camera import CameraReader, StreamState
from protocols import encode
from protocols.enums import StreamStatus
from protocols.health import CameraHealth
from tests.factories import make_node_health


def camera(camera_id: str, status: StreamStatus, fraction: float | None) -> CameraHealth:
    return CameraHealth(
        camera_id=camera_id,
        status=status,
        input_fps=5,
        analysed_fps=5,
        reconnects=1,
        connected_fraction=fraction,
    )


def test_the_interval_decides_and_an_older_edge_is_read_by_its_state(
    cloud_db: str, tmp_path: Path
) -> None:
    writer = BatchWriter(
        timescale=False, store=LocalSnapshotStore(tmp_path), timezone=ZoneInfo("UTC")
    )
    report = make_node_health(
        node_id="qx-online",
        cameras=[
            camera("road01", StreamStatus.CONNECTING, 0.98),  # reconnected just now: online
            camera("road02", StreamStatus.CONNECTED, 0.1),  # back a moment ago: not yet
            camera("road03", StreamStatus.CONNECTED, None),  # an older edge: its state
        ],
    )
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        writer.write(conn, Batch(health=[(report, encode(report), datetime.now(UTC))]))
    with psycopg.connect(cloud_db) as conn:
        row = conn.execute(
            "SELECT cameras_connected, cameras_total FROM node_last_health WHERE node_id = %s",
            ("qx-online",),
        ).fetchone()
    assert row == (2, 3)


def test_a_reader_counts_the_seconds_it_was_connected() -> None:
    reader = CameraReader(
        "cam1", "rtsp://127.0.0.1:9/none", sample_fps=1.0, on_sample=lambda _: None
    )
    assert reader.connected_seconds() == 0
    reader._set_state(StreamState.CONNECTED)
    reader._connected_at = (reader._connected_at or 0) - 10  # ten seconds ago
    reader._set_state(StreamState.OFFLINE, "lost")
    assert 10 <= reader.connected_seconds() < 11
    assert reader.connected_seconds() == reader.connected_seconds()  # offline: it stays
