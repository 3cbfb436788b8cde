"""What the fleet monitor reads and writes: each node's liveness and latest health, the
changes of its status, and the technician's work orders for its problems."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from cloud.cases.rules import NODE_PROBLEMS
from cloud.db.alerts import LOCK_SQL
from cloud.db.routing import CLOSE_SQL
from cloud.settings import FleetSettings
from protocols.health import ONLINE_FRACTION

# One fleet monitor at a time across API instances (a transaction-scoped try-lock).
MONITOR_LOCK = 1735876979

# Missed heartbeats passed to node_liveness while ingest itself is stalled: then silence
# says nothing about the nodes, and only their own state (a last will) counts.
IGNORE_SILENCE = 1_000_000


@dataclass(frozen=True)
class NodeView:
    """One node as the monitor sees it at `now`."""

    node_id: str
    status: str  # online | offline | unknown (registered, never heard)
    previous: str | None  # the status the monitor recorded last time
    since: datetime | None  # when `previous` began
    disk_used_bytes: int | None = None
    disk_total_bytes: int | None = None
    outbox_depth: int | None = None
    outbox_oldest_age_s: float | None = None
    config_error: str | None = None  # the latest config report was a rejection
    suspended: str | None = None  # why, while its suspension runs (cloud.ingest.suspend)
    clean_stop: bool = False  # offline because its agent said it stops (clean_shutdown)
    previous_clean: bool = False  # `previous` was such an offline


@dataclass(frozen=True)
class Problem:
    node_id: str
    category: str
    detail: str


def ingest_stalled(conn: psycopg.Connection, now: datetime, fleet: FleetSettings) -> bool:
    """No ingest process committed for two heartbeat intervals: heartbeats are not being
    read, so their absence must not make the whole fleet offline."""
    row = conn.execute("SELECT max(committed_at) FROM ingest_progress").fetchone()
    newest = row[0] if row else None
    return newest is not None and newest < now - timedelta(seconds=2 * fleet.heartbeat_s)


def read_nodes(
    conn: psycopg.Connection, now: datetime, fleet: FleetSettings, *, trust_silence: bool
) -> list[NodeView]:
    """The nodes the monitor must look at: those whose status changed, that are offline,
    changed lately, near a health threshold, report a rejected config or have a work order
    open. A healthy, steady node costs the monitor nothing beyond the scan."""
    missed = fleet.missed_heartbeats if trust_silence else IGNORE_SILENCE
    near = fleet.disk_full_ratio - 0.05  # where an open disk_full order closes
    rows = conn.execute(
        "SELECT l.node_id, l.status, f.status, f.since, l.disk_used_bytes, l.disk_total_bytes, "
        "l.outbox_depth, l.outbox_oldest_age_s, "
        "CASE WHEN r.status = 'rejected' THEN coalesce(r.errors->0->>'field', '') || ': ' || "
        "coalesce(r.errors->0->>'message', '') END, s.reason, "
        "l.status = 'offline' AND coalesce(ns.status = 'offline' "
        "AND ns.reason = 'clean_shutdown', false), coalesce(f.clean, false) "
        "FROM node_liveness(%(now)s, %(heartbeat_s)s, %(missed)s::integer) l "
        "LEFT JOIN fleet_status f ON f.node_id = l.node_id "
        "LEFT JOIN node_state ns ON ns.node_id = l.node_id "
        "LEFT JOIN config_reports r ON r.node_id = l.node_id "
        "LEFT JOIN node_suspensions s ON s.node_id = l.node_id AND s.until > %(now)s "
        "WHERE l.status IS DISTINCT FROM f.status OR l.status <> 'online' "
        "OR r.status = 'rejected' OR s.node_id IS NOT NULL "
        "OR l.disk_used_bytes >= %(near)s * l.disk_total_bytes "
        "OR l.outbox_oldest_age_s >= %(age)s OR l.outbox_depth >= %(depth)s "
        "OR l.node_id IN (SELECT node_id FROM fleet_transitions) "
        "OR l.node_id IN (SELECT node_id FROM cases WHERE source = 'fleet' "
        "AND state <> 'closed' AND category = ANY(%(categories)s)) "
        "ORDER BY l.node_id",
        {
            "now": now,
            "heartbeat_s": fleet.heartbeat_s,
            "missed": missed,
            "near": near,
            # Half the limits: where an open backlog order closes.
            "age": fleet.outbox_backlog_age_s / 2,
            "depth": fleet.outbox_backlog_depth / 2,
            "categories": list(NODE_PROBLEMS),
        },
    ).fetchall()
    return [NodeView(*row) for row in rows]


def record_changes(conn: psycopg.Connection, nodes: Iterable[NodeView], now: datetime) -> int:
    """Store each node's new status, and a transition for each change that counts towards
    flapping: not for a node seen for the first time, nor for a stop in order and the
    return from it. Returns the number of transitions."""
    changed = [n for n in nodes if n.status != "unknown" and n.status != n.previous]
    if not changed:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO fleet_status (node_id, status, since, clean) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (node_id) DO UPDATE SET status = excluded.status, "
            "since = excluded.since, clean = excluded.clean",
            [(n.node_id, n.status, now, n.clean_stop) for n in changed],
        )
        flaps = [
            n
            for n in changed
            if n.previous is not None
            and not n.clean_stop
            and not (n.previous == "offline" and n.previous_clean)
        ]
        cur.executemany(
            "INSERT INTO fleet_transitions (node_id, at, status) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [(n.node_id, now, n.status) for n in flaps],
        )
    return len(flaps)


def recent_changes(conn: psycopg.Connection, now: datetime, fleet: FleetSettings) -> dict[str, int]:
    """Status changes per node within the flapping window (older ones are forgotten)."""
    start = now - timedelta(seconds=fleet.flap_window_s)
    conn.execute("DELETE FROM fleet_transitions WHERE at < %s", (start,))
    rows = conn.execute(
        "SELECT node_id, count(*) FROM fleet_transitions WHERE at >= %s GROUP BY node_id",
        (start,),
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def open_problems(conn: psycopg.Connection) -> set[tuple[str, str]]:
    rows = conn.execute(
        "SELECT node_id, category FROM cases WHERE source = 'fleet' AND state <> 'closed' "
        "AND category = ANY(%s) AND node_id IS NOT NULL",
        (list(NODE_PROBLEMS),),
    ).fetchall()
    return {(str(r[0]), str(r[1])) for r in rows}


# Work orders for node problems: for the town of the node's unit (the county when the node
# is not registered); a problem already open is left as it is.
OPEN_SQL = """
WITH root AS (
    SELECT code FROM org_units WHERE level = 'county' ORDER BY code LIMIT 1
), problems AS (
    SELECT p.node_id, p.category, p.severity, p.detail,
           p.node_id || '/-/' || p.category AS merge_key,
           coalesce(u.code, root.code) AS unit_code, r.start_level, r.ack_s, r.resolve_s
    FROM unnest(%(nodes)s::text[], %(categories)s::text[], %(severities)s::text[],
                %(details)s::text[]) AS p (node_id, category, severity, detail)
    CROSS JOIN root
    LEFT JOIN nodes n ON n.node_id = p.node_id
    LEFT JOIN org_units u ON u.code = n.unit_code
    JOIN case_rules r ON r.category = p.category AND r.severity = p.severity AND r.opens_case
), opened AS (
    INSERT INTO cases (case_id, source, category, severity, state, title, unit_code,
                       responsible_unit_code, node_id, merge_key, event_count, first_event_at,
                       last_event_at, opened_at, ack_due_at, resolve_due_at)
    SELECT gen_random_uuid(), 'fleet', p.category, p.severity, 'intake',
           p.category || ' · ' || p.node_id, p.unit_code,
           coalesce((SELECT a.code FROM org_units a
                     WHERE a.level = p.start_level AND starts_with(p.unit_code, a.code)),
                    p.unit_code),
           p.node_id, p.merge_key, 1, now(), now(), now(),
           now() + make_interval(secs => p.ack_s), now() + make_interval(secs => p.resolve_s)
    FROM problems p
    ORDER BY p.merge_key
    ON CONFLICT (merge_key) WHERE state <> 'closed' AND merge_key IS NOT NULL DO NOTHING
    RETURNING case_id, merge_key, state
), history AS (
    INSERT INTO case_history (case_id, at, actor, action, from_state, to_state, detail)
    SELECT o.case_id, now(), 'system', 'open', NULL, o.state,
           jsonb_build_object('reason', p.detail)
    FROM opened o JOIN problems p USING (merge_key)
)
SELECT count(*) FROM opened
"""

CLEARED_SQL = CLOSE_SQL.replace(
    "{targets}",
    """
    SELECT c.case_id, c.state FROM cases c
    JOIN unnest(%(nodes)s::text[], %(categories)s::text[]) AS p (node_id, category)
      ON c.merge_key = p.node_id || '/-/' || p.category
    WHERE c.state <> 'closed'
    ORDER BY c.case_id
    FOR UPDATE OF c""",
)

# Camera work orders whose camera streams again by its box's health: a report made wholly
# after the order's latest event (two health intervals later) that counts the camera online.
# Their end event may never come: an agent restarted while the camera was down does not
# know the situation it had open, and the order stayed open beside "cameras 4/4".
RECOVERED_SQL = CLOSE_SQL.replace(
    "{targets}",
    """
    SELECT c.case_id, c.state FROM cases c
    JOIN node_last_health h ON h.node_id = c.node_id
    CROSS JOIN LATERAL jsonb_array_elements(h.cameras) x
    WHERE c.source = 'fleet' AND c.category = 'camera_offline' AND c.state <> 'closed'
      AND x->>'camera_id' = c.camera_id
      AND h.received_at >= c.last_event_at + make_interval(secs => 2 * %(heartbeat_s)s)
      AND h.received_at >= %(now)s - make_interval(secs => 2 * %(heartbeat_s)s)
      AND x->>'status' = 'connected'
      AND coalesce((x->>'connected_fraction')::float8 >= %(online_fraction)s, true)
    ORDER BY c.case_id
    FOR UPDATE OF c""",
)


def close_recovered_cameras(conn: psycopg.Connection, fleet: FleetSettings, now: datetime) -> int:
    """Close camera_offline orders of cameras their box reports streaming again."""
    conn.execute(LOCK_SQL)  # before case rows, as everywhere
    row = conn.execute(
        RECOVERED_SQL,
        {
            "heartbeat_s": fleet.heartbeat_s,
            "now": now,
            "online_fraction": ONLINE_FRACTION,
            "reason": "camera streaming again (its box's health)",
        },
    ).fetchone()
    return int(row[0]) if row else 0


CLEARED_REASON = {
    "node_offline": "node back online",
    "node_flapping": "node link stable again",
    "disk_full": "disk space freed",
    "outbox_backlog": "outbox drained",
    "config_rejected": "config applied",
    "node_suspended": "suspension over: the box may connect again",
}


def open_work_orders(conn: psycopg.Connection, problems: list[Problem]) -> int:
    if not problems:
        return 0
    conn.execute(LOCK_SQL)  # before case rows, as everywhere
    row = conn.execute(
        OPEN_SQL,
        {
            "nodes": [p.node_id for p in problems],
            "categories": [p.category for p in problems],
            "severities": [NODE_PROBLEMS[p.category].value for p in problems],
            "details": [p.detail for p in problems],
        },
    ).fetchone()
    return int(row[0]) if row else 0


def close_work_orders(conn: psycopg.Connection, cleared: list[tuple[str, str]]) -> int:
    closed = 0
    if cleared:
        conn.execute(LOCK_SQL)
    for category in sorted({c for _, c in cleared}):
        nodes = sorted(n for n, c in cleared if c == category)
        row = conn.execute(
            CLEARED_SQL,
            {
                "nodes": nodes,
                "categories": [category] * len(nodes),
                "reason": CLEARED_REASON[category],
            },
        ).fetchone()
        closed += int(row[0]) if row else 0
    return closed
