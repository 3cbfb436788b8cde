"""The fleet as screens read it: each node's liveness, latest health and open problems, the
overview of a unit, desired and reported config, commands and their answers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.database import like_prefix
from cloud.db.cases import OVERDUE
from cloud.settings import FleetSettings
from protocols.health import ONLINE_FRACTION

# Nodes in a unit's scope (its own, or one whose cameras watch it), with their liveness,
# latest health, changes within the flapping window and open work orders. %(unit)s is a
# LIKE prefix or NULL (the county: every node, registered or not).
NODES_SQL = """
WITH live AS (
    -- A box that is not online streams nothing to the county: none of its cameras counts
    -- as connected, whatever its last report said.
    SELECT node_id, status, last_seen_at, unit_code, name, tier, balena_uuid,
           CASE WHEN status = 'online' THEN cameras_connected ELSE 0 END AS cameras_connected,
           cameras_total, cpu_percent, temperature_c, disk_used_bytes, disk_total_bytes,
           outbox_depth, outbox_oldest_age_s, dropped_events, dropped_snapshots, agent_version,
           config_version, model_profile, inference_p95_ms, uptime_s
    FROM node_liveness(%(now)s, %(heartbeat_s)s, %(missed)s::integer)
), changes AS (
    SELECT node_id, count(*) AS changes FROM fleet_transitions
    WHERE at >= %(window_start)s GROUP BY node_id
), problems AS (
    SELECT node_id, array_agg(category ORDER BY category) AS problems FROM cases
    WHERE source = 'fleet' AND state <> 'closed' AND node_id IS NOT NULL
    GROUP BY node_id
)
SELECT l.*, u.name AS unit_name, f.since AS status_since,
       coalesce(c.changes, 0) AS changes,
       coalesce(c.changes, 0) >= %(flap_changes)s AS flapping,
       coalesce(p.problems, '{}') AS problems
FROM live l
LEFT JOIN org_units u ON u.code = l.unit_code
LEFT JOIN fleet_status f ON f.node_id = l.node_id
LEFT JOIN changes c ON c.node_id = l.node_id
LEFT JOIN problems p ON p.node_id = l.node_id
WHERE %(unit)s::text IS NULL OR l.unit_code LIKE %(unit)s
   OR EXISTS (SELECT 1 FROM cameras k WHERE k.node_id = l.node_id AND k.unit_code LIKE %(unit)s)
