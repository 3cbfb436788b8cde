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
from cloud.cases.rules import FLEET_CATEGORIES, CaseRules
from cloud.db.audit import record_sync
from cloud.errors import Conflict
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


def versions(conn: psycopg.Connection, *, limit: int = 100) -> list[dict[str, Any]]:
    """The record of each set, newest first: version, set_by, set_at, reason."""
    cur = conn.execute(
        "SELECT version, set_by, set_at, reason FROM case_rule_sets ORDER BY version DESC LIMIT %s",
        (limit,),
    )
    return [{"version": v, "set_by": by, "set_at": at, "reason": why} for v, by, at, why in cur]


def ever_set_by(conn: psycopg.Connection, subject: str) -> bool:
    """Whether `subject` has ever set the rules (whatever is in force now)."""
    row = conn.execute(
        "SELECT 1 FROM case_rule_sets WHERE set_by = %s LIMIT 1", (subject,)
    ).fetchone()
    return row is not None


def version(conn: psycopg.Connection, number: int) -> CaseRules | None:
    row = conn.execute("SELECT rules FROM case_rule_sets WHERE version = %s", (number,)).fetchone()
    return None if row is None else CaseRules.model_validate(row[0])


def set_rules(
    conn: psycopg.Connection,
    rules: CaseRules,
    *,
    principal: Principal,
    reason: str,
    based_on: int | None = None,
) -> int:
    """Put `rules` in force as a new version, audited; returns the version. One transaction:
    ingest routes with the old set or the new, never a mix. With `based_on`, refused
    (Conflict) when the set in force is no longer that version: two admins editing at once
    do not silently undo each other."""
    reason = reason.strip()
    if not reason:
        raise ValueError("reason: say why the rules change")
    with conn.transaction(), conn.cursor() as cur:
        # Two changes at once: one after the other. Readers (ingest's routing) are not
        # blocked by this lock mode.
        cur.execute("LOCK TABLE case_rules IN SHARE ROW EXCLUSIVE MODE")
        if based_on is not None:
            row = cur.execute("SELECT max(version) FROM case_rule_sets").fetchone()
            in_force = row[0] if row else None
            if in_force != based_on:
                raise Conflict(
                    f"based_on: version {in_force} is in force now, not {based_on}; "
                    "read the rules again and make the change on them"
                )
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


def add_new_work_orders(conn: psycopg.Connection) -> int | None:
    """A newer gridwatch's kinds of work order (a box's own problems, for its technician)
    added to the rules in force, with their defaults, as a new version that says so;
    returns it, or None when nothing was missing. Nothing in force is changed: a kind the
    rules lack would open no work order at all."""
    with conn.transaction():  # read in a transaction, as every path here does
        found = current(conn)
    if found is None:
        return None
    number, rules, _ = found
    missing = [c for c in FLEET_CATEGORIES if c not in rules.categories]
    if not missing:
        return None
    defaults = CaseRules().categories
    completed = CaseRules.model_validate(
        {
            **rules.model_dump(mode="json"),
            "categories": {
                **rules.model_dump(mode="json")["categories"],
                **{c: defaults[c].model_dump(mode="json") for c in missing},
            },
        }
    )
    return set_rules(
        conn,
        completed,
        principal=SETUP,
        reason=f"new kinds of work order: {', '.join(missing)}",
        based_on=number,
    )
