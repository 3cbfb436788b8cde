"""The one place where TimescaleDB and plain PostgreSQL differ: detection at start, policies
(retention, compression, aggregate refresh) or their plain equivalents (partitions made
ahead, old partitions dropped, rollups kept by ingest), run by `maintain`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from cloud.settings import RetentionSettings

logger = logging.getLogger(__name__)

# (table, time column, retention attribute of RetentionSettings)
TIME_SERIES = (
    ("events", "observed_at", "events_days"),
    ("node_health", "sent_at", "health_days"),
    ("telemetry", "observed_at", "telemetry_days"),
)
ROLLUPS = ("events_hourly", "events_daily", "node_health_hourly")
DAYS_AHEAD = 3


def timescale_version(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    return str(row[0]) if row else None


def use_timescale(conn: psycopg.Connection, mode: str) -> bool:
    """Whether to use TimescaleDB: `auto` uses it when it is installed or installable."""
    if mode == "off":
        return False
    if timescale_version(conn) is None:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        if available is None:
            if mode == "on":
                raise RuntimeError(
                    "CLOUD_TIMESCALE=on but the timescaledb extension is not "
                    "available on this server"
                )
            return False
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        conn.commit()
    return True


# ---- TimescaleDB -----------------------------------------------------------------------


def apply_timescale_policies(conn: psycopg.Connection, retention: RetentionSettings) -> None:
    """Retention, compression and refresh policies; replaced on every start so a changed
    setting takes effect."""
    conn.autocommit = True
    try:
        for table, _, attribute in TIME_SERIES:
            days = getattr(retention, attribute)
            conn.execute("SELECT remove_retention_policy(%s, if_exists => TRUE)", (table,))
            conn.execute(
                "SELECT add_retention_policy(%s, make_interval(days => %s))", (table, days)
            )
        for table in ("events", "node_health"):
            conn.execute("SELECT remove_compression_policy(%s, if_exists => TRUE)", (table,))
            conn.execute(
                "SELECT add_compression_policy(%s, make_interval(days => %s))",
                (table, retention.compress_after_days),
            )
        for view, start, end, every in (
            ("events_hourly", "3 days", "1 hour", "5 minutes"),
            ("events_daily", "35 days", "1 day", "1 hour"),
            ("node_health_hourly", "3 days", "1 hour", "15 minutes"),
        ):
            conn.execute(
                "SELECT remove_continuous_aggregate_policy(%s, if_exists => TRUE)", (view,)
            )
            conn.execute(
                "SELECT add_continuous_aggregate_policy(%s, start_offset => %s::interval, "
                "end_offset => %s::interval, schedule_interval => %s::interval)",
                (view, start, end, every),
            )
            conn.execute("SELECT remove_retention_policy(%s, if_exists => TRUE)", (view,))
            conn.execute(
                "SELECT add_retention_policy(%s, make_interval(days => %s))",
                (view, retention.rollups_days),
            )
    finally:
        conn.autocommit = False


def policy_jobs(conn: psycopg.Connection) -> list[tuple[int, str, str]]:
    """(job id, procedure, hypertable or view) of gridwatch's policies."""
    rows = conn.execute(
        "SELECT job_id, proc_name, hypertable_name FROM timescaledb_information.jobs "
        "WHERE proc_schema = '_timescaledb_functions' ORDER BY job_id"
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


# ---- plain PostgreSQL -----------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    lower: datetime
    upper: datetime


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def ensure_partitions(
    conn: psycopg.Connection,
    today: date,
    days_ahead: int = DAYS_AHEAD,
    tables: Iterable[tuple[str, str, str]] = TIME_SERIES,
) -> list[str]:
    """Daily partitions from `today` to `days_ahead` days on, made before data arrives.

    Rows that already fell into the default partition for such a day (the service was
    down for days) move into the new partition in the same transaction."""
    made = []
    existing = {p.name for p in list_partitions(conn)}
    for table, column, _ in tables:
        for offset in range(days_ahead + 1):
            day = today + timedelta(days=offset)
            name = partition_name(table, day)
            if name in existing:
                continue
            lower = datetime(day.year, day.month, day.day, tzinfo=UTC)
            upper = lower + timedelta(days=1)
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                        sql.Identifier(name), sql.Identifier(table)
                    )
                )
                conn.execute(
                    sql.SQL(
                        "WITH moved AS (DELETE FROM {} WHERE {} >= %s AND {} < %s RETURNING *) "
                        "INSERT INTO {} SELECT * FROM moved"
                    ).format(
                        sql.Identifier(f"{table}_default"),
                        sql.Identifier(column),
                        sql.Identifier(column),
                        sql.Identifier(name),
                    ),
                    (lower, upper),
                )
                # DDL takes no bind parameters: the bounds are literals.
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(table),
                        sql.Identifier(name),
                        sql.Literal(lower.isoformat()),
                        sql.Literal(upper.isoformat()),
                    )
                )
            made.append(name)
    return made


def list_partitions(conn: psycopg.Connection) -> list[Partition]:
    rows = conn.execute(
        "SELECT parent.relname, child.relname, pg_get_expr(child.relpartbound, child.oid) "
        "FROM pg_inherits JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
        "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
        "WHERE parent.relname = ANY(%s) AND child.relname LIKE '%%\\_p%%'",
        ([t for t, _, _ in TIME_SERIES],),
    ).fetchall()
    out = []
    for table, name, bound in rows:
        # FOR VALUES FROM ('2026-11-25 00:00:00+00') TO ('2026-11-26 00:00:00+00')
        parts = str(bound).split("'")
        out.append(
            Partition(
                str(table),
                str(name),
                datetime.fromisoformat(parts[1]),
                datetime.fromisoformat(parts[3]),
            )
        )
    return out


def drop_expired(
    conn: psycopg.Connection, now: datetime, retention: RetentionSettings
) -> list[str]:
    """Retention on plain PostgreSQL: drop whole partitions older than the limit (cheap,
    no vacuum), trim the default partitions and the rollups."""
    dropped = []
    limits = {
        table: now - timedelta(days=getattr(retention, attr)) for table, _, attr in TIME_SERIES
    }
    for partition in list_partitions(conn):
        if partition.upper <= limits[partition.table]:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition.name)))
            dropped.append(partition.name)
    for table, column, _ in TIME_SERIES:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                sql.Identifier(f"{table}_default"), sql.Identifier(column)
            ),
            (limits[table],),
        )
    rollup_limit = now - timedelta(days=retention.rollups_days)
    for rollup in ROLLUPS:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE bucket < %s").format(sql.Identifier(rollup)),
            (rollup_limit,),
        )
    conn.commit()
    return dropped


def maintain(
    conn: psycopg.Connection,
    *,
    timescale: bool,
    retention: RetentionSettings,
    now: datetime | None = None,
) -> None:
    """Periodic upkeep; on TimescaleDB its own job scheduler does the work."""
    if timescale:
        return
    now = now or datetime.now(UTC)
    made = ensure_partitions(conn, now.date())
    dropped = drop_expired(conn, now, retention)
    if made or dropped:
        logger.info("partitions made=%s dropped=%s", made, dropped)


def local_day(moment: datetime, timezone: ZoneInfo) -> datetime:
    """The start of `moment`'s day in the county's time zone, as an aware datetime."""
    local = moment.astimezone(timezone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)
