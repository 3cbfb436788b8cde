"""The one place where TimescaleDB and plain PostgreSQL differ: detection at start, policies
(retention, compression, aggregate refresh) or their plain equivalents (partitions made
ahead, old partitions dropped, rollups kept by ingest), run by `maintain`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from cloud.db.upkeep import recorded
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
# How often ingest runs the plain path's maintenance (partitions three days ahead leave
# room for many missed runs).
MAINTAIN_EVERY = timedelta(hours=1)


def timescale_version(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    return str(row[0]) if row else None


def use_timescale(conn: psycopg.Connection, mode: str) -> bool:
    """Whether to use TimescaleDB: `auto` uses it when it is installed or installable, and
    falls back to plain PostgreSQL, with one warning, when the server cannot load it."""
    if mode == "off":
        return False
    if timescale_version(conn) is None:
        if began_plain(conn):
            if mode == "on":
                raise RuntimeError(
                    "CLOUD_TIMESCALE=on but this database began on plain PostgreSQL; a "
                    "database keeps the path it began with (move the data to a new one)"
                )
            return False
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
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.errors.OperationalError:
            raise
        except psycopg.Error as exc:
            # Installed but not in shared_preload_libraries, typically: the server says so.
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            why = f"the server cannot load the timescaledb extension ({reason})"
            fix = (
                "add timescaledb to shared_preload_libraries in postgresql.conf and restart "
                "PostgreSQL"
            )
            if mode == "on":
                raise RuntimeError(f"CLOUD_TIMESCALE=on but {why}: {fix}") from exc
            logger.warning(
                "%s: using plain PostgreSQL (partitions, rollup tables); to use TimescaleDB, "
                "%s, before the first start (a database keeps the path it began with)",
                why,
                fix,
            )
            return False
    return True


def began_plain(conn: psycopg.Connection) -> bool:
    """Whether gridwatch's schema is already here without TimescaleDB: its tables are
    partitioned and its rollups are tables, so it stays on the plain path."""
    row = conn.execute(
        "SELECT to_regclass('schema_migrations') IS NOT NULL "
        "AND EXISTS (SELECT 1 FROM pg_class WHERE relname = 'events' AND relkind = 'p')"
    ).fetchone()
    return bool(row and row[0])


# ---- TimescaleDB -----------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """One TimescaleDB policy as gridwatch wants it: `add` makes it, `settings` (config keys
    holding intervals) and `every` (its schedule) are compared with the job in place."""

    proc: str
    relation: str
    add: str
    settings: dict[str, str]
    every: str | None = None


# The hourly aggregates refresh the last 3 days every few minutes and the daily the last
# 35 days hourly; older late events are refreshed by `refresh_late`, not by wider windows
# (a wider window re-reads every hour of it at every run).
REFRESHES = (
    ("events_hourly", "3 days", "1 hour", "5 minutes"),
    ("events_daily", "35 days", "1 day", "1 hour"),
    ("node_health_hourly", "3 days", "1 hour", "15 minutes"),
)
COMPRESSED = ("events", "node_health", "telemetry")


def wanted_policies(retention: RetentionSettings) -> list[Policy]:
    policies = [
        Policy(
            "policy_retention",
            table,
            "SELECT add_retention_policy(%(relation)s, %(drop_after)s::interval)",
            {"drop_after": f"{getattr(retention, attribute)} days"},
        )
        for table, _, attribute in TIME_SERIES
    ]
    policies += [
        Policy(
            "policy_compression",
            table,
            "SELECT add_compression_policy(%(relation)s, %(compress_after)s::interval)",
            {"compress_after": f"{retention.compress_after_days} days"},
        )
        for table in COMPRESSED
    ]
    for view, start, end, every in REFRESHES:
        policies.append(
            Policy(
                "policy_refresh_continuous_aggregate",
                view,
                "SELECT add_continuous_aggregate_policy(%(relation)s, "
                "start_offset => %(start_offset)s::interval, "
                "end_offset => %(end_offset)s::interval, schedule_interval => %(every)s::interval)",
                {"start_offset": start, "end_offset": end},
                every,
            )
        )
        policies.append(
            Policy(
                "policy_retention",
                view,
                "SELECT add_retention_policy(%(relation)s, %(drop_after)s::interval)",
                {"drop_after": f"{retention.rollups_days} days"},
            )
        )
    return policies


def apply_timescale_policies(conn: psycopg.Connection, retention: RetentionSettings) -> list[str]:
    """Make the policies that are missing and alter those whose settings changed, in place:
    a job keeps its id and its history across restarts (re-creating them on every start
    lost both). Returns what changed."""
    changed = []
    was_autocommit = conn.autocommit
    if not was_autocommit:
        conn.commit()
    conn.autocommit = True  # the policy functions commit themselves
    try:
        for policy in wanted_policies(retention):
            row = conn.execute(
                "SELECT job_id, config, schedule_interval FROM timescaledb_information.jobs "
                "WHERE proc_name = %s AND hypertable_name = %s ORDER BY job_id LIMIT 1",
                (policy.proc, policy.relation),
            ).fetchone()
            if row is None:
                conn.execute(
                    policy.add,
                    {"relation": policy.relation, "every": policy.every, **policy.settings},
                )
                changed.append(f"{policy.proc} {policy.relation} added")
            elif _differs(conn, policy, row[1], row[2]):
                conn.execute(
                    "SELECT alter_job(%s, config => %s::jsonb || %s::jsonb, "
                    "schedule_interval => coalesce(%s::interval, %s::interval))",
                    (row[0], Jsonb(row[1]), Jsonb(policy.settings), policy.every, row[2]),
                )
                changed.append(f"{policy.proc} {policy.relation} altered")
    finally:
        conn.autocommit = was_autocommit
    if changed:
        logger.info("TimescaleDB policies: %s", ", ".join(changed))
    return changed


def _differs(
    conn: psycopg.Connection, policy: Policy, config: dict[str, object], every: timedelta
) -> bool:
    """Whether the job's intervals differ from the wanted ones (compared as intervals:
    TimescaleDB writes `01:00:00` where gridwatch said `1 hour`)."""
    if any(key not in config for key in policy.settings):
        return True
    pairs = [(str(config[key]), value) for key, value in policy.settings.items()]
    if policy.every is not None:
        pairs.append((f"{every.total_seconds()} seconds", policy.every))
    for have, want in pairs:
        row = conn.execute(
            "SELECT %s::interval IS DISTINCT FROM %s::interval", (have, want)
        ).fetchone()
        if row is None or row[0]:
            return True
    return False


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
    """Periodic upkeep, each step recorded for /metrics and /readyz (cloud.db.upkeep); on
    TimescaleDB its own job scheduler does the work."""
    if timescale:
        return
    now = now or datetime.now(UTC)
    made: list[str] = []
    dropped: list[str] = []
    with recorded(conn, "partitions", MAINTAIN_EVERY):
        made = ensure_partitions(conn, now.date())
    with recorded(conn, "retention", MAINTAIN_EVERY):
        dropped = drop_expired(conn, now, retention)
    if made or dropped:
        logger.info("partitions made=%s dropped=%s", made, dropped)


# ---- late rows on TimescaleDB ----------------------------------------------------------

# Rows older than this may land in an hour the hourly aggregates have materialised (their
# refresh policies' end_offset); newer ones are read live from the table.
LATE_AFTER = timedelta(hours=1)
HOUR = timedelta(hours=1)


def mark_late(
    conn: psycopg.Connection, aggregate: str, moments: Iterable[datetime], now: datetime
) -> None:
    """Note the hours late rows fell in, in the batch's transaction, for `refresh_late`: a
    refresh policy covers only its last days, so without this a town that replays a long
    outage would never be counted."""
    cutoff = now - LATE_AFTER
    hours = {
        m.astimezone(UTC).replace(minute=0, second=0, microsecond=0) for m in moments if m < cutoff
    }
    if hours:
        # A new version on every mark: a refresh that read an older one leaves this mark.
        conn.execute(
            "INSERT INTO aggregate_late_hours (aggregate, bucket) "
            "SELECT %s, unnest(%s::timestamptz[]) ON CONFLICT (aggregate, bucket) "
            "DO UPDATE SET version = aggregate_late_hours.version + 1",
            (aggregate, sorted(hours)),
        )


# One ingest at a time refreshes late hours: two refreshes of one aggregate over the same
# range wait for each other, or (TimescaleDB 2.28) fail.
_LATE_LOCK = 0x6777_6C61  # "gwla"


def refresh_late(conn: psycopg.Connection, timezone: ZoneInfo) -> int:
    """Refresh the aggregates over the hours that late rows changed (and events_daily over
    their days), then remove those marks. Only hours below an aggregate's watermark need
    it: above, the aggregate reads the rows live, and refreshing there would move the
    watermark past hours not yet materialised (they would vanish from the counts); those
    marks wait until the policy has moved the watermark past them. Needs an autocommit
    connection (a refresh cannot run in a transaction). Returns the hours refreshed; 0
    when another process is at it."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_LATE_LOCK,)).fetchone()[0]:  # type: ignore[index]
        return 0
    try:
        return _refresh_late(conn, timezone)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LATE_LOCK,))


