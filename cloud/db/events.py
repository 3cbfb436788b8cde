"""Event queries (async, psycopg 3): the same SQL on TimescaleDB and plain PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from cloud.database import like_prefix
from cloud.errors import BadRequest, NotFound
from protocols.identifiers import uuid7_time

COLUMNS = (
    "event_id, thread_id, observed_at, received_at, node_id, seq, camera_id, unit_code, "
    "kind, phase, severity, rule_id, label, score, bbox, track_id, zone, direction, "
    "dwell_s, count, tamper, snapshots"
)


@dataclass(frozen=True)
class EventFilter:
    start: datetime
    end: datetime
    unit: str | None = None  # a unit code: the unit and everything below it (code prefix)
    node_id: str | None = None
    camera_id: str | None = None
    kind: str | None = None
    label: str | None = None
    phase: str | None = None
    min_score: float | None = None

    def where(self) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = [sql.SQL("observed_at >= %s AND observed_at < %s")]
        params: list[Any] = [self.start, self.end]
        if self.unit is not None:
            clauses.append(sql.SQL("unit_code LIKE %s"))
            params.append(like_prefix(self.unit))
        for column in ("node_id", "camera_id", "kind", "label", "phase"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if self.min_score is not None:
            clauses.append(sql.SQL("score >= %s"))
            params.append(self.min_score)
        return sql.SQL(" AND ").join(clauses), params


def encode_cursor(observed_at: datetime, event_id: UUID) -> str:
    raw = f"{observed_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, event_id = raw.split("|")
        return datetime.fromisoformat(moment), UUID(event_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("invalid cursor") from exc


async def list_events(
    conn: AsyncConnection, where: EventFilter, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, keyset-paginated on (observed_at, event_id)."""
    condition, params = where.where()
    if cursor is not None:
        moment, event_id = decode_cursor(cursor)
        condition = sql.SQL("{} AND (observed_at, event_id) < (%s, %s)").format(condition)
        params += [moment, event_id]
    query = sql.SQL(
        "SELECT {} FROM events WHERE {} ORDER BY observed_at DESC, event_id DESC LIMIT %s"
    ).format(sql.SQL(COLUMNS), condition)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, [*params, limit + 1])
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["observed_at"], rows[-1]["event_id"]) if more else None
    return rows, next_cursor


async def stream_events(conn: AsyncConnection, where: EventFilter) -> AsyncIterator[dict[str, Any]]:
    """Every matching event, oldest first, read in pages of 2,000 (no server-side cursor,
    so it works through any pooler)."""
    condition, params = where.where()
    after: tuple[datetime, UUID] | None = None
    while True:
        extra = sql.SQL("")
        extra_params: list[Any] = []
        if after is not None:
            extra = sql.SQL(" AND (observed_at, event_id) > (%s, %s)")
            extra_params = list(after)
        query = sql.SQL(
            "SELECT {} FROM events WHERE {}{} ORDER BY observed_at, event_id LIMIT 2000"
        ).format(sql.SQL(COLUMNS), condition, extra)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, [*params, *extra_params])
            rows = await cur.fetchall()
        for row in rows:
            yield row
        if len(rows) < 2000:
            return
        after = (rows[-1]["observed_at"], rows[-1]["event_id"])


async def get_event(conn: AsyncConnection, event_id: UUID) -> dict[str, Any]:
    """By id; the UUIDv7's own time bounds the search to the right partitions/chunks."""
    try:
        made = uuid7_time(event_id)
        window = (made - timedelta(days=1), made + timedelta(days=1))
    except (ValueError, OverflowError):  # no datetime holds its time: no event has that id
        raise NotFound(f"event {event_id} not found") from None
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT {} FROM events WHERE event_id = %s AND observed_at "
                ">= %s AND observed_at < %s"
            ).format(sql.SQL(COLUMNS)),
            (event_id, *window),
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"event {event_id} not found")
    return row


async def snapshot_record(
    conn: AsyncConnection, event_id: UUID, variant: str, node_id: str
) -> tuple[str, str]:
    """(storage key, sha256) of the event's snapshot: the one its own node sent."""
    cur = await conn.execute(
        "SELECT storage_key, sha256 FROM snapshots "
        "WHERE event_id = %s AND variant = %s AND node_id = %s",
        (event_id, variant, node_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no {variant} snapshot for event {event_id}")
    return str(row[0]), str(row[1])


async def has_snapshot(conn: AsyncConnection, event_id: UUID, variant: str, node_id: str) -> bool:
    try:
        await snapshot_record(conn, event_id, variant, node_id)
    except NotFound:
        return False
    return True


async def count_events(
    conn: AsyncConnection,
    *,
    bucket: str,
    start: datetime,
    end: datetime,
    unit: str | None,
    kind: str | None,
    camera_id: str | None,
) -> list[dict[str, Any]]:
    """Situations (start messages) per hour or day, from the rollups / continuous aggregates."""
    table = {"hour": "events_hourly", "day": "events_daily"}[bucket]
    clauses = [sql.SQL("bucket >= %s AND bucket < %s")]
    params: list[Any] = [start, end]
    if unit is not None:
        clauses.append(sql.SQL("unit_code LIKE %s"))
        params.append(like_prefix(unit))
    if kind is not None:
        clauses.append(sql.SQL("kind = %s"))
        params.append(kind)
    if camera_id is not None:
        clauses.append(sql.SQL("camera_id = %s"))
        params.append(camera_id)
    query = sql.SQL(
        "SELECT bucket, kind, sum(events)::bigint AS events FROM {} WHERE {} "
        "GROUP BY bucket, kind ORDER BY bucket, kind"
    ).format(sql.Identifier(table), sql.SQL(" AND ").join(clauses))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()
