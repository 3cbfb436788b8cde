"""Time series on both paths: TimescaleDB (the WASM build, real TimescaleDB 2.x) and plain
PostgreSQL 15. Rollups equal direct counts; retention drops old data; the same queries
answer on both."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from cloud.db import events as event_queries
from cloud.db import nodes as node_queries
from cloud.db import upkeep
from cloud.db.schema import prepare_database
from cloud.db.timeseries import (
    apply_timescale_policies,
    drop_expired,
    ensure_partitions,
    list_partitions,
    policy_jobs,
    refresh_late,
    watermark,
)
from cloud.db.upkeep import JobStatus, follow_policies
from cloud.ingest.writer import Batch, BatchWriter
from cloud.settings import CloudSettings, RetentionSettings
from cloud.snapshots import LocalSnapshotStore
from protocols import NodeHealth, encode
from protocols.enums import EventKind, EventPhase, StreamStatus
from protocols.events import DetectionEvent
from protocols.fast_events import to_fast
from protocols.health import CameraHealth
from tests.factories import make_detection_event, make_node_health

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime.now(UTC).replace(microsecond=0)


# The camera of `situations`: the counts compared are this camera's, whatever other test
# modules wrote into the one TimescaleDB endpoint of the session.
CAMERA = "rollup-cam"


def situations(
    node_id: str, start: datetime, hours: int, camera_id: str = CAMERA
) -> list[DetectionEvent]:
    """A varying number of event threads per hour and kind, each a start and an end."""
    events = []
    seq = 0
    for hour in range(hours):
        for kind, per_hour in ((EventKind.INTRUSION, hour % 3 + 1), (EventKind.OBJECT, hour % 2)):
            for i in range(per_hour):
                at = start + timedelta(hours=hour, minutes=7 * i + 1)
                first = make_detection_event(
                    node_id=node_id,
                    seq=seq,
                    camera_id=camera_id,
                    kind=kind,
                    observed_at=at,
                    phase=EventPhase.START,
                )
                last = make_detection_event(
                    node_id=node_id,
                    seq=seq + 1,
                    camera_id=camera_id,
                    kind=kind,
                    observed_at=at + timedelta(seconds=30),
                    phase=EventPhase.END,
                    thread_id=first.event_id,
                )
                events += [first, last]
                seq += 2
    return events


def write(conn: psycopg.Connection, writer: BatchWriter, events: list[DetectionEvent]) -> int:
    with conn.transaction():
        return writer.write(conn, Batch(events=[(to_fast(e), NOW) for e in events])).events_stored


def expected_counts(events: list[DetectionEvent], bucket: str) -> Counter[tuple[datetime, str]]:
    counts: Counter[tuple[datetime, str]] = Counter()
    for event in events:
        if event.phase is not EventPhase.START:
            continue
        if bucket == "hour":
            key = event.observed_at.replace(minute=0, second=0, microsecond=0)
        else:
            local = event.observed_at.astimezone(SHANGHAI)
            key = local.replace(hour=0, minute=0, second=0, microsecond=0)
        counts[(key.astimezone(UTC), event.kind.value)] += 1
    return counts


def counts_from_api_query(
    url: str, bucket: str, start: datetime, end: datetime, camera_id: str = CAMERA
) -> Counter[tuple[datetime, str]]:
    """The API's own query (cloud.db.events.count_events), over an async connection."""

    async def run() -> list[dict[str, object]]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await event_queries.count_events(
                conn, bucket=bucket, start=start, end=end, unit=None, kind=None, camera_id=camera_id
            )

    return Counter(
        {
            (row["bucket"].astimezone(UTC), row["kind"]): row["events"]  # type: ignore[union-attr]
            for row in asyncio.run(run())
        }
    )


def health_reports(node_id: str, start: datetime, hours: int) -> list[NodeHealth]:
    """Four reports an hour with varying load, disk and cameras."""
    reports = []
    for hour in range(hours):
        for quarter in range(4):
            i = hour * 4 + quarter
            reports.append(
                make_node_health(
                    node_id=node_id,
                    sent_at=start + timedelta(hours=hour, minutes=15 * quarter),
                    cpu_percent=float(i % 7 * 10),
                    disk_used_bytes=1_000_000 + i * 1000,
                    cameras=[
                        CameraHealth(
                            camera_id=f"cam{c}",
                            status=StreamStatus.CONNECTED if c <= i % 3 else StreamStatus.OFFLINE,
                            input_fps=25.0,
                            analysed_fps=5.0,
                            reconnects=0,
                        )
                        for c in range(3)
                    ],
                )
            )
    return reports


