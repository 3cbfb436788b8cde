"""Bring a database to the current schema: detect TimescaleDB, migrate, set policies."""

from __future__ import annotations

import contextlib
import logging

import psycopg

from cloud.cases.rule_sets import add_new_work_orders, seed
from cloud.cases.rules import load_rules
from cloud.db.migrate import migrate, migration_lock
from cloud.db.timeseries import apply_timescale_policies, maintain, use_timescale
from cloud.errors import Conflict
from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


def prepare_database(conn: psycopg.Connection, settings: CloudSettings) -> bool:
    """Migrate and set up time series; returns whether TimescaleDB is in use."""
    timescale = use_timescale(conn, settings.timescale)
    applied = migrate(conn, timescale=timescale, timezone=settings.timezone)
    # The first rules only: after that, only `gridwatch cloud rules set` changes them.
    if not seed(conn, load_rules(settings.case_rules_file)) and settings.case_rules_file:
        logger.warning(
            "CLOUD_CASE_RULES_FILE is read only into a database without rules; the rules in "
            "force are the database's (`gridwatch cloud rules show`, `... rules set`)"
        )
    # A newer gridwatch's kinds of work order join the rules in force (a new version).
    with contextlib.suppress(Conflict):  # another process added them at the same moment
        if (version := add_new_work_orders(conn)) is not None:
            logger.info("case rules version %d: new kinds of work order added", version)
    if timescale:
        with migration_lock(conn):
            apply_timescale_policies(conn, settings.retention)
    else:
        maintain(conn, timescale=False, retention=settings.retention)
    logger.info(
        "database ready: %s; migrations applied now: %s",
        "TimescaleDB" if timescale else "plain PostgreSQL (partitions, rollup tables)",
        applied or "none",
    )
    return timescale
