"""The county's case rules as the database keeps them: versioned sets, each with who set it,
when and why, the newest in force (its rows in `case_rules`, which ingest joins).

A database gets its first set when it is first prepared (CLOUD_CASE_RULES_FILE, or the
built-in rules); after that only `set_rules` changes them — `gridwatch cloud rules set` and
the county admin's API — and every change is in the audit log. No other process start,
import or setting replaces them.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from cloud.access import Principal, Role
from cloud.cases.rules import CaseRules
from cloud.db.audit import record_sync
from cloud.tiers import Level

logger = logging.getLogger(__name__)

# Who sets the first rules of a database (its preparation, not a person).
SETUP = Principal("setup", Role.COUNTY_ADMIN, "", Level.COUNTY)


def current(conn: psycopg.Connection) -> tuple[int, CaseRules, dict[str, Any]] | None:
    """(version, rules, its record: set_by, set_at, reason) of the set in force."""
    row = conn.execute(
        "SELECT version, rules, set_by, set_at, reason FROM case_rule_sets "
        "ORDER BY version DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    version, rules, set_by, set_at, reason = row
    return (
        version,
        CaseRules.model_validate(rules),
        {"set_by": set_by, "set_at": set_at, "reason": reason},
    )


def set_rules(
    conn: psycopg.Connection, rules: CaseRules, *, principal: Principal, reason: str
) -> int:
    """Put `rules` in force as a new version, audited; returns the version. One transaction:
    ingest routes with the old set or the new, never a mix."""
    reason = reason.strip()
    if not reason:
        raise ValueError("reason: say why the rules change")
    with conn.transaction(), conn.cursor() as cur:
        # Two changes at once: one after the other. Readers (ingest's routing) are not
        # blocked by this lock mode.
        cur.execute("LOCK TABLE case_rules IN SHARE ROW EXCLUSIVE MODE")
        row = cur.execute(
            "INSERT INTO case_rule_sets (rules, set_by, reason) VALUES (%s, %s, %s) "
            "RETURNING version",
            (Jsonb(rules.model_dump(mode="json")), principal.subject, reason),
        ).fetchone()
        assert row is not None
        version: int = row[0]
        cur.execute("DELETE FROM case_rules")
        cur.executemany(
            "INSERT INTO case_rules (category, severity, opens_case, source, start_level, "
            "ack_s, resolve_s) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rules.table_rows(),
        )
        record_sync(
            conn,
            principal,
            "case_rules.set",
            target_type="case_rules",
            target_id=str(version),
            detail={"reason": reason},
        )
    logger.info("case rules version %d in force, set by %s: %s", version, principal.subject, reason)
    return version


def seed(conn: psycopg.Connection, rules: CaseRules) -> bool:
    """The first set of a database that has none; True when it was set here."""
    with conn.transaction():
        conn.execute("LOCK TABLE case_rule_sets IN SHARE ROW EXCLUSIVE MODE")
        if current(conn) is not None:
            return False
        set_rules(conn, rules, principal=SETUP, reason="the database's first rules")
    return True
