"""SQL for cases: scoped queries, the actions of the closed loop, and the timers."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.access import Principal
from cloud.database import like_prefix
from cloud.errors import BadRequest

CASE_COLUMNS = (
    "case_id, source, category, severity, state, title, description, unit_code, "
    "responsible_unit_code, supervision_level, escalations, node_id, camera_id, "
    "first_event_id, event_count, first_event_at, last_event_at, location, reporter, assignee, "
    "opened_at, ack_due_at, resolve_due_at, acknowledged_at, dispatched_at, resolved_at, "
    "closed_at, close_reason, false_alarm, suppressed_events, satisfaction, updated_at, version"
)


# One meaning of overdue on every screen and metric, for an open case `c`: it missed a
# deadline, even one an escalation has since replaced with a new one, or its current
# acknowledge or resolve deadline has passed. {now} is the instant (SQL) to judge at.
OVERDUE = (
    "(c.deadlines_missed > 0 OR c.resolve_due_at < {now} "
    "OR (c.acknowledged_at IS NULL AND c.ack_due_at < {now}))"
)


def scope(principal: Principal) -> tuple[sql.Composable, dict[str, Any]]:
    """The cases a caller may see: those in their unit or dispatched to it; a department
    sees what was dispatched to it; a technician sees the fleet's work orders."""
    params: dict[str, Any] = {"scope_unit": like_prefix(principal.unit_code)}
    if principal.sees_only_dispatched:
        params["scope_department"] = principal.department_code
        return (
            sql.SQL(
                "c.case_id IN (SELECT a.case_id FROM case_assignments a WHERE "
                "a.assignee_type = 'department' AND a.code = %(scope_department)s)"
            ),
            params,
        )
    where: sql.Composable = sql.SQL(
        "(c.unit_code LIKE %(scope_unit)s OR c.case_id IN (SELECT a.case_id FROM "
        "case_assignments a WHERE a.assignee_type = 'unit' AND a.code LIKE %(scope_unit)s))"
    )
    if principal.sees_only_work_orders:
        where = sql.SQL("{} AND c.source = 'fleet'").format(where)
    return where, params


@dataclass(frozen=True)
class CaseFilter:
    unit: str | None = None
    states: tuple[str, ...] = ()
    open_only: bool = False
    category: str | None = None
    source: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    department: str | None = None
    node_id: str | None = None
    camera_id: str | None = None
    false_alarm: bool | None = None


def encode_cursor(opened_at: datetime, case_id: UUID) -> str:
    raw = f"{opened_at.isoformat()}|{case_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, case_id = raw.split("|")
        return datetime.fromisoformat(at), UUID(case_id)
    except ValueError as exc:
        raise BadRequest("cursor is not one this API gave out") from exc


def _filters(f: CaseFilter) -> tuple[list[sql.Composable], dict[str, Any]]:
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {}
    if f.unit is not None:
        clauses.append(sql.SQL("c.unit_code LIKE %(unit)s"))
        params["unit"] = like_prefix(f.unit)
    if f.open_only:
        clauses.append(sql.SQL("c.state <> 'closed'"))
    if f.states:
        clauses.append(sql.SQL("c.state = ANY(%(states)s)"))
        params["states"] = list(f.states)
    for column in ("category", "source", "node_id", "camera_id", "false_alarm"):
        if getattr(f, column) is not None:
            clauses.append(sql.SQL("c.{} = %({})s").format(sql.Identifier(column), sql.SQL(column)))
            params[column] = getattr(f, column)
    if f.start is not None:
        clauses.append(sql.SQL("c.opened_at >= %(start)s"))
        params["start"] = f.start
    if f.end is not None:
        clauses.append(sql.SQL("c.opened_at < %(end)s"))
        params["end"] = f.end
    if f.department is not None:
        clauses.append(
            sql.SQL(
                "c.case_id IN (SELECT a.case_id FROM case_assignments a WHERE "
                "a.assignee_type = 'department' AND a.code = %(department)s)"
            )
        )
        params["department"] = f.department
    return clauses, params


