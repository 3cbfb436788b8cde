"""Bring a database to the current schema: detect TimescaleDB, migrate, set policies."""

from __future__ import annotations

import logging

import psycopg

from cloud.cases.rules import load_rules
from cloud.db.migrate import migrate
from cloud.db.timeseries import apply_timescale_policies, maintain, use_timescale
from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


def prepare_database(conn: psycopg.Connection, settings: CloudSettings) -> bool:
    """Migrate and set up time series; returns whether TimescaleDB is in use."""
    timescale = use_timescale(conn, settings.timescale)
    applied = migrate(conn, timescale=timescale, timezone=settings.timezone)
    write_case_rules(conn, load_rules(settings.case_rules_file).table_rows())
    if timescale:
        apply_timescale_policies(conn, settings.retention)
    else:
        maintain(conn, timescale=False, retention=settings.retention)
    logger.info(
        "database ready: %s; migrations applied now: %s",
        "TimescaleDB" if timescale else "plain PostgreSQL (partitions, rollup tables)",
        applied or "none",
    )
    return timescale


def write_case_rules(conn: psycopg.Connection, rows: list[tuple[object, ...]]) -> None:
    """Replace the routing rules in one transaction: ingest sees the old set or the new."""
    with conn.transaction(), conn.cursor() as cur:
        # Processes starting together each write the rules: one at a time. Readers (ingest's
        # routing) are not blocked by this lock mode.
        cur.execute("LOCK TABLE case_rules IN SHARE ROW EXCLUSIVE MODE")
        cur.execute("DELETE FROM case_rules")

        cur.executemany(
            "INSERT INTO case_rules (category, severity, opens_case, source, start_level, "
            "ack_s, resolve_s) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
