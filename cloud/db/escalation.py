"""The case timers in SQL: escalate what nobody acknowledged, press what is overdue, remind
before deadlines. State lives in the cases themselves, so a restart loses no timer, and
rows are claimed with SKIP LOCKED and re-checked, so several service instances never
escalate one case twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection

from cloud.db.alerts import LOCK_SQL

BATCH = 500

# Not acknowledged in time: one tier up (grid/village → town → county), supervision +1,
# a new acknowledgement deadline from now. A case already at the top of its tiers (the
# county, or the box's unit for a camera not registered to its box) is not escalated again:
# its supervision rises (督办) and the next deadline is as far off as the case is old, a
# day at most, so an unanswered case is pressed ever less often rather than every minute.
ESCALATE_SQL = """
WITH due AS (
    SELECT case_id FROM cases
    WHERE state = 'intake' AND ack_due_at <= %(now)s
    ORDER BY ack_due_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), target AS (
    SELECT c.case_id, c.state, c.responsible_unit_code AS from_unit,
           CASE WHEN c.source = 'camera' AND NOT EXISTS (
                    SELECT 1 FROM cameras k
                    WHERE k.node_id = c.node_id AND k.camera_id = c.camera_id)
                -- A camera not registered to its box: the box's unit is the limit (its
                -- supervision still rises), so a box cannot push made-up cases up the tiers.
                THEN c.responsible_unit_code
                ELSE coalesce((SELECT a.code FROM org_units a
                               WHERE a.level = CASE WHEN r.level IN ('grid', 'village')
                                                    THEN 'town' ELSE 'county' END
                                 AND starts_with(c.responsible_unit_code, a.code)),
                              c.responsible_unit_code) END AS to_unit,
           coalesce(rule.ack_s, 1800) AS ack_s
    FROM due
    JOIN cases c USING (case_id)
    JOIN org_units r ON r.code = c.responsible_unit_code
    LEFT JOIN case_rules rule ON rule.category = c.category AND rule.severity = c.severity
), moved AS (
    UPDATE cases c SET responsible_unit_code = t.to_unit,
                       supervision_level = c.supervision_level + 1,
                       escalations = c.escalations + (t.to_unit <> t.from_unit)::int,
                       deadlines_missed = c.deadlines_missed + 1,
                       ack_due_at = %(now)s + make_interval(secs => CASE
                           WHEN t.to_unit <> t.from_unit THEN t.ack_s
                           ELSE least(greatest(t.ack_s,
                                               extract(epoch FROM %(now)s - c.opened_at)),
                                      86400) END),
                       reminded_at = NULL, updated_at = %(now)s, version = c.version + 1
    FROM target t WHERE c.case_id = t.case_id
    RETURNING c.case_id, c.unit_code, t.state, t.from_unit, t.to_unit, c.supervision_level
), history AS (
    INSERT INTO case_history (case_id, at, actor, action, from_state, to_state, detail)
    SELECT case_id, %(now)s, 'system',
           CASE WHEN to_unit <> from_unit THEN 'escalate' ELSE 'supervise' END, state, state,
           CASE WHEN to_unit <> from_unit
                THEN jsonb_build_object('reason', 'not acknowledged in time',
                                        'from_unit', from_unit, 'to_unit', to_unit,
                                        'supervision_level', supervision_level)
                ELSE jsonb_build_object('reason', 'not acknowledged in time, at the top '
                                                  'of its tiers',
                                        'supervision_level', supervision_level) END
    FROM moved
)
SELECT case_id, unit_code, from_unit, to_unit, supervision_level FROM moved
"""

# Acknowledged but not resolved in time: the supervision level rises (督办), and the
# deadline moves on by the rule's resolve time so the next press is a deadline later.
OVERDUE_SQL = """
WITH due AS (
    SELECT case_id FROM cases
    WHERE state IN ('triage', 'dispatch', 'handling') AND resolve_due_at <= %(now)s
    ORDER BY resolve_due_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE cases c SET supervision_level = c.supervision_level + 1,
                       deadlines_missed = c.deadlines_missed + 1,
                       resolve_due_at = %(now)s + make_interval(secs => coalesce(
                           (SELECT rule.resolve_s FROM case_rules rule
                            WHERE rule.category = c.category AND rule.severity = c.severity),
                           86400)),
                       reminded_at = NULL, updated_at = %(now)s, version = c.version + 1
    FROM due
    WHERE c.case_id = due.case_id

    RETURNING c.case_id, c.unit_code, c.state, c.responsible_unit_code, c.supervision_level
), history AS (
    INSERT INTO case_history (case_id, at, actor, action, from_state, to_state, detail)
    SELECT case_id, %(now)s, 'system', 'supervise', state, state,
           jsonb_build_object('reason', 'not resolved in time',
                              'supervision_level', supervision_level)
    FROM moved
)
SELECT case_id, unit_code, responsible_unit_code, responsible_unit_code, supervision_level
FROM moved
"""

# Before a deadline (acknowledge while in intake, else resolve): one reminder per deadline.
REMIND_SQL = """
WITH due AS (
    SELECT c.case_id FROM cases c
    JOIN case_rules rule ON rule.category = c.category AND rule.severity = c.severity
    WHERE c.state <> 'closed' AND c.reminded_at IS NULL AND (
        (c.state = 'intake'
         AND %(now)s >= c.ack_due_at - make_interval(secs => rule.ack_s * %(fraction)s)
         AND %(now)s < c.ack_due_at)
        OR (c.state IN ('triage', 'dispatch', 'handling')
            AND %(now)s >= c.resolve_due_at - make_interval(secs => rule.resolve_s * %(fraction)s)
            AND %(now)s < c.resolve_due_at))
    ORDER BY c.case_id LIMIT %(limit)s
    FOR UPDATE OF c SKIP LOCKED
), reminded AS (
    UPDATE cases c SET reminded_at = %(now)s FROM due WHERE c.case_id = due.case_id
    RETURNING c.case_id, c.unit_code, c.state, c.responsible_unit_code, c.supervision_level,
              CASE WHEN c.state = 'intake' THEN c.ack_due_at ELSE c.resolve_due_at END AS due_at
), history AS (
    INSERT INTO case_history (case_id, at, actor, action, from_state, to_state, detail)
    SELECT case_id, %(now)s, 'system', 'remind', state, state,
           jsonb_build_object('due_at', due_at)
    FROM reminded
)
SELECT case_id, unit_code, responsible_unit_code, responsible_unit_code, supervision_level
FROM reminded
"""


@dataclass(frozen=True)
class TimerStep:
    case_id: object
    unit_code: str
    from_unit: str
    to_unit: str
    supervision_level: int


async def _run(conn: AsyncConnection, query: str, params: dict[str, object]) -> list[TimerStep]:
    async with conn.transaction():
        await conn.execute(LOCK_SQL)  # alerts follow commit order (cloud.db.alerts)
        cur = await conn.execute(query, params)
        return [TimerStep(*row) for row in await cur.fetchall()]


async def escalate_due(conn: AsyncConnection, *, now: datetime) -> list[TimerStep]:
    return await _run(conn, ESCALATE_SQL, {"now": now, "limit": BATCH})


async def press_overdue(conn: AsyncConnection, *, now: datetime) -> list[TimerStep]:
    return await _run(conn, OVERDUE_SQL, {"now": now, "limit": BATCH})


async def remind_due(conn: AsyncConnection, *, now: datetime, fraction: float) -> list[TimerStep]:
    return await _run(conn, REMIND_SQL, {"now": now, "limit": BATCH, "fraction": fraction})