"""

# Worst first: dead, then flapping, then the most problems, then the fewest cameras up.
WORST_FIRST = (
    "ORDER BY (status = 'offline') DESC, flapping DESC, cardinality(problems) DESC, "
    "coalesce(cameras_connected::real / nullif(cameras_total, 0), 1) ASC, node_id"
)


def _params(fleet: FleetSettings, now: datetime, unit: str | None) -> dict[str, Any]:
    return {
        "now": now,
        "heartbeat_s": fleet.heartbeat_s,
        "missed": fleet.missed_heartbeats,
        "window_start": now - timedelta(seconds=fleet.flap_window_s),
        "flap_changes": fleet.flap_changes,
        "unit": None if unit is None else like_prefix(unit),
    }


async def list_nodes(
    conn: AsyncConnection,
    fleet: FleetSettings,
    now: datetime,
    unit: str | None,
    *,
    status: str | None = None,
    node_id: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"WITH s AS ({NODES_SQL}) SELECT * FROM s "  # noqa: S608
            "WHERE (%(status)s::text IS NULL OR status = %(status)s) "
            f"AND (%(node)s::text IS NULL OR node_id = %(node)s) {WORST_FIRST} LIMIT %(limit)s",
            {**_params(fleet, now, unit), "status": status, "node": node_id, "limit": limit},
        )
        return await cur.fetchall()


async def overview(
    conn: AsyncConnection, fleet: FleetSettings, now: datetime, unit: str | None, worst: int
) -> dict[str, Any]:
    """Counts for a unit's fleet (nodes by status, cameras up, open problems by category)
    and its `worst` nodes, from one pass over the nodes."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"WITH s AS MATERIALIZED ({NODES_SQL}) "  # noqa: S608
            "SELECT count(*) AS nodes, "
            "count(*) FILTER (WHERE status = 'online') AS online, "
            "count(*) FILTER (WHERE status = 'offline') AS offline, "
            "count(*) FILTER (WHERE status = 'unknown') AS unknown, "
            "count(*) FILTER (WHERE flapping) AS flapping, "
            "coalesce(sum(cameras_total), 0) AS cameras, "
            "coalesce(sum(cameras_connected), 0) AS cameras_connected, "
            "coalesce(sum(outbox_depth) FILTER (WHERE status = 'online'), 0) AS outbox_depth, "
            "(SELECT coalesce(jsonb_object_agg(category, n), '{}') FROM (SELECT category, "
            "count(*) AS n FROM s, unnest(s.problems) AS category GROUP BY category) c) "
            "AS problems, "
            f"(SELECT coalesce(jsonb_agg(w), '[]') FROM (SELECT * FROM s {WORST_FIRST} "
            "LIMIT %(worst)s) w) AS worst "
            "FROM s",
            {**_params(fleet, now, unit), "worst": worst},
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def unit_summaries(
    conn: AsyncConnection,
    fleet: FleetSettings,
    now: datetime,
    parent: str,
    *,
    work_orders_only: bool = False,
) -> list[dict[str, Any]]:
    """The children of a unit with their open and overdue cases and node health, one level
    down at a time, and last (`own`) the unit itself with its own cases and boxes when it
    has any: the rows add up to the unit's figures. `work_orders_only`: count only the
    fleet's work orders, the cases a technician sees."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            WITH nodes_here AS ({NODES_SQL}),
            rows AS (
                -- Each child with everything under it, and the unit itself with what is its
                -- own (a town's road camera opens cases at the town, its box is the
                -- town's): without it the rows did not add up to the unit's figures.
                SELECT k.code, k.name, k.level, false AS own
                FROM org_units k WHERE k.parent_code = %(parent)s
                UNION ALL
                SELECT k.code, k.name, k.level, true FROM org_units k WHERE k.code = %(parent)s
            )
            SELECT * FROM (
                SELECT k.code, k.name, k.level, k.own, cs.open_cases, cs.overdue_cases,
                       ns.nodes, ns.nodes_offline, ns.nodes_with_problems
                FROM rows k
                CROSS JOIN LATERAL (
                    SELECT count(*) AS open_cases,
                           count(*) FILTER (WHERE {OVERDUE.format(now="%(now)s")})
                             AS overdue_cases
                    FROM cases c WHERE c.state <> 'closed'
                      AND (c.unit_code = k.code OR NOT k.own AND starts_with(c.unit_code, k.code))
                      AND (c.source = 'fleet' OR NOT %(work_orders_only)s)
                ) cs
                CROSS JOIN LATERAL (
                    SELECT count(*) AS nodes,
                           count(*) FILTER (WHERE n.status = 'offline') AS nodes_offline,
                           count(*) FILTER (WHERE cardinality(n.problems) > 0)
                             AS nodes_with_problems
                    FROM nodes_here n
                    WHERE n.unit_code = k.code OR NOT k.own AND starts_with(n.unit_code, k.code)
                ) ns
            ) r
            WHERE NOT r.own OR r.open_cases > 0 OR r.nodes > 0
            ORDER BY r.own, r.code
            """,  # noqa: S608
            {**_params(fleet, now, parent), "parent": parent, "work_orders_only": work_orders_only},
        )
        return await cur.fetchall()