def write_health(conn: psycopg.Connection, writer: BatchWriter, reports: list[NodeHealth]) -> None:
    with conn.transaction():
        writer.write(conn, Batch(health=[(h, encode(h), NOW) for h in reports]))


def expected_hours(reports: list[NodeHealth]) -> dict[datetime, tuple[int, float, float, int, int]]:
    """(samples, average cpu, max cpu, max disk used, min cameras up) per hour."""
    hours: dict[datetime, list[NodeHealth]] = {}
    for h in reports:
        hours.setdefault(h.sent_at.replace(minute=0, second=0, microsecond=0), []).append(h)
    return {
        bucket: (
            len(hs),
            round(sum(h.cpu_percent for h in hs) / len(hs), 3),
            max(h.cpu_percent for h in hs),
            max(h.disk_used_bytes for h in hs),
            min(sum(1 for c in h.cameras if c.status is StreamStatus.CONNECTED) for h in hs),
        )
        for bucket, hs in hours.items()
    }


def hours_from_api_query(
    url: str, node_id: str, start: datetime, end: datetime
) -> dict[datetime, tuple[int, float, float, int, int]]:
    async def run() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await node_queries.health_hourly(conn, node_id, start, end)

    return {
        row["bucket"].astimezone(UTC): (
            row["samples"],
            round(row["cpu_avg"], 3),
            row["cpu_max"],
            row["disk_used_max"],
            row["cameras_connected_min"],
        )
        for row in asyncio.run(run())
    }


def writer_for(timescale: bool, tmp_path: Path) -> BatchWriter:
    return BatchWriter(timescale=timescale, store=LocalSnapshotStore(tmp_path), timezone=SHANGHAI)


def run_refresh_policies(conn: psycopg.Connection) -> None:
    """What the job scheduler does every few minutes (the test endpoint has none)."""
    for job_id, proc, _ in policy_jobs(conn):
        if proc == "policy_refresh_continuous_aggregate":
            conn.execute("CALL run_job(%s)", (job_id,))


LATE_CAMERA = "late-cam"


def lateness_mix(path: str, now: datetime) -> tuple[list[DetectionEvent], list[DetectionEvent]]:
    """Events on time, then events 3 and 10 days late and in the current hour (each group
    from its own box, as a town replaying an outage would send them)."""
    on_time = situations(f"qx-{path}-ontime", now - timedelta(hours=8), 5, LATE_CAMERA)
    late = [
        *situations(f"qx-{path}-3d", now - timedelta(days=3, hours=5), 3, LATE_CAMERA),
        *situations(f"qx-{path}-10d", now - timedelta(days=10, hours=5), 3, LATE_CAMERA),
    ]
    late += [
        make_detection_event(
            node_id=f"qx-{path}-now",
            seq=i,
            camera_id=LATE_CAMERA,
            observed_at=now - timedelta(seconds=30 * i + 5),
            phase=EventPhase.START,
        )
        for i in range(4)
    ]
    return on_time, late


def direct_counts(conn: psycopg.Connection, bucket: str) -> Counter[tuple[datetime, str]]:
    """Counted from the events table itself."""
    truncated = (
        "date_trunc('hour', observed_at)"
        if bucket == "hour"
        else "date_trunc('day', observed_at, 'Asia/Shanghai')"
    )
    return Counter(
        {
            (r[0], r[1]): r[2]
            for r in conn.execute(
                f"SELECT {truncated}, kind, count(*) FROM events "  # noqa: S608
                "WHERE camera_id = %s AND phase = 'start' GROUP BY 1, 2",
                (LATE_CAMERA,),
            ).fetchall()
        }
    )


def assert_counts_include_late_events(url: str, events: list[DetectionEvent]) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        direct = {bucket: direct_counts(conn, bucket) for bucket in ("hour", "day")}
    window = (now - timedelta(days=30), now + timedelta(days=1))
    for bucket in ("hour", "day"):
        expected = expected_counts(events, bucket)
        assert direct[bucket] == expected
        assert counts_from_api_query(url, bucket, *window, camera_id=LATE_CAMERA) == expected


# ---- TimescaleDB ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timescale_db(timescale_url: str) -> str:
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        assert prepare_database(conn, CloudSettings(database_url=timescale_url))
    return timescale_url