def _refresh_late(conn: psycopg.Connection, timezone: ZoneInfo) -> int:
    marks = conn.execute(
        "SELECT aggregate, bucket, version FROM aggregate_late_hours ORDER BY 1, 2"
    ).fetchall()
    if not marks:
        return 0
    limits = {aggregate: watermark(conn, aggregate) for aggregate in {m[0] for m in marks}}
    done = [m for m in marks if m[1] + HOUR <= limits[m[0]]]
    hourly_done: dict[str, list[datetime]] = {}
    for aggregate, bucket, _ in done:
        hourly_done.setdefault(aggregate, []).append(bucket)
    for aggregate, buckets in hourly_done.items():
        for lower, upper in _runs(buckets, lambda b: b + HOUR):
            _refresh(conn, aggregate, lower, upper)
        if aggregate == "events_hourly":
            daily = watermark(conn, "events_daily")
            days = sorted({local_day(b, timezone) for b in buckets})
            days = [d for d in days if _next_day(d, timezone) <= daily]
            for lower, upper in _runs(days, lambda d: _next_day(d, timezone)):
                _refresh(conn, "events_daily", lower, upper)
    with conn.transaction():
        conn.execute(
            "DELETE FROM aggregate_late_hours m USING unnest(%s::text[], %s::timestamptz[], "
            "%s::int8[]) AS v(aggregate, bucket, version) WHERE m.aggregate = v.aggregate "
            "AND m.bucket = v.bucket AND m.version = v.version",
            ([m[0] for m in done], [m[1] for m in done], [m[2] for m in done]),
        )
    return len(done)