async def grid_map(
    conn: AsyncConnection,
    fleet: FleetSettings,
    now: datetime,
    unit: str,
    *,
    work_orders_only: bool = False,
) -> list[dict[str, Any]]:
    """Every grid with a geometry under a unit: its open and overdue cases, its cameras and
    how many of them are down (their box offline, or the stream not connected), and the
    child of `unit` it lies in (where a click on it drills down to)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            WITH nodes_here AS ({NODES_SQL}),
            streams AS (
                -- Online by what the report's interval saw, when the edge says (as ingest
                -- counts, CameraHealth.online); else its state then.
                SELECT h.node_id, c->>'camera_id' AS camera_id,
                       coalesce((c->>'connected_fraction')::float8 >= %(online_fraction)s,
                                c->>'status' = 'connected') AS online
                FROM node_last_health h, jsonb_array_elements(h.cameras) c
            ),
            open_cases AS (
                SELECT c.unit_code, count(*) AS open_cases,
                       count(*) FILTER (WHERE {OVERDUE.format(now="%(now)s")}) AS overdue_cases
                FROM cases c WHERE c.state <> 'closed' AND c.unit_code LIKE %(unit)s
                  AND (c.source = 'fleet' OR NOT %(work_orders_only)s)
                GROUP BY c.unit_code
            ),
            grid_cameras AS (
                SELECT k.unit_code, count(*) AS cameras,
                       count(*) FILTER (WHERE n.status IS DISTINCT FROM 'online'
                                        OR NOT coalesce(s.online, false))
                         AS cameras_down
                FROM cameras k
                LEFT JOIN nodes_here n ON n.node_id = k.node_id
                LEFT JOIN streams s ON s.node_id = k.node_id AND s.camera_id = k.camera_id
                WHERE k.unit_code LIKE %(unit)s GROUP BY k.unit_code
            )
            SELECT g.code, g.name, g.geometry,
                   coalesce((SELECT c.code FROM org_units c WHERE c.parent_code = %(parent)s
                             AND starts_with(g.code, c.code)), g.code) AS child_code,
                   coalesce(o.open_cases, 0) AS open_cases,
                   coalesce(o.overdue_cases, 0) AS overdue_cases,
                   coalesce(gc.cameras, 0) AS cameras,
                   coalesce(gc.cameras_down, 0) AS cameras_down
            FROM org_units g
            LEFT JOIN open_cases o ON o.unit_code = g.code
            LEFT JOIN grid_cameras gc ON gc.unit_code = g.code
            WHERE g.level = 'grid' AND g.code LIKE %(unit)s AND g.geometry IS NOT NULL
            ORDER BY g.code
            """,  # noqa: S608
            {
                **_params(fleet, now, unit),
                "parent": unit,
                "online_fraction": ONLINE_FRACTION,
                "work_orders_only": work_orders_only,
            },
        )
        return await cur.fetchall()


async def cameras_of(conn: AsyncConnection, node_id: str) -> list[dict[str, Any]]:
    """The node's cameras: registered ones and those its health report names, with the
    stream status it reported and any open work order for the camera."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            WITH reported AS (
                SELECT c->>'camera_id' AS camera_id, c->>'status' AS stream_status,
                       (c->>'input_fps')::real AS input_fps,
                       (c->>'analysed_fps')::real AS analysed_fps,
                       (c->>'last_frame_age_s')::real AS last_frame_age_s,
                       (c->>'reconnects')::bigint AS reconnects
                FROM node_last_health h, jsonb_array_elements(h.cameras) c
                WHERE h.node_id = %(node)s
            ), registered AS (
                SELECT camera_id, name, unit_code, stream_url, lon, lat FROM cameras
                WHERE node_id = %(node)s
            )
            SELECT coalesce(g.camera_id, r.camera_id) AS camera_id, g.name, g.unit_code,
                   g.stream_url, g.lon, g.lat, r.stream_status, r.input_fps, r.analysed_fps,
                   r.last_frame_age_s, r.reconnects,
                   (SELECT array_agg(category ORDER BY category) FROM cases c
                    WHERE c.node_id = %(node)s AND c.camera_id = coalesce(g.camera_id,
                          r.camera_id) AND c.source = 'fleet' AND c.state <> 'closed')
                     AS problems
            FROM registered g FULL JOIN reported r ON r.camera_id = g.camera_id
            ORDER BY 1
            """,
            {"node": node_id},
        )
        return await cur.fetchall()


