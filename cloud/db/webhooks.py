"""SQL for webhooks: subscriptions, queueing alerts for them, leasing due deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from cloud.database import like_prefix
from cloud.db.alerts import ALERT_COLUMNS

# Each active webhook (claimed, so instances share the work) gets a delivery for every new
# alert of its unit, kinds and severity; its `last_seq` moves to the newest alert seen.
QUEUE_SQL = """
WITH top AS (
    SELECT coalesce(max(seq), 0) AS seq FROM alerts
), hooks AS (
    SELECT webhook_id, unit_code, kinds, min_severity, last_seq FROM webhooks
    WHERE active AND last_seq < (SELECT seq FROM top)
    ORDER BY webhook_id FOR UPDATE SKIP LOCKED
), queued AS (
    INSERT INTO webhook_deliveries (webhook_id, alert_seq, alert_id, status)
    SELECT h.webhook_id, a.seq, a.alert_id, 'pending'
    FROM hooks h JOIN alerts a ON a.seq > h.last_seq AND a.seq <= (SELECT seq FROM top)
    WHERE starts_with(a.unit_code, h.unit_code)
      AND (cardinality(h.kinds) = 0 OR a.kind = ANY(h.kinds))
      AND array_position(ARRAY['low', 'medium', 'high', 'critical'], a.severity)
          >= array_position(ARRAY['low', 'medium', 'high', 'critical'], h.min_severity)
    ON CONFLICT DO NOTHING
    RETURNING 1
), moved AS (
    UPDATE webhooks w SET last_seq = (SELECT seq FROM top) FROM hooks h
    WHERE w.webhook_id = h.webhook_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued)
"""

# Due deliveries, leased for a while so that a crashed instance's work is picked up again;
# webhooks with enough in flight here are skipped, so one slow receiver takes few slots.
LEASE_SQL = """
WITH due AS (
    SELECT delivery_id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
      AND (leased_until IS NULL OR leased_until < now())
      AND webhook_id <> ALL(%(busy)s)
    ORDER BY next_attempt_at, delivery_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => %(lease_s)s),
                                attempts = d.attempts + 1
FROM due WHERE d.delivery_id = due.delivery_id
RETURNING d.delivery_id, d.webhook_id, d.alert_seq, d.alert_id, d.attempts
"""


async def queue_new_alerts(conn: AsyncConnection) -> int:
    async with conn.transaction():
        cur = await conn.execute(QUEUE_SQL)
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def lease_due(
    conn: AsyncConnection, *, limit: int, lease_s: float, busy: list[UUID]
) -> list[dict[str, Any]]:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            LEASE_SQL,
            {"limit": limit, "lease_s": lease_s, "busy": busy},
        )
        return await cur.fetchall()


async def webhook(conn: AsyncConnection, webhook_id: UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT webhook_id, name, url, secret, unit_code, kinds, min_severity, active, "
            "created_by, created_at FROM webhooks WHERE webhook_id = %s",
            (webhook_id,),
        )
        return await cur.fetchone()


async def alert_row(conn: AsyncConnection, seq: int) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE seq = %s", (seq,))  # noqa: S608
        return await cur.fetchone()


async def mark_delivered(conn: AsyncConnection, delivery_id: int, status_code: int) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), "
        "last_status = %s, last_error = NULL, leased_until = NULL WHERE delivery_id = %s",
        (status_code, delivery_id),
    )


async def mark_failed(
    conn: AsyncConnection,
    delivery_id: int,
    *,
    status_code: int | None,
    error: str,
    dead: bool,
    next_attempt_at: datetime,
) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET status = %s, last_status = %s, last_error = %s, "
        "next_attempt_at = %s, leased_until = NULL WHERE delivery_id = %s",
        ("dead" if dead else "pending", status_code, error[:500], next_attempt_at, delivery_id),
    )


async def list_webhooks(conn: AsyncConnection, unit_code: str) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT w.webhook_id, w.name, w.url, w.unit_code, w.kinds, w.min_severity, w.active, "
            "w.created_by, w.created_at, "
            "count(d.*) FILTER (WHERE d.status = 'pending') AS pending, "
            "count(d.*) FILTER (WHERE d.status = 'dead') AS dead "
            "FROM webhooks w LEFT JOIN webhook_deliveries d USING (webhook_id) "
            "WHERE w.unit_code LIKE %s GROUP BY w.webhook_id ORDER BY w.created_at",
            (like_prefix(unit_code),),
        )
        return await cur.fetchall()


async def deliveries(
    conn: AsyncConnection, webhook_id: UUID, *, status: str | None, limit: int
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT delivery_id, alert_id, status, attempts, next_attempt_at, last_status, "
            "last_error, created_at, delivered_at FROM webhook_deliveries "
            "WHERE webhook_id = %s AND (%s::text IS NULL OR status = %s) "
            "ORDER BY delivery_id DESC LIMIT %s",
            (webhook_id, status, status, limit),
        )
        return await cur.fetchall()
