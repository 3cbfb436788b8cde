"""The service's timer loop: escalation, overdue pressure and reminders, every few seconds.

Each run asks the database for what is due at `clock()` and changes it in one
transaction per kind; the clock is injectable so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cloud.cases.rules import CaseRules
from cloud.db.escalation import TimerStep, escalate_due, press_overdue, remind_due

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DEFAULT_REMIND_FRACTION = CaseRules().remind_fraction


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TimerRun:
    escalated: list[TimerStep]
    pressed: list[TimerStep]
    reminded: list[TimerStep]


async def run_timers(pool: AsyncConnectionPool, *, now: datetime) -> TimerRun:
    async with pool.connection() as conn:
        escalated = await escalate_due(conn, now=now)
        pressed = await press_overdue(conn, now=now)
        # The rules in force say when to remind; they may change while the service runs.
        cur = await conn.execute(
            "SELECT (rules->>'remind_fraction')::float8 FROM case_rule_sets "
            "ORDER BY version DESC LIMIT 1"
        )
        row = await cur.fetchone()
        fraction = row[0] if row and row[0] is not None else DEFAULT_REMIND_FRACTION
        reminded = await remind_due(conn, now=now, fraction=fraction)
    for step in escalated:
        logger.info(
            "case %s case_id=%s from=%s to=%s supervision_level=%s",
            "escalated" if step.from_unit != step.to_unit else "pressed at its top tier",
            step.case_id,
            step.from_unit,
            step.to_unit,
            step.supervision_level,
        )
    return TimerRun(escalated, pressed, reminded)


async def timer_loop(
    pool: AsyncConnectionPool,
    *,
    interval_s: float,
    clock: Clock = utc_now,
) -> None:
    """Runs until cancelled; a database outage is logged once and retried next tick."""
    failing = False
    while True:
        try:
            await run_timers(pool, now=clock())
            if failing:
                logger.info("case timers running again")
                failing = False
        except (psycopg.Error, PoolTimeout):
            if not failing:
                logger.exception("case timers failed; retrying every %.0f s", interval_s)
                failing = True
        await asyncio.sleep(interval_s)
