"""SQL for alerts: scoped reads in `seq` order (the order a stream resumes in)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from cloud.access import Principal
from cloud.database import like_prefix
from cloud.tiers import Level

# Held from before a transaction touches cases until it commits (see 0008_alerts.sql):
# always before case rows, so it never closes a cycle with them.
ALERTS_LOCK = 1735876978
LOCK_SQL = f"SELECT pg_advisory_xact_lock({ALERTS_LOCK})"

ALERT_COLUMNS = (
    "seq, alert_id, sent_at, msg_type, refs, kind, reason, unit_code, responsible_unit_code, "
    "severity, source, case_id, case_state, event_id, node_id, camera_id, departments, title"
)


def scope(principal: Principal) -> tuple[sql.Composable, dict[str, Any]]:
    """The alerts a caller hears: of their unit; a department's, of the cases dispatched to
    it; a technician's, of the fleet's work orders."""
    if principal.sees_only_dispatched:
        return sql.SQL("%(scope_department)s = ANY(departments)"), {
            "scope_department": principal.department_code
        }
    params: dict[str, Any] = {"scope_unit": like_prefix(principal.unit_code)}
    where: sql.Composable = (
        sql.SQL("true")
        if principal.level is Level.COUNTY
        else sql.SQL("unit_code LIKE %(scope_unit)s")
    )
    if principal.sees_only_work_orders:
        where = sql.SQL("{} AND source = 'fleet'").format(where)
    return where, params


async def alerts_after(
    conn: AsyncConnection,
    principal: Principal,
    *,
    after_seq: int,
    limit: int,
    unit: str | None = None,
) -> list[dict[str, Any]]:
    """In `seq` order after `after_seq`; `unit` narrows to a unit inside the caller's."""
    where, params = scope(principal)
    if unit is not None:
        where = sql.SQL("{} AND unit_code LIKE %(unit)s").format(where)
        params["unit"] = like_prefix(unit)
    query = sql.SQL(
        "SELECT {} FROM alerts WHERE seq > %(after)s AND {} ORDER BY seq LIMIT %(limit)s"
    ).format(sql.SQL(ALERT_COLUMNS), where)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**params, "after": after_seq, "limit": limit})
        return await cur.fetchall()


async def all_after(conn: AsyncConnection, *, after_seq: int, limit: int) -> list[dict[str, Any]]:
    """Every unit's alerts: the hub reads these once and hands each to whoever may hear it."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE seq > %s ORDER BY seq LIMIT %s",  # noqa: S608
            (after_seq, limit),
        )
        return await cur.fetchall()


async def last_seq(conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT coalesce(max(seq), 0) FROM alerts")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def alert_by_id(
    conn: AsyncConnection, principal: Principal, alert_id: UUID
) -> dict[str, Any] | None:
    where, params = scope(principal)
    query = sql.SQL("SELECT {} FROM alerts WHERE alert_id = %(alert_id)s AND {}").format(
        sql.SQL(ALERT_COLUMNS), where
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**params, "alert_id": alert_id})
        return await cur.fetchone()


async def units(conn: AsyncConnection) -> dict[str, tuple[str, str, str | None]]:
    """code → (level, name, parent_code): the org tree, small enough to hold (1,054 units)."""
    cur = await conn.execute("SELECT code, level, name, parent_code FROM org_units")
    return {code: (level, name, parent) for code, level, name, parent in await cur.fetchall()}


async def sent_times(conn: AsyncConnection, alert_ids: list[UUID]) -> dict[UUID, Any]:
    cur = await conn.execute(
        "SELECT alert_id, sent_at FROM alerts WHERE alert_id = ANY(%s)", (alert_ids,)
    )
    return {alert_id: sent_at for alert_id, sent_at in await cur.fetchall()}


async def area(conn: AsyncConnection, unit_code: str) -> tuple[str, dict[str, Any] | None]:
    """The unit's name and geometry: a CAP `area`."""
    cur = await conn.execute("SELECT name, geometry FROM org_units WHERE code = %s", (unit_code,))
    row = await cur.fetchone()
    return (unit_code, None) if row is None else (row[0], row[1])


async def newest(
    conn: AsyncConnection, principal: Principal, *, limit: int
) -> list[dict[str, Any]]:
    where, params = scope(principal)
    query = sql.SQL("SELECT {} FROM alerts WHERE {} ORDER BY seq DESC LIMIT %(limit)s").format(
        sql.SQL(ALERT_COLUMNS), where
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, {**params, "limit": limit})
        return await cur.fetchall()