def test_timescale_a_late_hour_above_the_watermark_hides_no_hour_below_it(
    timescale_db: str, tmp_path: Path
) -> None:
    """Refreshing a late hour the aggregate still reads live moved its watermark past an
    hour never materialised (the scheduler behind): that hour's rows left the counts. First
    in the module: nothing here has been refreshed yet."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    earlier, later = hour - timedelta(hours=3), hour - timedelta(hours=2)
    camera = "above-cam"
    events = [
        make_detection_event(
            node_id="qx-ts-above", seq=i, camera_id=camera, observed_at=at, phase=EventPhase.START
        )
        for i, at in enumerate([earlier + timedelta(minutes=10), later + timedelta(minutes=10)])
    ]
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        assert watermark(conn, "events_hourly") <= earlier  # neither hour materialised
        assert write(conn, writer_for(True, tmp_path), events[:1]) == 1
        conn.execute("DELETE FROM aggregate_late_hours")  # as if it had come on time
        assert write(conn, writer_for(True, tmp_path), events[1:]) == 1  # late: marked
        refresh_late(conn, SHANGHAI)
        assert watermark(conn, "events_hourly") <= earlier
    window = (earlier - timedelta(days=1), hour + timedelta(hours=1))
    for bucket in ("hour", "day"):
        expected = expected_counts(events, bucket)
        assert counts_from_api_query(timescale_db, bucket, *window, camera_id=camera) == expected


def test_timescale_schema_has_hypertables_compression_and_policies(timescale_db: str) -> None:
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        hypertables = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT hypertable_name, compression_enabled "
                "FROM timescaledb_information.hypertables"
            ).fetchall()
        }
        views = {
            r[0]
            for r in conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            ).fetchall()
        }
        segment_by = {
            r[0]
            for r in conn.execute(
                "SELECT attname FROM timescaledb_information.compression_settings "
                "WHERE hypertable_name = 'events' AND segmentby_column_index IS NOT NULL"
            ).fetchall()
        }
        jobs = {(proc, table) for _, proc, table in policy_jobs(conn)}
    assert hypertables == {"events": True, "node_health": True, "telemetry": True}
    assert views == {"events_hourly", "events_daily", "node_health_hourly"}
    assert segment_by == {"camera_id", "kind"}
    assert {
        ("policy_retention", "events"),
        ("policy_retention", "node_health"),
        ("policy_compression", "events"),
        ("policy_compression", "node_health"),
        ("policy_compression", "telemetry"),
        ("policy_refresh_continuous_aggregate", "events_hourly"),
        ("policy_refresh_continuous_aggregate", "events_daily"),
        ("policy_refresh_continuous_aggregate", "node_health_hourly"),
    } <= jobs


def test_timescale_aggregates_equal_direct_counts_and_serve_the_api_query(
    timescale_db: str,
    tmp_path: Path,
) -> None:
    start = (NOW - timedelta(days=2)).replace(minute=0, second=0)
    events = situations("qx-ts-rollup", start, hours=30)
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        assert write(conn, writer_for(True, tmp_path), events) == len(events)
        assert write(conn, writer_for(True, tmp_path), events[:10]) == 0  # redelivered
        run_refresh_policies(conn)
    window = (start - timedelta(days=1), NOW + timedelta(days=1))
    assert counts_from_api_query(timescale_db, "hour", *window) == expected_counts(events, "hour")
    assert counts_from_api_query(timescale_db, "day", *window) == expected_counts(events, "day")


def test_timescale_counts_late_events_of_any_age_and_the_current_hour(
    timescale_db: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    on_time, late = lateness_mix("ts", now)
    writer = writer_for(True, tmp_path)
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        assert write(conn, writer, on_time) == len(on_time)
        run_refresh_policies(conn)  # what came on time is materialised
        assert write(conn, writer, late) == len(late)
        run_refresh_policies(conn)  # their windows (3 and 35 days) leave the late hours out
        # What ingest does each minute: the hours late events fell in, refreshed.
        assert refresh_late(conn, SHANGHAI) > 0
        assert conn.execute("SELECT count(*) FROM aggregate_late_hours").fetchone() == (0,)
    assert_counts_include_late_events(timescale_db, on_time + late)


def test_timescale_health_hours_equal_direct_aggregates(timescale_db: str, tmp_path: Path) -> None:
    start = (NOW - timedelta(days=1)).replace(minute=0, second=0)
    reports = health_reports("qx-ts-health", start, hours=6)
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        write_health(conn, writer_for(True, tmp_path), reports)
        write_health(conn, writer_for(True, tmp_path), reports[:5])  # redelivered
        # Nothing refreshed: the aggregate is real-time, as a box page needs the current hour.

        latest = conn.execute(
            "SELECT sent_at FROM node_last_health WHERE node_id = 'qx-ts-health'"
        ).fetchone()
    window = (start - timedelta(hours=1), NOW)
    assert hours_from_api_query(timescale_db, "qx-ts-health", *window) == expected_hours(reports)
    assert latest == (reports[-1].sent_at,)


def test_timescale_retention_and_compression_jobs(timescale_db: str, tmp_path: Path) -> None:
    old = make_detection_event(node_id="qx-ts-old", seq=0, observed_at=NOW - timedelta(days=200))
    week = make_detection_event(node_id="qx-ts-old", seq=1, observed_at=NOW - timedelta(days=9))
    fresh = make_detection_event(node_id="qx-ts-old", seq=2, observed_at=NOW - timedelta(hours=1))
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        write(conn, writer_for(True, tmp_path), [old, week, fresh])
        for job_id, proc, table in policy_jobs(conn):
            if table == "events" and proc in ("policy_retention", "policy_compression"):
                conn.execute("CALL run_job(%s)", (job_id,))
        left = {
            r[0]
            for r in conn.execute("SELECT seq FROM events WHERE node_id = 'qx-ts-old'").fetchall()
        }
        compressed = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = "
            "'events' AND is_compressed"
        ).fetchone()
        # A late duplicate of a compressed event is still stored once.
        assert write(conn, writer_for(True, tmp_path), [week]) == 0
        assert conn.execute(
            "SELECT count(*) FROM events WHERE event_id = %s", (week.event_id,)
        ).fetchone() == (1,)
    assert left == {1, 2}  # 200 days is beyond the 180-day retention
    assert compressed is not None
    assert compressed[0] >= 1  # the 9-day-old chunk, past compress_after_days


def jobs_by_policy(conn: psycopg.Connection) -> dict[tuple[str, str], int]:
    return {(proc, table): job_id for job_id, proc, table in policy_jobs(conn)}


def test_timescale_policies_stay_across_starts_and_change_in_place(timescale_db: str) -> None:
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        before = jobs_by_policy(conn)
        assert apply_timescale_policies(conn, RetentionSettings()) == []  # a restart
        assert jobs_by_policy(conn) == before
        changed = apply_timescale_policies(conn, RetentionSettings(events_days=90))
        assert jobs_by_policy(conn) == before  # the same jobs, with their history
        config = conn.execute(
            "SELECT (config->>'drop_after')::interval FROM timescaledb_information.jobs "
            "WHERE job_id = %s",
            (before[("policy_retention", "events")],),
        ).fetchone()
        apply_timescale_policies(conn, RetentionSettings())
    assert changed == ["policy_retention events altered"]
    assert config == (timedelta(days=90),)


def upkeep_now(url: str) -> dict[str, JobStatus]:
    async def run() -> list[JobStatus]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await upkeep.statuses(conn)

    return {job.job: job for job in asyncio.run(run())}


def test_timescale_policies_its_scheduler_leaves_are_shown_and_run_once(
    timescale_db: str,
) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        # Seen a day ago, and the endpoint has no scheduler: none has run since.
        assert follow_policies(conn, now - timedelta(days=1)) == []
    stalled = upkeep_now(timescale_db)
    with psycopg.connect(timescale_db, autocommit=True) as conn:
        ran = follow_policies(conn, now)
        again = follow_policies(conn, now + timedelta(minutes=1))
    after = upkeep_now(timescale_db)
    refreshes = {"refresh events_hourly", "refresh events_daily", "refresh node_health_hourly"}
    assert {job for job, s in stalled.items() if s.failing} >= refreshes
    assert set(ran) >= refreshes
    assert again == []  # once an interval, whoever asks
    assert not any(after[job].failing for job in ran)
    assert all(after[job].fallback_runs == stalled[job].fallback_runs + 1 for job in ran)


# ---- plain PostgreSQL -------------------------------------------------------------------


def test_plain_rollups_equal_direct_counts_and_serve_the_api_query(
    cloud_db: str,
    tmp_path: Path,
) -> None:
    start = (NOW - timedelta(days=2)).replace(minute=0, second=0)
    events = situations("qx-plain-rollup", start, hours=30)
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        writer = writer_for(False, tmp_path)
        assert write(conn, writer, events[: len(events) // 2]) == len(events) // 2
        assert write(conn, writer, events) == len(events) - len(events) // 2  # overlap ignored
        direct = Counter(
            {
                (r[0], r[1]): r[2]
                for r in conn.execute(
                    "SELECT date_trunc('hour', observed_at), kind, count(*) FROM events "
                    "WHERE node_id = 'qx-plain-rollup' AND phase = 'start' GROUP BY 1, 2"
                ).fetchall()
            }
        )
    window = (start - timedelta(days=1), NOW + timedelta(days=1))
    hourly = counts_from_api_query(cloud_db, "hour", *window)
    assert hourly == expected_counts(events, "hour") == direct
    assert counts_from_api_query(cloud_db, "day", *window) == expected_counts(events, "day")


def test_plain_counts_late_events_of_any_age_and_the_current_hour(
    cloud_db: str, tmp_path: Path
) -> None:
    on_time, late = lateness_mix("plain", datetime.now(UTC))
    writer = writer_for(False, tmp_path)
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        assert write(conn, writer, on_time) == len(on_time)
        assert write(conn, writer, late) == len(late)
    assert_counts_include_late_events(cloud_db, on_time + late)


def test_plain_health_hours_equal_direct_aggregates_and_the_newest_report_wins(
    cloud_db: str, tmp_path: Path
) -> None:
    start = (NOW - timedelta(days=1)).replace(minute=0, second=0)
    reports = health_reports("qx-plain-health", start, hours=6)
    writer = writer_for(False, tmp_path)
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        # Out of order and in pieces, with redeliveries: hours add up all the same.
        write_health(conn, writer, reports[10:])
        write_health(conn, writer, reports[:12])
        write_health(conn, writer, reports[3:6])
        latest = conn.execute(
            "SELECT sent_at, cameras_total FROM node_last_health WHERE node_id = %s",
            ("qx-plain-health",),
        ).fetchone()
    window = (start - timedelta(hours=1), NOW)
    assert hours_from_api_query(cloud_db, "qx-plain-health", *window) == expected_hours(reports)
    assert latest == (reports[-1].sent_at, 3)  # an older report arriving later changes nothing


def test_plain_retention_drops_old_partitions_and_trims_the_rest(
    postgres_admin_url: str,
    tmp_path: Path,
) -> None:
    from tests.support.postgres import fresh_database

    with (
        fresh_database(postgres_admin_url, prefix="gridwatch_test_retention") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        old = make_detection_event(node_id="qx-ret", seq=0, observed_at=NOW - timedelta(days=200))
        fresh = make_detection_event(node_id="qx-ret", seq=1, observed_at=NOW)
        write(conn, writer_for(False, tmp_path), [old, fresh])
        retention = RetentionSettings(events_days=180)
        drop_expired(conn, NOW, retention)
        assert [r[0] for r in conn.execute("SELECT seq FROM events").fetchall()] == [1]
        today = f"events_p{NOW:%Y%m%d}"
        dropped = drop_expired(conn, NOW + timedelta(days=182), retention)
        assert today in dropped  # whole partitions go: no row-by-row delete, no vacuum
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM events_hourly WHERE bucket < %s",
            (NOW + timedelta(days=182) - timedelta(days=1095),),
        ).fetchone() == (0,)


def test_plain_partition_made_late_takes_its_rows_from_the_default(
    postgres_admin_url: str,
    tmp_path: Path,
) -> None:
    from tests.support.postgres import fresh_database

    with (
        fresh_database(postgres_admin_url, prefix="gridwatch_test_late") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        ahead = NOW + timedelta(days=10)  # beyond the partitions made ahead: in the default
        event = make_detection_event(node_id="qx-late", seq=0, observed_at=NOW)
        event = event.model_copy(update={"observed_at": ahead})
        write(conn, writer_for(False, tmp_path), [event])
        assert conn.execute("SELECT count(*) FROM events_default").fetchone() == (1,)
        made = ensure_partitions(conn, ahead.date(), days_ahead=0)
        assert made == [
            f"events_p{ahead:%Y%m%d}",
            f"node_health_p{ahead:%Y%m%d}",
            f"telemetry_p{ahead:%Y%m%d}",
        ]
        assert conn.execute("SELECT count(*) FROM events_default").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
        assert f"events_p{ahead:%Y%m%d}" in {p.name for p in list_partitions(conn)}


def test_free_text_with_tabs_newlines_and_backslashes_survives_copy(
    cloud_db: str,
    tmp_path: Path,
) -> None:
    label = "人\tperson\\n\nline"
    event = make_detection_event(node_id="qx-escape", seq=0, label=label, zone="zone\\A\r")
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        write(conn, writer_for(False, tmp_path), [event])
        row = conn.execute(
            "SELECT label, zone, snapshots, model_profile, model_sha256 FROM events "
            "WHERE event_id = %s",
            (event.event_id,),
        ).fetchone()
    assert row is not None
    assert row[0] == label
    assert row[1] == "zone\\A\r"
    assert row[2] == [s.model_dump(mode="json") for s in event.snapshots]
    assert event.model is not None
    assert row[3:] == (event.model.profile, event.model.sha256)