async def list_cases(
    conn: AsyncConnection,
    principal: Principal,
    case_filter: CaseFilter,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; the next cursor, or None on the last page."""
    where, params = scope(principal)
    clauses, more = _filters(case_filter)
    params.update(more)
    if cursor is not None:
        params["after_at"], params["after_id"] = decode_cursor(cursor)
        clauses.append(sql.SQL("(c.opened_at, c.case_id) < (%(after_at)s, %(after_id)s)"))
    params["limit"] = limit + 1
    query = sql.SQL(
        "SELECT {columns} FROM cases c WHERE {where} ORDER BY c.opened_at DESC, c.case_id DESC "
        "LIMIT %(limit)s"
    ).format(
        columns=sql.SQL(", ".join(f"c.{c.strip()}" for c in CASE_COLUMNS.split(","))),
        where=sql.SQL(" AND ").join([where, *clauses]),
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1]["opened_at"], rows[-1]["case_id"])
    return rows, None


async def get_case(
    conn: AsyncConnection, principal: Principal, case_id: UUID, *, for_update: bool = False
) -> dict[str, Any] | None:
    """The case if the caller may see it (else None: outside looks like missing)."""
    where, params = scope(principal)
    params["case_id"] = case_id
    query = sql.SQL("SELECT {} FROM cases c WHERE c.case_id = %(case_id)s AND {}{}").format(
        sql.SQL(CASE_COLUMNS), where, sql.SQL(" FOR UPDATE OF c" if for_update else "")
    )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def history(conn: AsyncConnection, case_id: UUID) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, at, actor, action, from_state, to_state, detail FROM case_history "
            "WHERE case_id = %s ORDER BY id",
            (case_id,),
        )
        return await cur.fetchall()


async def assignments(conn: AsyncConnection, case_id: UUID) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT assignee_type, code, dispatched_at, dispatched_by, resolved_at, resolved_by "
            "FROM case_assignments WHERE case_id = %s ORDER BY assignee_type, code",
            (case_id,),
        )
        return await cur.fetchall()


async def threads(conn: AsyncConnection, case_id: UUID) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT thread_id, first_event_id, observed_at FROM case_threads "
            "WHERE case_id = %s ORDER BY observed_at",
            (case_id,),
        )
        return await cur.fetchall()


async def add_history(
    conn: AsyncConnection,
    case_id: UUID,
    *,
    at: datetime,
    actor: str,
    action: str,
    from_state: str | None,
    to_state: str | None,
    detail: dict[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO case_history (case_id, at, actor, action, from_state, to_state, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (case_id, at, actor, action, from_state, to_state, Jsonb(detail)),
    )


async def update_case(
    conn: AsyncConnection, case_id: UUID, changes: dict[str, Any], *, at: datetime
) -> None:
    sets: list[sql.Composable] = [
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in changes
    ]
    sets += [sql.SQL("updated_at = %(at)s"), sql.SQL("version = version + 1")]
    await conn.execute(
        sql.SQL("UPDATE cases SET {} WHERE case_id = %(case_id)s").format(sql.SQL(", ").join(sets)),
        {**changes, "at": at, "case_id": case_id},
    )


async def rule_for(conn: AsyncConnection, category: str, severity: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT category, severity, opens_case, source, start_level, ack_s, resolve_s "
            "FROM case_rules WHERE category = %s AND severity = %s",
            (category, severity),
        )
        return await cur.fetchone()


async def ancestor_at(conn: AsyncConnection, unit_code: str, level: str) -> str:
    """The unit's ancestor (or itself) at `level`; the unit itself when it lies above."""
    cur = await conn.execute(
        "SELECT code FROM org_units WHERE level = %s AND starts_with(%s, code)",
        (level, unit_code),
    )
    row = await cur.fetchone()
    return str(row[0]) if row else unit_code


async def checks(conn: AsyncConnection, case_id: UUID) -> list[dict[str, Any]]:
    """Rechecks of the case with the node's answer and whether its snapshot arrived."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT k.request_id, k.camera_id, k.rule_id, k.requested_at, k.requested_by, "
            "k.sent_at, k.error AS send_error, r.status, r.data, r.error, r.responded_at, "
            "s.event_id IS NOT NULL AS has_snapshot "
            "FROM case_checks k "
            "LEFT JOIN command_responses r ON r.request_id = k.request_id "
            "LEFT JOIN snapshots s ON s.event_id = k.request_id AND s.variant = 'frame' "
            "AND s.node_id = k.node_id "
            "WHERE k.case_id = %s ORDER BY k.requested_at",
            (case_id,),
        )
        return await cur.fetchall()


async def mark_check_sent(
    conn: AsyncConnection, request_id: UUID, *, sent_at: datetime | None, error: str | None
) -> None:
    await conn.execute(
        "UPDATE case_checks SET sent_at = %s, error = %s WHERE request_id = %s",
        (sent_at, error, request_id),
    )


async def check_snapshot(
    conn: AsyncConnection, case_id: UUID, request_id: UUID
) -> tuple[str, str] | None:
    """(storage key, sha256) of the picture the checked node sent with its answer."""
    cur = await conn.execute(
        "SELECT s.storage_key, s.sha256 FROM case_checks k JOIN snapshots s "
        "ON s.event_id = k.request_id AND s.variant = 'frame' AND s.node_id = k.node_id "
        "WHERE k.case_id = %s AND k.request_id = %s",
        (case_id, request_id),
    )
    row = await cur.fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


async def add_photo(
    conn: AsyncConnection,
    *,
    photo_id: UUID,
    case_id: UUID,
    uploaded_by: str,
    uploaded_at: datetime,
    content_type: str,
    size_bytes: int,
    sha256: str,
    storage_key: str,
) -> None:
    await conn.execute(
        "INSERT INTO case_photos (photo_id, case_id, uploaded_by, uploaded_at, content_type, "
        "size_bytes, sha256, storage_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            photo_id,
            case_id,
            uploaded_by,
            uploaded_at,
            content_type,
            size_bytes,
            sha256,
            storage_key,
        ),
    )


async def photos(conn: AsyncConnection, case_id: UUID) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT photo_id, uploaded_by, uploaded_at, content_type, size_bytes, sha256, "
            "storage_key FROM case_photos WHERE case_id = %s ORDER BY uploaded_at",
            (case_id,),
        )
        return await cur.fetchall()


async def case_stats(
    conn: AsyncConnection, principal: Principal, case_filter: CaseFilter, timezone: str
) -> dict[str, Any]:
    """How the loop performs: cases by state, and the times to acknowledge, dispatch and
    resolve (median and 90th percentile, seconds), escalations and false alarms."""
    where, params = scope(principal)
    clauses, more = _filters(case_filter)
    params.update(more)
    condition = sql.SQL(" AND ").join([where, *clauses])

    # Seconds from opening to each step, median and 90th percentile; column names are
    # fixed here, never from the request.
    times = sql.SQL(", ").join(
        sql.SQL(
            "percentile_cont({p}) WITHIN GROUP (ORDER BY extract(epoch FROM c.{column} - "
            "c.opened_at)) AS {name}"
        ).format(
            p=sql.Literal(p),
            column=sql.Identifier(column),
            name=sql.Identifier(f"{column.removesuffix('_at')}_p{int(p * 100)}_s"),
        )
        for column in ("acknowledged_at", "dispatched_at", "resolved_at")
        for p in (0.5, 0.9)
    )
    query = sql.SQL(
        "SELECT count(*) AS cases, count(*) FILTER (WHERE c.state <> 'closed') AS open, "
        "count(*) FILTER (WHERE c.escalations > 0) AS escalated, "
        "count(*) FILTER (WHERE c.false_alarm) AS false_alarms, "
        "count(*) FILTER (WHERE c.state <> 'closed' AND {overdue}) AS overdue, "
        "{times}, avg(c.satisfaction)::float AS satisfaction_avg FROM cases c WHERE {condition}"
    ).format(times=times, condition=condition, overdue=sql.SQL(OVERDUE.format(now="now()")))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        row = await cur.fetchone()
    assert row is not None
    states = await conn.execute(
        sql.SQL("SELECT c.state, count(*) FROM cases c WHERE {} GROUP BY c.state").format(
            condition
        ),
        params,
    )
    row["by_state"] = {state: n for state, n in await states.fetchall()}
    params["timezone"] = timezone
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            sql.SQL(
                "SELECT (c.opened_at AT TIME ZONE %(timezone)s)::date AS day, count(*) AS opened, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
                "c.acknowledged_at - c.opened_at)) AS acknowledged_p50_s, "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM "
                "c.resolved_at - c.opened_at)) AS resolved_p50_s "
                "FROM cases c WHERE {} GROUP BY 1 ORDER BY 1"
            ).format(condition),
            params,
        )
        row["daily"] = await cur.fetchall()
    return row
