"""Write one batch of decoded messages in one transaction: events through COPY into a
staging table and an INSERT into `events` (tried as all new, then with ON CONFLICT DO
NOTHING when a copy was stored before: each event is stored once however often delivered),
then rollups (plain PostgreSQL), sequence holes and gaps, health, state, telemetry, config
reports, command responses, snapshots and dead letters."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgspec
import orjson
import psycopg
from psycopg.types.json import Jsonb

from cloud.db.routing import NEW_EVENT_TABLES, route_events
from cloud.db.timeseries import mark_late
from cloud.ingest.dead_letters import (
    CONFLICT_REASON,
    Cause,
    DeadLetter,
    write_dead_letters,
)
from cloud.ingest.deferred import county_day, park, record_day
from cloud.ingest.gaps import (
    MAX_OPEN_GAPS,
    Gap,
    NodeSequence,
    advance,
    announce,
    oldest_beyond,
)
from cloud.ingest.snapshot_uploads import (
    DEFAULT_QUOTA,
    Dropped,
    Quota,
    attach_for_answers,
    attach_for_events,
    journal,
    store_uploads,
    sweep,
    uploads_of,
    within_quota,
)
from cloud.snapshots import SnapshotStore
from protocols import (
    CommandResponse,
    ConfigReport,
    NodeHealth,
    NodeState,
    Telemetry,
)
from protocols.fast_events import FastDetectionEvent
from protocols.identifiers import EVENT_ID_TIME_TOLERANCE
from protocols.topics import NodeTopic, response_topic

if TYPE_CHECKING:
    from cloud.ingest.subscriber import Received

logger = logging.getLogger(__name__)


def _json(value: Any) -> Jsonb:
    """A jsonb parameter dumped with orjson (psycopg's default json.dumps is much slower)."""
    return Jsonb(value, dumps=orjson.dumps)


EVENT_COLUMNS = (
    "observed_at",
    "event_id",
    "thread_id",
    "node_id",
    "seq",
    "camera_id",
    "unit_code",
    "kind",
    "phase",
    "severity",
    "rule_id",
    "label",
    "score",
    "bbox",
    "track_id",
    "zone",
    "direction",
    "dwell_s",
    "count",
    "tamper",
    "snapshots",
    "model_profile",
    "model_sha256",
    "received_at",
)
UNIT_CACHE_S = 30.0
HEALTH_COLUMNS = (
    "sent_at, node_id, cpu_percent, memory_used_bytes, disk_used_bytes, disk_total_bytes, "
    "temperature_c, outbox_depth, outbox_oldest_age_s, dropped_events, dropped_snapshots, "
    "cameras_connected, cameras_total, config_version, agent_version, payload, received_at"
)
# Plain PostgreSQL: what was new adds to its hour (TimescaleDB: a continuous aggregate).
HEALTH_ROLLUP_SQL = """, hourly AS (
    INSERT INTO node_health_hourly (bucket, node_id, samples, cpu_sum, cpu_max, memory_used_max,
        disk_used_max, disk_total_max, temperature_max, outbox_depth_max, outbox_age_max,
        cameras_connected_min, cameras_total_max)
    SELECT date_trunc('hour', sent_at), node_id, count(*), sum(cpu_percent), max(cpu_percent),
           max(memory_used_bytes), max(disk_used_bytes), max(disk_total_bytes),
           max(temperature_c), max(outbox_depth), max(outbox_oldest_age_s),
           min(cameras_connected), max(cameras_total)
    FROM new GROUP BY 1, 2 ORDER BY 2, 1
    ON CONFLICT (node_id, bucket) DO UPDATE SET
        samples = node_health_hourly.samples + excluded.samples,
        cpu_sum = node_health_hourly.cpu_sum + excluded.cpu_sum,
        cpu_max = greatest(node_health_hourly.cpu_max, excluded.cpu_max),
        memory_used_max = greatest(node_health_hourly.memory_used_max, excluded.memory_used_max),
        disk_used_max = greatest(node_health_hourly.disk_used_max, excluded.disk_used_max),
        disk_total_max = greatest(node_health_hourly.disk_total_max, excluded.disk_total_max),
        temperature_max = greatest(node_health_hourly.temperature_max, excluded.temperature_max),
        outbox_depth_max = greatest(node_health_hourly.outbox_depth_max,
                                    excluded.outbox_depth_max),
        outbox_age_max = greatest(node_health_hourly.outbox_age_max, excluded.outbox_age_max),
        cameras_connected_min = least(node_health_hourly.cameras_connected_min,
                                      excluded.cameras_connected_min),
        cameras_total_max = greatest(node_health_hourly.cameras_total_max,
                                     excluded.cameras_total_max)
)"""
# The newest report per node replaces the older one (a late redelivery never goes back).
LAST_HEALTH_SQL = """
INSERT INTO node_last_health (node_id, sent_at, received_at, uptime_s, cpu_percent,
    memory_used_bytes, memory_total_bytes, disk_used_bytes, disk_total_bytes, temperature_c,
    outbox_depth, outbox_oldest_age_s, dropped_events, dropped_snapshots, cameras_connected,
    cameras_total, cameras, model_profile, inference_p95_ms, agent_version, config_version)
SELECT DISTINCT ON (node_id) node_id, sent_at, received_at, (payload->>'uptime_s')::real,
       cpu_percent, memory_used_bytes, (payload->>'memory_total_bytes')::bigint,
       disk_used_bytes, disk_total_bytes, temperature_c, outbox_depth, outbox_oldest_age_s,
       dropped_events, dropped_snapshots, cameras_connected, cameras_total,
       coalesce(payload->'cameras', '[]'), payload->'inference'->>'model_profile',
       (payload->'inference'->>'latency_p95_ms')::real, agent_version, config_version
FROM health_staging
ORDER BY node_id, sent_at DESC
ON CONFLICT (node_id) DO UPDATE SET
    sent_at = excluded.sent_at, received_at = excluded.received_at,
    uptime_s = excluded.uptime_s, cpu_percent = excluded.cpu_percent,
    memory_used_bytes = excluded.memory_used_bytes,
    memory_total_bytes = excluded.memory_total_bytes,
    disk_used_bytes = excluded.disk_used_bytes, disk_total_bytes = excluded.disk_total_bytes,
    temperature_c = excluded.temperature_c, outbox_depth = excluded.outbox_depth,
    outbox_oldest_age_s = excluded.outbox_oldest_age_s,
    dropped_events = excluded.dropped_events, dropped_snapshots = excluded.dropped_snapshots,
    cameras_connected = excluded.cameras_connected, cameras_total = excluded.cameras_total,
    cameras = excluded.cameras, model_profile = excluded.model_profile,
    inference_p95_ms = excluded.inference_p95_ms, agent_version = excluded.agent_version,
    config_version = excluded.config_version
WHERE node_last_health.sent_at <= excluded.sent_at"""


@dataclass
class Batch:
    """Decoded messages of one batch, by kind, with when each arrived."""

    events: list[tuple[FastDetectionEvent, datetime]] = field(default_factory=list)
    # Each event's message, by event id (a conflicting copy becomes a dead letter naming it).
    sources: dict[UUID, Received] = field(default_factory=dict)
    duplicates: int = 0  # events the batch held twice, the same both times
    states: list[tuple[NodeState, datetime]] = field(default_factory=list)
    health: list[tuple[NodeHealth, bytes, datetime]] = field(default_factory=list)
    telemetry: list[tuple[Telemetry, datetime]] = field(default_factory=list)
    reports: list[tuple[ConfigReport, datetime]] = field(default_factory=list)
    responses: list[tuple[CommandResponse, bytes, datetime]] = field(default_factory=list)
    snapshots: list[tuple[NodeTopic, bytes, datetime]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    # Messages beyond their box's share, parked undecoded (cloud.ingest.deferred).
    deferred: list[Received] = field(default_factory=list)
    # The units of each box's day the batch's other messages use (counted when it commits).
    day_units: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        """Messages the batch decoded or parked, a copy of one of its events included."""
        return self.duplicates + sum(
            len(v)
            for v in (
                self.events,
                self.states,
                self.health,
                self.telemetry,
                self.reports,
                self.responses,
                self.snapshots,
                self.dead,
                self.deferred,
            )
        )


@dataclass
class WriteResult:
    events_stored: int = 0
    events_duplicate: int = 0
    gaps_opened: int = 0
    gaps_closed: int = 0
    cases_opened: int = 0
    cases_merged: int = 0
    cases_closed: int = 0
    dead: list[DeadLetter] = field(default_factory=list)  # the batch's, and conflicts found
    snapshots_dropped: list[Dropped] = field(default_factory=list)
    day_units: dict[str, int] = field(default_factory=dict)  # boxes' totals for the day


# The staging table's columns and types. COPY in PostgreSQL's binary format needs no text
# parsing of times, ids and numbers on either side (measured: 12 µs an event less than the
# text format, 4 of them in ingest, 8 in PostgreSQL). Only types psycopg dumps in C are
# staged: the box as four numbers and the snapshot list as text (a float4[] and jsonb went
# through Python dumpers, 3.7 µs an event of ingest's time); the move into `events` puts
# them back together.
STAGED = (
    ("observed_at", "timestamptz"),
    ("event_id", "uuid"),
    ("thread_id", "uuid"),
    ("node_id", "text"),
    ("seq", "int8"),
    ("camera_id", "text"),
    ("unit_code", "text"),
    ("kind", "text"),
    ("phase", "text"),
    ("severity", "text"),
    ("rule_id", "text"),
    ("label", "text"),
    ("score", "float4"),
    ("bbox_x", "float4"),
    ("bbox_y", "float4"),
    ("bbox_w", "float4"),
    ("bbox_h", "float4"),
    ("track_id", "int8"),
    ("zone", "text"),
    ("direction", "text"),
    ("dwell_s", "float4"),
    ("count", "int4"),
    ("tamper", "text"),
    ("snapshots", "text"),
    ("model_profile", "text"),
    ("model_sha256", "text"),
    ("received_at", "timestamptz"),
)
# What each of EVENT_COLUMNS is made of, from the staged columns.
_FROM_STAGED = {
    "bbox": "CASE WHEN bbox_x IS NULL THEN NULL ELSE ARRAY[bbox_x, bbox_y, bbox_w, bbox_h] END",
    "snapshots": "snapshots::json",
}


def event_row(event: FastDetectionEvent, unit_code: str, received_at: datetime) -> tuple[Any, ...]:
    """One row for `events_staging` (STAGED order and types)."""
    bbox = event.bbox
    model = event.model
    return (
        event.observed_at,
        event.event_id,
        event.thread_id,
        event.node_id,
        event.seq,
        event.camera_id,
        unit_code,
        event.kind.value,
        event.phase.value,
        event.severity.value,
        event.rule_id,
        event.label,
        event.score,
        *((None, None, None, None) if bbox is None else (bbox.x, bbox.y, bbox.w, bbox.h)),
        event.track_id,
        event.zone,
        None if event.direction is None else event.direction.value,
        event.dwell_s,
        event.count,
        None if event.tamper is None else event.tamper.value,
        msgspec.json.encode(event.snapshots).decode() if event.snapshots else None,
        None if model is None else model.profile,
        None if model is None else model.sha256,
        received_at,
    )


# Session-private tables a batch is staged in; emptied at every commit.
STAGING_TABLES = (
    "CREATE TEMP TABLE IF NOT EXISTS events_staging "
    f"({', '.join(f'{name} {kind}' for name, kind in STAGED)}) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS events_copies (LIKE events_staging) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS events_inserted (observed_at timestamptz, "
    "node_id text, camera_id text, unit_code text, kind text, phase text, seq bigint, "
    "event_id uuid, thread_id uuid, severity text) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS health_staging "
    "(LIKE node_health INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
)


# What an event is, as stored: a copy with the same id and these values is the same event
# delivered again; any other is a conflicting duplicate. (Its unit is the registry's word,
# which may change between deliveries; received_at and stored_at are ingest's.)
_CONTENT = [c for c in EVENT_COLUMNS if c not in ("event_id", "unit_code", "received_at")]
_STAGED_CONTENT = ", ".join(
    "CASE WHEN s.bbox_x IS NULL THEN NULL ELSE ARRAY[s.bbox_x, s.bbox_y, s.bbox_w, s.bbox_h] END"
    if c == "bbox"
    else f"s.{c}"
    for c in _CONTENT
)
_STORED_CONTENT = ", ".join("e.snapshots::text" if c == "snapshots" else f"e.{c}" for c in _CONTENT)
# Each staged event claims its id (in id order, the order every process locks them in; a
# claim another process holds uncommitted waits for it). A batch claims as all new first:
# a plain INSERT costs PostgreSQL 2.8 µs an event, ON CONFLICT's check 6.8 (measured here).
CLAIM_NEW_IDS_SQL = (
    "INSERT INTO event_ids (event_id, observed_at) "
    "SELECT event_id, observed_at FROM events_staging ORDER BY event_id"
)
# When that fails, a copy of an event stored before is in the batch: those whose claim
# conflicts leave the staging table for `events_copies`, and the statement says how many
# (each then compared, once the process that stored it is done).
CLAIM_IDS_SQL = """
WITH claimed AS (
    INSERT INTO event_ids (event_id, observed_at)
    SELECT event_id, observed_at FROM events_staging ORDER BY event_id
    ON CONFLICT DO NOTHING RETURNING event_id
), copies AS (
    DELETE FROM events_staging s
    WHERE NOT EXISTS (SELECT 1 FROM claimed c WHERE c.event_id = s.event_id)
    RETURNING s.*
), kept AS (
    INSERT INTO events_copies SELECT * FROM copies RETURNING 1
)
SELECT count(*) FROM kept
"""
# Each copy, with whether it is the stored event again (a stored event gone before its
# claim, by a shorter retention, counts as the same).
COMPARE_COPIES_SQL = f"""
SELECT s.event_id,
       e.event_id IS NULL OR ({_STAGED_CONTENT}) IS NOT DISTINCT FROM ({_STORED_CONTENT})
FROM events_copies s
JOIN event_ids i ON i.event_id = s.event_id
LEFT JOIN events e ON e.observed_at = i.observed_at AND e.event_id = i.event_id
"""  # noqa: S608

# Staged events into `events`. Once claimed, a batch is all new: a plain INSERT costs
# PostgreSQL less than ON CONFLICT's check before each row (measured: 3 µs an event), and
# the rollups, cases and sequences then read the new events from `events_staging`. After a
# failed claim the batch moves skipping what is stored, the new events landing in
# `events_inserted`.
MOVE_NEW_EVENTS_SQL = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "  # noqa: S608
    f"SELECT {', '.join(_FROM_STAGED.get(c, c) for c in EVENT_COLUMNS)} FROM events_staging"
)
CLAIM_AND_MOVE_NEW_SQL = f"WITH claims AS ({CLAIM_NEW_IDS_SQL}) {MOVE_NEW_EVENTS_SQL}"
MOVE_EVENTS_SQL = (
    f"WITH new AS ({MOVE_NEW_EVENTS_SQL} ON CONFLICT DO NOTHING "  # noqa: S608
    "RETURNING observed_at, node_id, camera_id, unit_code, kind, phase, seq, event_id, "
    "thread_id, severity) INSERT INTO events_inserted SELECT * FROM new"
)


# The new events grouped once by hour and by day (days start at the county's midnight, as
# time_bucket with a time zone does), then added to both tables: grouping the batch once
# instead of twice halved the rollups' cost (2.4 against 1.2 µs an event). Rows are locked
# in key order, the hours first (the daily insert reads `hourly`, so it runs after):
# the order every process shares.
_ROLLUPS = """
WITH grouped AS MATERIALIZED (
    SELECT date_trunc('hour', observed_at) AS hour,
           date_trunc('day', observed_at, %(timezone)s) AS day,
           unit_code, node_id, camera_id, kind, count(*) AS n
    FROM {new_events} WHERE phase = 'start' GROUP BY 1, 2, 3, 4, 5, 6
), hourly AS (
    INSERT INTO events_hourly (bucket, unit_code, node_id, camera_id, kind, events)
    SELECT hour, unit_code, node_id, camera_id, kind, sum(n) FROM grouped
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (bucket, unit_code, node_id, camera_id, kind)
    DO UPDATE SET events = events_hourly.events + excluded.events
    RETURNING 1
)
INSERT INTO events_daily (bucket, unit_code, node_id, camera_id, kind, events)
SELECT day, unit_code, node_id, camera_id, kind, sum(n)
FROM grouped, (SELECT count(*) FROM hourly) AS hours_first
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (bucket, unit_code, node_id, camera_id, kind)
DO UPDATE SET events = events_daily.events + excluded.events
"""
ROLLUPS_SQL = {table: _ROLLUPS.replace("{new_events}", table) for table in NEW_EVENT_TABLES}


@dataclass
class Moving:
    """A batch's events on their way into `events`: the statement is sent, its result not
    yet read."""

    pipeline: AbstractContextManager[Any]  # conn.pipeline(), entered
    cursor: psycopg.Cursor[Any]  # the move
    events: int

    def wait(self) -> None:
        """The move's result (its error, if it failed), and the connection back to normal."""
        self.pipeline.__exit__(None, None, None)

    def abandon(self, exc: BaseException) -> None:
        """Leave pipeline mode after `exc` (the transaction is rolled back after this)."""
        self.pipeline.__exit__(type(exc), exc, exc.__traceback__)


def _create_staging(conn: psycopg.Connection) -> None:
    for statement in STAGING_TABLES:
        conn.execute(statement)


def _holes(stored: list[list[Any]]) -> list[Gap]:
    """`node_sequences.holes` ([[first, last, first seen], ...]) as gaps without a row."""
    return [Gap(first, last, seen=seen) for first, last, seen in stored]


def _columns(rows: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Rows as one list per column: the array parameters of an `unnest(...)` statement."""
    return tuple(list(column) for column in zip(*rows, strict=True))


def prune_event_ids(conn: psycopg.Connection, *, max_age: timedelta, now: datetime) -> int:
    """Drop the claims no copy can need any more: a copy older than `max_age` is a dead
    letter, and its id (the claim's) lies within EVENT_ID_TIME_TOLERANCE of its time; a day
    more for clocks and backlogs. By id, whose first bits are its time: the key's own order."""
    floor = now - max_age - EVENT_ID_TIME_TOLERANCE - timedelta(days=1)
    cur = conn.execute(
        "DELETE FROM event_ids WHERE event_id < %s",
        (UUID(int=int(floor.timestamp() * 1000) << 80),),
    )
    return cur.rowcount


def _count(cursor: psycopg.Cursor[Any]) -> int:
    row = cursor.fetchone()
    return int(row[0]) if row else 0


def _conflicts(batch: Batch, stored: dict[UUID, bool]) -> list[DeadLetter]:
    """A dead letter for each event whose id was stored before with other content."""
    dead = []
    for event_id, same in stored.items():
        if not same:
            message = batch.sources[event_id]
            dead.append(
                DeadLetter(
                    message.topic,
                    message.payload,
                    "event_id",
                    CONFLICT_REASON,
                    Cause.CONFLICT,
                )
            )
    return dead


def _new_seqs(
    conn: psycopg.Connection, batch: Batch, new_events: str, stored: dict[UUID, bool]
) -> dict[str, list[int]]:
    """Each node's seqs among the batch's new events: the batch's own, but for copies stored
    before, when it moved as all new (no need to read them back), else those
    `events_inserted` holds."""
    pairs: Iterable[tuple[str, int]]
    if new_events == "events_staging":
        pairs = (
            ((event.node_id, event.seq) for event, _ in batch.events)
            if not stored
            else (
                (event.node_id, event.seq)
                for event, _ in batch.events
                if event.event_id not in stored
            )
        )
    else:
        pairs = conn.execute("SELECT node_id, seq FROM events_inserted")
    seqs: dict[str, list[int]] = {}
    for node_id, seq in pairs:
        seqs.setdefault(node_id, []).append(seq)
    return seqs


class BatchWriter:
    def __init__(
        self,
        *,
        timescale: bool,
        store: SnapshotStore,
        timezone: ZoneInfo,
        reorder_window_s: float = 60.0,
        snapshot_wait_s: float = 600.0,
        snapshot_quota: Quota = DEFAULT_QUOTA,
        deferred_max_bytes: int = 1024 * 1024 * 1024,
    ) -> None:
        self.timescale = timescale
        self.deferred_max_bytes = deferred_max_bytes
        self.store = store
        self.timezone = timezone
        self.reorder_window = timedelta(seconds=reorder_window_s)
        self.snapshot_wait = timedelta(seconds=snapshot_wait_s)
        self.snapshot_quota = snapshot_quota
        # Whether uploads may be waiting for events (not known: so at first). The event
        # path looks for them only then; the sweep, every few seconds, says again.
        self.snapshots_waiting = True
        self._units: dict[tuple[str, str], str] = {}
        self._node_units: dict[str, str] = {}
        self._units_at = 0.0
        self._prepared: psycopg.Connection | None = None

    def refresh_units(self, conn: psycopg.Connection) -> None:
        """The camera → org unit and node → org unit maps, re-read every UNIT_CACHE_S (never
        during a COPY: the connection is busy then)."""
        now = time.monotonic()
        if now - self._units_at > UNIT_CACHE_S:
            rows = conn.execute(
                "SELECT node_id, camera_id, coalesce(unit_code, '') FROM cameras"
            ).fetchall()
            self._units = {(r[0], r[1]): r[2] for r in rows}
            self._node_units = dict(conn.execute("SELECT node_id, unit_code FROM nodes").fetchall())
            self._units_at = now

    def prepare(self, conn: psycopg.Connection) -> None:
        """Create the session's staging tables on a connection that ingest keeps, in a
        transaction of their own: its batches then skip three CREATE .. IF NOT EXISTS,
        about a millisecond a batch (a tenth of a live batch's time)."""
        with conn.transaction():
            _create_staging(conn)
        self._prepared = conn

    def write(self, conn: psycopg.Connection, batch: Batch) -> WriteResult:
        """Write everything inside the caller's transaction (it acknowledges after commit)."""
        return self.finish(conn, batch, self.begin(conn, batch))

    def begin(self, conn: psycopg.Connection, batch: Batch) -> Moving | None:
        """The first part of `write`, inside the caller's transaction: the events are
        COPYed into staging and the statement moving them into `events` is sent and not
        waited for (pipeline mode), so the server does the costliest part of the batch
        while ingest decodes the next one. No row other processes update is locked here
        (only a copy of an event another process is storing waits for that process).
        `finish` waits for the move and writes the rest."""
        if conn is not self._prepared:
            _create_staging(conn)  # in the caller's transaction: gone again if it rolls back
        if not batch.events:
            return None
        self._copy_events(conn, batch.events)
        pipeline = conn.pipeline()
        pipeline.__enter__()
        try:
            conn.execute("SAVEPOINT events_move")
            # One statement: its failure (a copy) can only surface when `finish` waits,
            # never while this one is being sent.
            cursor = conn.cursor()
            cursor.execute(CLAIM_AND_MOVE_NEW_SQL)
        except BaseException as exc:
            pipeline.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return Moving(pipeline, cursor, len(batch.events))

    def finish(self, conn: psycopg.Connection, batch: Batch, moving: Moving | None) -> WriteResult:
        """The rest of `write`, after `begin` in the same transaction.

        Rows that other ingest processes update too (rollup counters, per-node sequences)
        come last and are locked in one order: processes then wait for each other only
        for the tail of a transaction, never for a whole batch, and never deadlock."""
        result = WriteResult(events_duplicate=batch.duplicates)
        new_events = "events_staging"  # the batch as it was staged, bar copies stored before
        stored: dict[UUID, bool] = {}
        if moving is not None:
            copies = 0
            try:
                moving.wait()
            except psycopg.errors.UniqueViolation:
                # A copy of an event stored before (a redelivery, a box's retry, an id sent
                # again): claim again setting copies aside, and move skipping anything
                # stored (an event stored before claims were kept has none).
                conn.execute("ROLLBACK TO SAVEPOINT events_move")
                copies = _count(conn.execute(CLAIM_IDS_SQL))
                moving.cursor = conn.execute(MOVE_EVENTS_SQL)
                new_events = "events_inserted"
            if copies:
                stored = dict(conn.execute(COMPARE_COPIES_SQL).fetchall())
            result.events_stored = moving.cursor.rowcount
            result.events_duplicate += moving.events - result.events_stored - len(stored)
            result.events_duplicate += sum(stored.values())
        result.dead = [*batch.dead, *_conflicts(batch, stored)]
        if batch.states:
            self._states(conn, batch.states)
        if batch.health:
            self._health(conn, batch.health)
        if batch.telemetry:
            self._telemetry(conn, batch.telemetry)
        if batch.reports:
            self._reports(conn, batch.reports)
        if batch.responses:
            refused = self._responses(conn, batch.responses)
            result.dead += refused
            attach_for_answers(conn, [r.request_id for r, _, _ in batch.responses])
        if batch.snapshots:
            result.snapshots_dropped = self._snapshots(conn, batch.snapshots)
        if batch.deferred:
            result.dead += park(conn, batch.deferred, max_bytes=self.deferred_max_bytes)
        if batch.day_units:
            result.day_units = record_day(conn, batch.day_units, county_day(self.timezone))
        if result.events_stored and self.snapshots_waiting:
            attach_for_events(conn, new_events)
        if result.dead:
            write_dead_letters(conn, result.dead)
        if result.events_stored:
            if not self.timescale:  # continuous aggregates keep the rollups there
                self._rollups(conn, new_events)
            result.cases_opened, result.cases_merged, result.cases_closed = route_events(
                conn, new_events
            )
        if self.timescale:  # hours the aggregates' refresh windows no longer cover
            now = datetime.now(UTC)
            if result.events_stored:
                mark_late(conn, "events_hourly", (e.observed_at for e, _ in batch.events), now)
            if batch.health:
                mark_late(conn, "node_health_hourly", (h.sent_at for h, _, _ in batch.health), now)
        seqs = _new_seqs(conn, batch, new_events, stored) if result.events_stored else {}
        # The last seq each box says it gave out: a box that lost events and then sent
        # nothing more shows its gap now, not at its next event.
        announced = {h.node_id: h.last_seq for h, _, _ in batch.health if h.last_seq is not None}
        if seqs or announced:
            self._sequences(conn, result, seqs, announced)
        return result

    # ---- events ---------------------------------------------------------------------

    def _copy_events(
        self, conn: psycopg.Connection, events: list[tuple[FastDetectionEvent, datetime]]
    ) -> None:
        self.refresh_units(conn)
        units, node_units = self._units, self._node_units
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY events_staging ({', '.join(name for name, _ in STAGED)}) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types([kind for _, kind in STAGED])
            for event, received_at in events:
                unit = units.get((event.node_id, event.camera_id))
                if unit is None:  # not this box's camera: the box's own unit is the limit
                    unit = node_units.get(event.node_id, "")
                copy.write_row(event_row(event, unit, received_at))

    def _rollups(self, conn: psycopg.Connection, new_events: str) -> None:
        """Add the new situations (start messages) to the hourly and daily counts."""
        conn.execute(ROLLUPS_SQL[new_events], {"timezone": self.timezone.key})

    def _sequences(
        self,
        conn: psycopg.Connection,
        result: WriteResult,
        seqs: dict[str, list[int]],
        announced: dict[str, int],
    ) -> None:
        nodes = sorted(seqs.keys() | announced.keys())
        # Lock the nodes' rows in one order, so concurrent ingest processes never deadlock.
        known = {
            node_id: (high, holes)
            for node_id, high, holes in conn.execute(
                "SELECT node_id, high_seq, holes FROM node_sequences WHERE node_id = ANY(%s) "
                "ORDER BY node_id FOR UPDATE",
                (nodes,),
            ).fetchall()
        }
        recorded: dict[str, list[Gap]] = {}
        for gap_id, node_id, first, last in conn.execute(
            "SELECT id, node_id, first_seq, last_seq FROM seq_gaps "
            "WHERE node_id = ANY(%s) AND closed_at IS NULL ORDER BY id FOR UPDATE",
            (nodes,),
        ).fetchall():
            recorded.setdefault(node_id, []).append(Gap(first, last, gap_id))
        now = time.time()
        node_rows: list[tuple[str, int | None, list[Gap]]] = []
        new_rows: list[tuple[str, int, int, float]] = []
        changed_rows: list[tuple[int, int, int]] = []
        written_off: list[tuple[str, list[Gap]]] = []
        for node_id in nodes:
            high, holes = known.get(node_id, (None, []))
            gaps = recorded.get(node_id, []) + _holes(holes)
            state = advance(NodeSequence(high, gaps), seqs.get(node_id, []))
            if node_id in announced:
                announce(state, announced[node_id])
            for before, after in state.jumps:
                logger.warning(
                    "box %s jumped its seq from %d to %d: more than any outbox holds, so not "
                    "counted as missing events (a reset numbering, or a forged seq)",
                    node_id,
                    before,
                    after,
                )
            if excess := oldest_beyond(state):
                written_off.append((node_id, excess))
            result.gaps_opened += self._age_holes(
                node_id, state.high, state.gaps, now, node_rows, new_rows
            )
            changed_rows += [(g.id, g.first, g.last) for g in state.changed_gaps if g.id]
            result.gaps_closed += sum(1 for g in state.changed_gaps if g.closed)
        self._write_sequences(conn, node_rows, new_rows)
        closed = [gap_id for gap_id, first, last in changed_rows if first > last]
        shrunk = [row for row in changed_rows if row[1] <= row[2]]
        if closed:
            conn.execute("UPDATE seq_gaps SET closed_at = now() WHERE id = ANY(%s)", (closed,))
        if shrunk:
            conn.execute(
                "UPDATE seq_gaps g SET first_seq = v.first_seq, last_seq = v.last_seq "
                "FROM unnest(%s::int8[], %s::int8[], %s::int8[]) AS v(id, first_seq, last_seq) "
                "WHERE g.id = v.id",
                _columns(shrunk),
            )
        if written_off:
            self._write_off(conn, written_off)
        if result.gaps_opened:
            logger.warning(
                "sequence gaps missing for %gs: %d, nodes=%s",
                self.reorder_window.total_seconds(),
                result.gaps_opened,
                sorted({n for n, *_ in new_rows})[:10],
            )

    def _write_off(self, conn: psycopg.Connection, excess: list[tuple[str, list[Gap]]]) -> None:
        """Close a node's gaps beyond MAX_OPEN_GAPS, written off by ingest: recorded ones
        each, young holes as one row per node spanning them (a row each would be the
        growth the limit stops)."""
        reason = f"more than {MAX_OPEN_GAPS} gaps open for this box: the oldest written off"
        recorded = [g.id for _, gaps in excess for g in gaps if g.id is not None]
        if recorded:
            conn.execute(
                "UPDATE seq_gaps SET closed_at = now(), written_off_by = 'ingest', "
                "write_off_reason = %s WHERE id = ANY(%s) AND closed_at IS NULL",
                (reason, recorded),
            )
        spans = [
            (node_id, min(g.first for g in holes), max(g.last for g in holes), len(holes))
            for node_id, gaps in excess
            if (holes := [g for g in gaps if g.id is None])
        ]
        if spans:
            conn.execute(
                "INSERT INTO seq_gaps (node_id, first_seq, last_seq, detected_at, closed_at, "
                "written_off_by, write_off_reason) "
                "SELECT n, f, l, now(), now(), 'ingest', %s || ' (' || c || ' gaps here)' "
                "FROM unnest(%s::text[], %s::int8[], %s::int8[], %s::int4[]) AS v(n, f, l, c)",
                (reason, *_columns(spans)),
            )
        for node_id, gaps in excess:
            logger.warning(
                "node_id=%s has more than %d sequence gaps open: %d oldest written off",
                node_id,
                MAX_OPEN_GAPS,
                len(gaps),
            )

    def _age_holes(
        self,
        node_id: str,
        high: int | None,
        gaps: list[Gap],
        now: float,
        node_rows: list[tuple[str, int | None, list[Gap]]],
        new_rows: list[tuple[str, int, int, float]],
    ) -> int:
        """A node's holes without a seq_gaps row: those missing for the reorder window go to
        `new_rows` (to be recorded, detected when first seen), the rest stay with the node's
        row in `node_rows`. Returns how many are recorded."""
        window = self.reorder_window.total_seconds()
        kept: list[Gap] = []
        recorded = 0
        for gap in gaps:
            if gap.id is not None:
                continue
            seen = now if gap.seen is None else gap.seen
            gap.seen = seen
            if now - seen >= window:
                new_rows.append((node_id, gap.first, gap.last, seen))
                recorded += 1
            else:
                kept.append(gap)
        node_rows.append((node_id, high, kept))
        return recorded

    def _write_sequences(
        self,
        conn: psycopg.Connection,
        node_rows: list[tuple[str, int | None, list[Gap]]],
        new_rows: list[tuple[str, int, int, float]],
    ) -> None:
        """Each node's high mark and young holes (one statement for all nodes, in key order),
        and the seq_gaps rows of holes missing for the window."""
        conn.execute(
            "INSERT INTO node_sequences (node_id, high_seq, holes, oldest_hole) "
            "SELECT n, h, j::jsonb, to_timestamp(o) "
            "FROM unnest(%s::text[], %s::int8[], %s::text[], %s::float8[]) AS v(n, h, j, o) "
            "ORDER BY n "
            "ON CONFLICT (node_id) DO UPDATE SET high_seq = excluded.high_seq, "
            "holes = excluded.holes, oldest_hole = excluded.oldest_hole, updated_at = now()",
            (
                [n for n, _, _ in node_rows],
                [h for _, h, _ in node_rows],
                [
                    orjson.dumps([[g.first, g.last, g.seen] for g in k]).decode()
                    for *_, k in node_rows
                ],
                [min((g.seen or 0.0 for g in k), default=None) for *_, k in node_rows],
            ),
        )
        if new_rows:
            conn.execute(
                "INSERT INTO seq_gaps (node_id, first_seq, last_seq, detected_at) "
                "SELECT n, f, l, to_timestamp(s) "
                "FROM unnest(%s::text[], %s::int8[], %s::int8[], %s::float8[]) AS v(n, f, l, s)",
                _columns(new_rows),
            )

    def record_stale_holes(self, conn: psycopg.Connection) -> int:
        """Record the holes missing for the reorder window of nodes no batch has touched
        since (a node that went quiet after a loss); returns how many. In the caller's
        transaction; rows other processes hold are left for them."""
        now = time.time()
        node_rows: list[tuple[str, int | None, list[Gap]]] = []
        new_rows: list[tuple[str, int, int, float]] = []
        for node_id, high, holes in conn.execute(
            "SELECT node_id, high_seq, holes FROM node_sequences "
            "WHERE oldest_hole <= now() - %s ORDER BY node_id FOR UPDATE SKIP LOCKED",
            (self.reorder_window,),
        ).fetchall():
            self._age_holes(node_id, high, _holes(holes), now, node_rows, new_rows)
        if node_rows:
            self._write_sequences(conn, node_rows, new_rows)
        return len(new_rows)

    # ---- the rest ---------------------------------------------------------------------

    def _states(self, conn: psycopg.Connection, states: list[tuple[NodeState, datetime]]) -> None:
        # Arrival order decides: a last will carries the time its session began, so its
        # sent_at is older than the online state it ends.
        conn.cursor().executemany(
            "INSERT INTO node_state (node_id, status, reason, sent_at, received_at, "
            "agent_version, boot_id) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (node_id) DO UPDATE SET status = excluded.status, "
            "reason = excluded.reason, sent_at = excluded.sent_at, "
            "received_at = excluded.received_at, agent_version = excluded.agent_version, "
            "boot_id = excluded.boot_id WHERE node_state.received_at <= excluded.received_at",
            [
                (
                    s.node_id,
                    s.status.value,
                    s.reason.value,
                    s.sent_at,
                    received,
                    s.agent_version,
                    s.boot_id,
                )
                for s, received in states
            ],
        )

    def _health(
        self, conn: psycopg.Connection, health: list[tuple[NodeHealth, bytes, datetime]]
    ) -> None:
        """The history (stored once however often delivered), the newest report per node
        (one row per node per batch, whatever the batch holds) and, on plain PostgreSQL, the
        hourly rollup of what was new."""
        with conn.cursor() as cur:
            with cur.copy(f"COPY health_staging ({HEALTH_COLUMNS}) FROM STDIN") as copy:
                for h, raw, received in health:
                    connected = sum(1 for c in h.cameras if c.online)
                    copy.write_row(
                        (
                            h.sent_at,
                            h.node_id,
                            h.cpu_percent,
                            h.memory_used_bytes,
                            h.disk_used_bytes,
                            h.disk_total_bytes,
                            h.temperature_c,
                            h.outbox.depth,
                            h.outbox.oldest_age_s,
                            h.dropped.events,
                            h.dropped.snapshots,
                            connected,
                            len(h.cameras),
                            h.config_version,
                            h.agent_version,
                            raw.decode(),
                            received,
                        )
                    )
            rollup = "" if self.timescale else HEALTH_ROLLUP_SQL
            cur.execute(
                f"WITH new AS (INSERT INTO node_health ({HEALTH_COLUMNS}) "  # noqa: S608
                f"SELECT {HEALTH_COLUMNS} FROM health_staging ON CONFLICT DO NOTHING "
                f"RETURNING *){rollup} "
                f"{LAST_HEALTH_SQL}"
            )

    def _telemetry(
        self, conn: psycopg.Connection, telemetry: list[tuple[Telemetry, datetime]]
    ) -> None:
        conn.cursor().executemany(
            "INSERT INTO telemetry (observed_at, telemetry_id, node_id, sensor_id, quantity, "
            "value, unit, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [
                (
                    t.observed_at,
                    t.telemetry_id,
                    t.node_id,
                    t.sensor_id,
                    r.quantity,
                    r.value,
                    r.unit,
                    received,
                )
                for t, received in telemetry
                for r in t.readings
            ],
        )

    def _reports(
        self, conn: psycopg.Connection, reports: list[tuple[ConfigReport, datetime]]
    ) -> None:
        conn.cursor().executemany(
            "INSERT INTO config_reports (node_id, version, status, running_version, errors, "
            "reported_at, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (node_id) DO UPDATE SET version = excluded.version, "
            "status = excluded.status, running_version = excluded.running_version, "
            "errors = excluded.errors, reported_at = excluded.reported_at, "
            "received_at = excluded.received_at "
            "WHERE config_reports.reported_at <= excluded.reported_at",
            [
                (
                    r.node_id,
                    r.version,
                    r.status.value,
                    r.running_version,
                    _json([e.model_dump() for e in r.errors]),
                    r.reported_at,
                    received,
                )
                for r, received in reports
            ],
        )

    def _responses(
        self,
        conn: psycopg.Connection,
        responses: list[tuple[CommandResponse, bytes, datetime]],
    ) -> list[DeadLetter]:
        """Store the answers to requests sent to the node that answers (a command, or a
        case's recheck); any other is a dead letter: a box answering another's request
        would otherwise stand in for its answer. A repeated answer is kept once."""
        rows = conn.execute(
            "WITH v AS (SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::jsonb[], "
            "  %s::text[], %s::timestamptz[], %s::timestamptz[]) "
            "  AS v(request_id, node_id, status, data, error, responded_at, received_at)), "
            "ours AS (SELECT v.* FROM v WHERE EXISTS (SELECT 1 FROM commands c "
            "    WHERE c.request_id = v.request_id AND c.node_id = v.node_id) "
            "  OR EXISTS (SELECT 1 FROM case_checks k "
            "    WHERE k.request_id = v.request_id AND k.node_id = v.node_id)), "
            "stored AS (INSERT INTO command_responses (request_id, node_id, status, data, "
            "  error, responded_at, received_at) SELECT * FROM ours ORDER BY request_id "
            "  ON CONFLICT DO NOTHING) "
            "SELECT request_id, node_id FROM ours",
            _columns(
                [
                    (
                        r.request_id,
                        r.node_id,
                        r.status.value,
                        None if r.data is None else _json(r.data),
                        r.error,
                        r.responded_at,
                        received,
                    )
                    for r, _, received in responses
                ]
            ),
        ).fetchall()
        ours = {(row[0], row[1]) for row in rows}  # an answer and a forgery may share a batch
        return [
            DeadLetter(
                response_topic(r.node_id, r.request_id),
                payload,
                "request_id",
                "no request of this id was sent to this node",
            )
            for r, payload, _ in responses
            if (r.request_id, r.node_id) not in ours
        ]

    # ---- snapshots (cloud/ingest/snapshot_uploads.py) ----------------------------------

    def journal_snapshots(self, conn: psycopg.Connection, batch: Batch) -> None:
        """Record the batch's snapshots before its transaction, in a commit of their own
        (ingest calls this outside the transaction): a file whose batch never commits is
        then still known, and the sweep removes it."""
        uploads, _ = uploads_of(batch.snapshots)
        if uploads:
            journal(conn, [upload for upload, _ in uploads])

    def _snapshots(
        self, conn: psycopg.Connection, snapshots: list[tuple[NodeTopic, bytes, datetime]]
    ) -> list[Dropped]:
        """Each file written before any row points at it (a row never points at nothing),
        under its node's key; attached once an event of that node vouches for its bytes."""
        uploads, dropped = uploads_of(snapshots)
        if uploads:
            uploads, over = within_quota(conn, uploads, self.snapshot_quota)
            dropped += over
        if uploads:
            stored, waiting = store_uploads(conn, self.store, uploads)
            dropped += stored
            self.snapshots_waiting |= waiting
        return dropped

    def sweep_snapshots(self, conn: psycopg.Connection, now: datetime) -> list[Dropped]:
        """Attach what the snapshot's and the event's batches both missed (they ran at once
        in two processes), remove what was refused or waited longer than the wait; in the
        caller's transaction. Returns what was dropped."""
        dropped, self.snapshots_waiting = sweep(conn, self.store, now=now, wait=self.snapshot_wait)
        return dropped


def lag_ms(batch: Batch, now: datetime) -> float:
    """How far behind the newest event of the batch ingest is (publish → commit)."""
    if not batch.events:
        return 0.0
    newest = max(event.observed_at for event, _ in batch.events)
    return max(0.0, (now - newest) / timedelta(milliseconds=1))
