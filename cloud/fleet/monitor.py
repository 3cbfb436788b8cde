"""The fleet monitor: every few seconds, which nodes are offline, flapping or unwell, and
the technician's work orders (with their alerts) opened and closed to match.

A node's status on screens is computed when asked (`node_liveness`), so a last will shows at
once; the monitor only decides about work orders, with a hold-down (`offline_after_s`) so a
short drop opens nothing, flapping suppression (many changes in a window: one
node_flapping order, not one per drop) and hysteresis on the health thresholds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from cloud.db import fleet as db
from cloud.db.fleet import NodeView, Problem
from cloud.settings import FleetSettings

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Decision:
    open: list[Problem]
    close: list[tuple[str, str]]


def decide(
    nodes: Iterable[NodeView],
    changes: dict[str, int],
    already_open: set[tuple[str, str]],
    fleet: FleetSettings,
    now: datetime,
) -> Decision:
    """Which work orders to open and which to close. A problem opens past its threshold and
    stays open until clearly gone (lower thresholds), so a value near a limit does not open
    and close orders in turn. Health figures of a node that is not online are stale: its
    health problems are neither opened nor closed meanwhile."""
    to_open: list[Problem] = []
    to_close: list[tuple[str, str]] = []

    def want(node_id: str, category: str, present: bool, detail: str) -> None:
        is_open = (node_id, category) in already_open
        if present and not is_open:
            to_open.append(Problem(node_id, category, detail))
        elif not present and is_open:
            to_close.append((node_id, category))

    for node in nodes:
        nid = node.node_id
        want(nid, "node_suspended", node.suspended is not None, f"{node.suspended}"[:500])
        if node.status == "unknown":
            continue
        flaps = changes.get(nid, 0)
        flapping_open = (nid, "node_flapping") in already_open
        flapping = flaps >= (2 if flapping_open else fleet.flap_changes)
        want(nid, "node_flapping", flapping, f"{flaps} online/offline changes")

        offline_for = (now - node.since).total_seconds() if node.since else 0.0
        if node.status == "offline":
            # Suspended, it is offline because the county shut it out: that order says so.
            if (nid, "node_offline") not in already_open and not flapping and not node.suspended:
                want(
                    nid,
                    "node_offline",
                    offline_for >= fleet.offline_after_s,
                    f"offline for {offline_for:.0f} s",
                )
            continue
        want(nid, "node_offline", False, "")

        if node.disk_total_bytes:
            used = (node.disk_used_bytes or 0) / node.disk_total_bytes
            limit = fleet.disk_full_ratio - (0.05 if (nid, "disk_full") in already_open else 0)
            want(nid, "disk_full", used >= limit, f"disk {used:.0%} full")
        if node.outbox_depth is not None:
            backlog_open = (nid, "outbox_backlog") in already_open
            scale = 0.5 if backlog_open else 1.0
            age = node.outbox_oldest_age_s or 0.0
            present = (
                age >= fleet.outbox_backlog_age_s * scale
                or node.outbox_depth >= fleet.outbox_backlog_depth * scale
            )
            want(
                nid,
                "outbox_backlog",
                present,
                f"{node.outbox_depth} unsent, oldest {age:.0f} s",
            )
        want(
            nid,
            "config_rejected",
            node.config_error is not None,
            f"config rejected: {node.config_error}"[:500],
        )
    return Decision(to_open, to_close)


@dataclass(frozen=True)
class MonitorRun:
    changes: int
    opened: int
    closed: int
    skipped: bool = False


def check_fleet(conn: psycopg.Connection, fleet: FleetSettings, now: datetime) -> MonitorRun:
    """One pass in one transaction; another instance's pass in progress means skip this one."""
    with conn.transaction():
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (db.MONITOR_LOCK,)).fetchone()
        if not got or not got[0]:
            return MonitorRun(0, 0, 0, skipped=True)
        stalled = db.ingest_stalled(conn, now, fleet)
        if stalled:
            logger.warning("ingest has committed nothing lately: node silence ignored")
        nodes = db.read_nodes(conn, now, fleet, trust_silence=not stalled)
        changed = db.record_changes(conn, nodes, now)
        # After recording: `since` of a node that changed now is now.
        current = [
            NodeView(**{**n.__dict__, "previous": n.status, "since": now})
            if n.status != n.previous and n.status != "unknown"
            else n
            for n in nodes
        ]
        decision = decide(
            current, db.recent_changes(conn, now, fleet), db.open_problems(conn), fleet, now
        )
        opened = db.open_work_orders(conn, decision.open)
        closed = db.close_work_orders(conn, decision.close)
        closed += db.close_recovered_cameras(conn, fleet, now)
    if opened or closed:
        logger.info("fleet work orders opened=%d closed=%d", opened, closed)
    return MonitorRun(changed, opened, closed)


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, application_name="gridwatch-fleet-monitor")


async def monitor_loop(
    url: str, fleet: FleetSettings, clock: Clock = lambda: datetime.now(UTC)
) -> None:
    """Forever, every `check_interval_s`: one pass on a connection of its own (a thread:
    the pass is a few statements, the API's event loop never waits for it)."""
    conn: psycopg.Connection | None = None
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await asyncio.to_thread(_connect, url)
                await asyncio.to_thread(check_fleet, conn, fleet, clock())
            except psycopg.Error as exc:
                logger.warning("fleet monitor pass failed: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
            await asyncio.sleep(fleet.check_interval_s)
    finally:
        if conn is not None:
            conn.close()
