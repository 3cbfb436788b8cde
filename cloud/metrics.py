"""Prometheus metrics of the service: ingest (in whichever process runs it), alert delivery,
and at each scrape, from the database, open cases by state and nodes by liveness.

Names follow Prometheus conventions (`_total`, `_seconds`); the Grafana dashboard in
deploy/grafana reads them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from psycopg import AsyncConnection

from cloud.db import upkeep
from cloud.db.cases import OVERDUE
from cloud.settings import FleetSettings

if TYPE_CHECKING:
    from cloud.ingest.writer import Batch, WriteResult

INGEST_MESSAGES = Counter(
    "gridwatch_ingest_messages_total", "Messages ingest committed, by channel.", ["channel"]
)
INGEST_EVENTS_STORED = Counter(
    "gridwatch_ingest_events_stored_total", "Detection events stored (first delivery)."
)
INGEST_EVENTS_DUPLICATE = Counter(
    "gridwatch_ingest_events_duplicate_total", "Detection events delivered again, stored once."
)
INGEST_DEAD_LETTERS = Counter(
    "gridwatch_ingest_dead_letters_total",
    "Messages ingest could not store, kept with reason, by cause (invalid, too_old, "
    "conflict, crash, error, database, flood, ahead).",
    ["cause"],
)
DEAD_LETTER_ROWS = Gauge(
    "gridwatch_ingest_dead_letter_rows",
    "Dead letters kept (one row per distinct message, dropped after the retention).",
)
INGEST_RETAINED_CLEARED = Counter(
    "gridwatch_ingest_retained_cleared_total",
    "Messages a box published retained on a topic the protocol never retains, whose "
    "retained copy ingest removed from the broker (stored as any other).",
)
INGEST_THROTTLED = Counter(
    "gridwatch_ingest_throttled_total",
    "Reports of a box (health, state, config report) beyond what a box sends (a burst of "
    "10, then one each 2 s), acknowledged and not stored: the next one says the same, newer.",
    ["channel"],
)
INGEST_UNASKED_ANSWERS = Counter(
    "gridwatch_ingest_unasked_answers_total",
    "Command answers to requests the county never sent, dropped before parsing.",
)
INGEST_SUSPENDED = Counter(
    "gridwatch_ingest_suspended_total",
    "Boxes suspended for sending what the county refuses faster than any fault would "
    "(CLOUD_INGEST_SUSPEND_REFUSED_RATE): their broker accounts disabled for a while.",
)
INGEST_DROPPED_SUSPENDED = Counter(
    "gridwatch_ingest_dropped_suspended_total",
    "Messages of suspended boxes that the broker had queued before it shut them out: "
    "acknowledged and dropped, not receipted (the boxes keep their events and send them "
    "again once let back in).",
)
INGEST_DAY_REACHED = Counter(
    "gridwatch_ingest_day_reached_total",
    "Times a box reached its day's units (CLOUD_INGEST_NODE_DAILY_UNITS): the rest of its "
    "messages wait parked for the county's next day.",
)
INGEST_PARKED = Counter(
    "gridwatch_ingest_parked_total",
    "Messages of a box beyond its share of ingest (CLOUD_INGEST_NODE_RATE), parked to be "
    "stored when ingest has room.",
)
INGEST_SNAPSHOTS_DROPPED = Counter(
    "gridwatch_ingest_snapshots_dropped_total",
    "Snapshots ingest removed instead of attaching, by reason: no_event (nothing of their "
    "node vouched for them within the wait), unwritten (their batch never committed), "
    "other_node (another node's event or command), sha256 (not the bytes the event lists), "
    "variant (a picture the event does not list), quota (its box had "
    "CLOUD_INGEST_SNAPSHOT_WAITING_MAX_MB waiting already), day_quota (its box had sent "
    "CLOUD_INGEST_SNAPSHOT_DAILY_MAX_MB in the last 24 hours).",
    ["reason"],
)
INGEST_BATCH_SIZE = Histogram(
    "gridwatch_ingest_batch_size",
    "Messages per committed batch.",
    buckets=(1, 5, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 50000),
)
INGEST_COMMIT_SECONDS = Histogram(
    "gridwatch_ingest_commit_seconds",
    "Time to write and commit one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INGEST_LAG_SECONDS = Gauge(
    "gridwatch_ingest_lag_seconds",
    "How far behind the newest event of the last batch was at commit (observed → stored).",
)
ALERT_DELIVERY_SECONDS = Histogram(
    "gridwatch_alert_delivery_seconds",
    "From the case change to the alert handed to a subscriber, by path.",
    ["path"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
BROKER_REFUSED = Counter(
    "gridwatch_broker_refused_total",
    "Messages the service published that the broker refused (PUBACK reason code 0x80 or "
    "above: it delivers them to nobody), by channel and reason. They stay unpublished.",
    ["channel", "reason"],
)
INGEST_RECEIPTS = Counter(
    "gridwatch_ingest_receipts_total",
    "Receipts ingest sent boxes, by the broker's answer: sent, unheard (the box is not "
    "subscribed: an agent without receipts, or its session gone) or refused.",
    ["outcome"],
)
INGEST_SUBSCRIBED = Gauge(
    "gridwatch_ingest_subscribed",
    "1 while this process's ingest holds every subscription it asked for; 0 while it is "
    "disconnected or the broker refused one (it retries).",
)
CASES_OPEN = Gauge(
    "gridwatch_cases_open", "Cases not closed, by state and source.", ["state", "source"]
)
CASES_OVERDUE = Gauge(
    "gridwatch_cases_overdue", "Open cases that missed a deadline (as in /cases/stats)."
)
NODES = Gauge("gridwatch_nodes", "Edge nodes by liveness.", ["status"])
SEQ_GAPS_OPEN = Gauge(
    "gridwatch_seq_gaps_open",
    "Sequence gaps open for longer than the reorder window: events nodes sent and ingest "
    "has not stored (a shorter gap is ingest processes committing a stream out of order).",
)
EVENTS_MISSING = Gauge(
    "gridwatch_events_missing", "Events in the sequence gaps of gridwatch_seq_gaps_open."
)


def record_batch(batch: Batch, result: WriteResult, commit_s: float, lag_s: float) -> None:
    """After a batch committed (never before: what is counted is stored)."""
    for channel, items in (
        ("events", batch.events),
        ("state", batch.states),
        ("health", batch.health),
        ("telemetry", batch.telemetry),
        ("config_reported", batch.reports),
        ("responses", batch.responses),
        ("snapshots", batch.snapshots),
        ("dead_letters", result.dead),
    ):
        if items:
            INGEST_MESSAGES.labels(channel).inc(len(items))
    INGEST_EVENTS_STORED.inc(result.events_stored)
    INGEST_EVENTS_DUPLICATE.inc(result.events_duplicate)
    for letter in result.dead:
        INGEST_DEAD_LETTERS.labels(letter.cause.value).inc()
    INGEST_BATCH_SIZE.observe(len(batch))
    INGEST_COMMIT_SECONDS.observe(commit_s)
    if batch.events:
        INGEST_LAG_SECONDS.set(lag_s)


def record_refusal(channel: str, reason: str) -> None:
    BROKER_REFUSED.labels(channel, reason).inc()


def observe_delivery(path: str, sent_at: datetime) -> None:
    ALERT_DELIVERY_SECONDS.labels(path).observe(
        max(0.0, (datetime.now(UTC) - sent_at).total_seconds())
    )


UPKEEP_FAILING = Gauge(
    "gridwatch_upkeep_failing",
    "1 for a job keeping the time series (TimescaleDB policy, or the plain path's partitions "
    "and retention) whose last run failed or that has not succeeded for two intervals.",
    ["job"],
)
UPKEEP_LAST_SUCCESS = Gauge(
    "gridwatch_upkeep_last_success_timestamp_seconds",
    "When a job keeping the time series last succeeded (0: never seen to).",
    ["job"],
)
UPKEEP_FALLBACK_RUNS = Gauge(
    "gridwatch_upkeep_fallback_runs",
    "Runs of a TimescaleDB policy that gridwatch made itself because its scheduler had not.",
    ["job"],
)


async def refresh_from_database(
    conn: AsyncConnection, fleet: FleetSettings, reorder_window_s: float
) -> None:
    """The gauges that are facts of the database, read at scrape time (cheap: indexes)."""
    cur = await conn.execute(
        "SELECT state, source, count(*) FROM cases WHERE state <> 'closed' GROUP BY 1, 2"
    )
    CASES_OPEN.clear()
    for state, source, n in await cur.fetchall():
        CASES_OPEN.labels(state, source).set(n)
    cur = await conn.execute(
        f"SELECT count(*) FROM cases c WHERE c.state <> 'closed' AND {OVERDUE.format(now='now()')}"  # noqa: S608
    )
    row = await cur.fetchone()
    CASES_OVERDUE.set(row[0] if row else 0)
    cur = await conn.execute(
        "SELECT status, count(*) FROM node_liveness(now(), %s, %s::integer) GROUP BY 1",
        (fleet.heartbeat_s, fleet.missed_heartbeats),
    )
    NODES.clear()
    for status in ("online", "offline", "unknown"):
        NODES.labels(status).set(0)
    for status, n in await cur.fetchall():
        NODES.labels(status).set(n)
    cur = await conn.execute(
        "SELECT count(*), coalesce(sum(last_seq - first_seq + 1), 0) FROM seq_gaps "
        "WHERE closed_at IS NULL AND detected_at < now() - make_interval(secs => %s)",
        (reorder_window_s,),
    )
    gaps, missing = await cur.fetchone() or (0, 0)
    SEQ_GAPS_OPEN.set(gaps)
    EVENTS_MISSING.set(missing)
    # Exact up to a bound, the planner's estimate above it: an exact count of a flood scans
    # the whole table on every refresh, and the estimate is -1 until the table is analysed.
    cur = await conn.execute(
        "SELECT CASE WHEN c.reltuples >= %(bound)s THEN c.reltuples::bigint ELSE "
        "(SELECT count(*) FROM (SELECT 1 FROM ingest_dead_letters LIMIT %(bound)s) AS s) END "
        "FROM pg_class c WHERE c.oid = 'ingest_dead_letters'::regclass",
        {"bound": 100_000},
    )
    row = await cur.fetchone()
    DEAD_LETTER_ROWS.set(row[0] if row else 0)
    for gauge in (UPKEEP_FAILING, UPKEEP_LAST_SUCCESS, UPKEEP_FALLBACK_RUNS):
        gauge.clear()
    for job in await upkeep.statuses(conn):
        UPKEEP_FAILING.labels(job.job).set(int(job.failing))
        UPKEEP_LAST_SUCCESS.labels(job.job).set(
            job.last_success.timestamp() if job.last_success else 0
        )
        UPKEEP_FALLBACK_RUNS.labels(job.job).set(job.fallback_runs)