def watermark(conn: psycopg.Connection, aggregate: str) -> datetime:
    """Where a continuous aggregate's materialised part ends (1970 before any refresh)."""
    row = conn.execute(
        "SELECT greatest(_timescaledb_functions.to_timestamp("
        "_timescaledb_functions.cagg_watermark(mat_hypertable_id)), "
        "timestamptz '1970-01-01 00:00Z') "
        "FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = %s",
        (aggregate,),
    ).fetchone()
    assert row is not None, f"no continuous aggregate {aggregate}"
    moment: datetime = row[0]
    return moment


def _refresh(conn: psycopg.Connection, aggregate: str, lower: datetime, upper: datetime) -> None:
    conn.execute(
        "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
        (aggregate, lower, upper),
    )


def _next_day(day: datetime, timezone: ZoneInfo) -> datetime:
    """The next local midnight (a wall-clock day: 23 or 25 hours across a DST change)."""
    return local_day(day + timedelta(hours=36), timezone)


def _runs(
    starts: list[datetime], end_of: Callable[[datetime], datetime]
) -> list[tuple[datetime, datetime]]:
    """Sorted bucket starts as [lower, upper) ranges of adjacent buckets."""
    runs: list[tuple[datetime, datetime]] = []
    for start in sorted(starts):
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end_of(start))
        else:
            runs.append((start, end_of(start)))
    return runs


def local_day(moment: datetime, timezone: ZoneInfo) -> datetime:
    """The start of `moment`'s day in the county's time zone, as an aware datetime."""
    local = moment.astimezone(timezone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)
