"""The background jobs that keep the time series, watched on both paths.

On TimescaleDB its job scheduler runs the policies; `follow_policies` copies their
statistics into `upkeep_jobs` and runs itself, once per interval across all instances, a
policy the scheduler has not run successfully for two of its intervals (a scheduler that
fails every job, or runs none, must not stop retention, compression and refreshes). On plain
PostgreSQL ingest runs the maintenance and records each run with `recorded`. /metrics and
/readyz read `upkeep_jobs` the same way on both paths."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import class_row

logger = logging.getLogger(__name__)

# A job is stalled when it has not succeeded for two of its intervals and this much more.
STALL_GRACE = timedelta(minutes=5)

# A job has not succeeded for two of its intervals and the grace (`{now}`: when asked).
_STALLED = "{now} > coalesce(last_success, first_seen) + 2 * every + %(grace)s"

_STATUS_SQL = (
    "SELECT job, last_success, last_failure, last_error, fallback_runs, "  # noqa: S608
    "coalesce(last_failure > coalesce(last_success, '-infinity'), false) "
    f"OR {_STALLED} AS failing FROM upkeep_jobs ORDER BY job"
)

# The policies' names as an operator reads them: "refresh events_hourly".
_SHORT = {
    "policy_retention": "retention",
    "policy_compression": "compression",
    "policy_refresh_continuous_aggregate": "refresh",
}


@dataclass(frozen=True)
class JobStatus:
    job: str
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str | None
    fallback_runs: int
    failing: bool

    def summary(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "failing": self.failing,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_error": self.last_error,
            "fallback_runs": self.fallback_runs,
        }


async def statuses(conn: AsyncConnection) -> list[JobStatus]:
    """Every job as last seen, `failing` when its last run failed or it is stalled."""
    async with conn.cursor(row_factory=class_row(JobStatus)) as cur:
        await cur.execute(_STATUS_SQL.format(now="now()"), {"grace": STALL_GRACE})
        return await cur.fetchall()


# ---- plain PostgreSQL: ingest's own maintenance -----------------------------------------


@contextmanager
def recorded(conn: psycopg.Connection, job: str, every: timedelta) -> Iterator[None]:
    """Run a maintenance step and record how it went. A failure is logged and recorded, not
    raised: the county's events go on being stored while the metric says upkeep fails. The
    database away is raised, for the caller's retries."""
    try:
        yield
    except psycopg.OperationalError:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded and shown in /metrics and /readyz
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        logger.error("upkeep job %s failed: %s", job, exc)
        _record(conn, job, every, error=str(exc)[:2000])
    else:
        _record(conn, job, every, error=None)


def _record(conn: psycopg.Connection, job: str, every: timedelta, error: str | None) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO upkeep_jobs (job, every) VALUES (%s, %s) "
            "ON CONFLICT (job) DO UPDATE SET every = excluded.every",
            (job, every),
        )
        if error is None:
            conn.execute("UPDATE upkeep_jobs SET last_success = now() WHERE job = %s", (job,))
        else:
            conn.execute(
                "UPDATE upkeep_jobs SET last_failure = now(), last_error = %s WHERE job = %s",
                (error, job),
            )


# ---- TimescaleDB: its scheduler's jobs ----------------------------------------------------


@dataclass(frozen=True)
class _Policy:
    job_id: int
    job: str
    every: timedelta
    last_success: datetime | None
    failed_at: datetime | None
    failures: int
    error: str | None


def follow_policies(conn: psycopg.Connection, now: datetime) -> list[str]:
    """Copy the scheduler's view of gridwatch's policies into `upkeep_jobs`, then run those
    it left stalled. Returns the jobs run here."""
    policies = [
        _Policy(
            int(job_id),
            f"{_SHORT.get(proc, proc)} {relation}",
            every,
            last_success,
            failed_at,
            int(failures or 0),
            error,
        )
        for job_id, proc, relation, every, last_success, failed_at, failures, error in conn.execute(
            "SELECT j.job_id, j.proc_name, j.hypertable_name, j.schedule_interval, "
            "s.last_successful_finish, "
            "CASE WHEN s.last_run_status = 'Failed' THEN s.last_run_started_at END, "
            "s.total_failures, (SELECT e.err_message FROM timescaledb_information.job_errors e "
            "  WHERE e.job_id = j.job_id ORDER BY e.finish_time DESC LIMIT 1) "
            "FROM timescaledb_information.jobs j "
            "LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id "
            "WHERE j.proc_schema = '_timescaledb_functions' AND j.hypertable_name IS NOT NULL "
            "AND j.scheduled ORDER BY j.job_id"
        ).fetchall()
    ]
    with conn.transaction():
        for p in policies:
            conn.execute(
                "INSERT INTO upkeep_jobs (job, job_id, every, first_seen, last_success, "
                "last_failure, last_error, scheduler_failures) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (job) DO UPDATE SET "
                "job_id = excluded.job_id, every = excluded.every, "
                "last_success = greatest(upkeep_jobs.last_success, excluded.last_success), "
                "last_failure = greatest(upkeep_jobs.last_failure, excluded.last_failure), "
                "last_error = coalesce(excluded.last_error, upkeep_jobs.last_error), "
                "scheduler_failures = excluded.scheduler_failures",
                (p.job, p.job_id, p.every, now, p.last_success, p.failed_at, p.error, p.failures),
            )
    ran = []
    for p in policies:
        if _claim(conn, p, now):
            ran.append(p.job)
            _run(conn, p, now)
    return ran


def _claim(conn: psycopg.Connection, policy: _Policy, now: datetime) -> bool:
    """Whether this instance runs a stalled policy now: at most one run per interval, by
    whichever instance marks it first."""
    row = conn.execute(
        "UPDATE upkeep_jobs SET fallback_at = %(now)s WHERE job = %(job)s "  # noqa: S608
        f"AND {_STALLED.format(now='%(now)s')} "
        "AND (fallback_at IS NULL OR fallback_at <= %(now)s - every) "
        "RETURNING coalesce(last_success, first_seen)",
        {"now": now, "job": policy.job, "grace": STALL_GRACE},
    ).fetchone()
    if row is None:
        return False
    logger.warning(
        "TimescaleDB job %d (%s) has not succeeded since %s (scheduler failures: %d%s): "
        "gridwatch runs it itself, once every %s, until the scheduler does",
        policy.job_id,
        policy.job,
        row[0].isoformat(),
        policy.failures,
        f", last error: {policy.error}" if policy.error else "",
        policy.every,
    )
    return True


def _run(conn: psycopg.Connection, policy: _Policy, now: datetime) -> None:
    try:
        conn.execute("CALL run_job(%s)", (policy.job_id,))
    except psycopg.Error as exc:
        if conn.broken:
            raise  # the database away: the caller retries
        logger.error("TimescaleDB job %d (%s) failed here too: %s", policy.job_id, policy.job, exc)
        conn.execute(
            "UPDATE upkeep_jobs SET last_failure = %s, last_error = %s WHERE job = %s",
            (now, str(exc)[:2000], policy.job),
        )
        return
    conn.execute(
        "UPDATE upkeep_jobs SET last_success = %s, fallback_runs = fallback_runs + 1 "
        "WHERE job = %s",
        (now, policy.job),
    )