async def last_health(conn: AsyncConnection, node_id: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM node_last_health WHERE node_id = %s", (node_id,))
        return await cur.fetchone()


async def health_hourly(
    conn: AsyncConnection, node_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT bucket, samples, cpu_sum / nullif(samples, 0) AS cpu_avg, cpu_max, "
            "memory_used_max, disk_used_max, disk_total_max, temperature_max, "
            "outbox_depth_max, outbox_age_max, cameras_connected_min, cameras_total_max "
            "FROM node_health_hourly WHERE node_id = %s AND bucket >= %s AND bucket < %s "
            "ORDER BY bucket",
            (node_id, start, end),
        )
        return await cur.fetchall()


# ---- desired and reported config -----------------------------------------------------


async def config_status(conn: AsyncConnection, node_id: str) -> dict[str, Any]:
    """The newest desired config the service issued and what the node last reported."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT version, issued_at, issued_by, published_at FROM node_configs "
            "WHERE node_id = %s ORDER BY version DESC LIMIT 1",
            (node_id,),
        )
        desired = await cur.fetchone()
        await cur.execute(
            "SELECT version, status, running_version, errors, reported_at FROM config_reports "
            "WHERE node_id = %s",
            (node_id,),
        )
        reported = await cur.fetchone()
    return {"desired": desired, "reported": reported}


async def desired_config(conn: AsyncConnection, node_id: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT version, config, issued_at, issued_by, published_at FROM node_configs "
            "WHERE node_id = %s ORDER BY version DESC LIMIT 1",
            (node_id,),
        )
        return await cur.fetchone()


async def next_config_version(conn: AsyncConnection, node_id: str) -> int:
    """Above both what the service issued and what the node reports running (a node first
    configured from a file may already run a higher version than the service knows)."""
    cur = await conn.execute(
        "SELECT greatest((SELECT max(version) FROM node_configs WHERE node_id = %(n)s), "
        "(SELECT greatest(version, running_version) FROM config_reports WHERE node_id = %(n)s),"
        " 0)::bigint + 1",  # bigint: the highest version a box reports, plus one, is no int
        {"n": node_id},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 1


async def store_config(
    conn: AsyncConnection,
    node_id: str,
    version: int,
    config: dict[str, Any],
    issued_at: datetime,
    issued_by: str,
    heartbeat_s: float,
) -> None:
    await conn.execute(
        "INSERT INTO node_configs (node_id, version, config, issued_at, issued_by) "
        "VALUES (%s, %s, %s, %s, %s)",
        (node_id, version, Jsonb(config), issued_at, issued_by),
    )
    await conn.execute(
        "UPDATE nodes SET heartbeat_s = %s WHERE node_id = %s", (heartbeat_s, node_id)
    )


async def mark_config_published(
    conn: AsyncConnection, node_id: str, version: int, at: datetime
) -> None:
    await conn.execute(
        "UPDATE node_configs SET published_at = %s WHERE node_id = %s AND version = %s",
        (at, node_id, version),
    )


# ---- commands ------------------------------------------------------------------------


async def store_command(
    conn: AsyncConnection,
    request_id: UUID,
    node_id: str,
    command: str,
    args: dict[str, Any],
    issued_at: datetime,
    expires_at: datetime,
    issued_by: str,
) -> None:
    await conn.execute(
        "INSERT INTO commands (request_id, node_id, command, args, issued_at, expires_at, "
        "issued_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (request_id, node_id, command, Jsonb(args), issued_at, expires_at, issued_by),
    )


COMMANDS_SQL = """
SELECT c.request_id, c.node_id, c.command, c.args, c.issued_at, c.expires_at, c.issued_by,
       CASE WHEN r.status IS NOT NULL THEN r.status
            WHEN c.expires_at < %(now)s THEN 'expired' ELSE 'pending' END AS status,
       r.data, r.error, r.responded_at
FROM commands c LEFT JOIN command_responses r ON r.request_id = c.request_id
"""


async def list_commands(
    conn: AsyncConnection, node_id: str, now: datetime, limit: int
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            COMMANDS_SQL + "WHERE c.node_id = %(node)s ORDER BY c.issued_at DESC LIMIT %(limit)s",
            {"now": now, "node": node_id, "limit": limit},
        )
        return await cur.fetchall()


async def get_command(
    conn: AsyncConnection, node_id: str, request_id: UUID, now: datetime
) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            COMMANDS_SQL + "WHERE c.node_id = %(node)s AND c.request_id = %(id)s",
            {"now": now, "node": node_id, "id": request_id},
        )
        return await cur.fetchone()


async def suspension(conn: AsyncConnection, node_id: str) -> dict[str, Any] | None:
    """The node's suspension while it runs."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT since, until, reason, suspended_by FROM node_suspensions "
            "WHERE node_id = %s AND until > now()",
            (node_id,),
        )
        return await cur.fetchone()


async def lift_suspension(conn: AsyncConnection, node_id: str) -> bool:
    """End the node's suspension now (broker sync enables its account); False when none."""
    cur = await conn.execute(
        "DELETE FROM node_suspensions WHERE node_id = %s AND until > now()", (node_id,)
    )
    return cur.rowcount > 0
