"""Nodes: their connection state and health history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from psycopg.rows import class_row

from cloud.access import Principal
from cloud.api.deps import Conn, FleetReader
from cloud.api.schemas import HealthPoint, NodeStateOut
from cloud.database import like_prefix
from cloud.errors import NotFound
from cloud.tiers import Level
from protocols.identifiers import NODE_ID_PATTERN

router = APIRouter(tags=["nodes"])

NodeIdPath = Annotated[str, Path(pattern=NODE_ID_PATTERN, description="Edge node id.")]


async def check_node_visible(principal: Principal, conn: Conn, node_id: str) -> None:
    """The county sees every node; below it, a node that serves the caller's unit or whose
    cameras watch it."""
    if principal.level is Level.COUNTY:
        return
    cur = await conn.execute(
        "SELECT 1 FROM nodes WHERE node_id = %(node)s AND unit_code LIKE %(unit)s "
        "UNION ALL SELECT 1 FROM cameras WHERE node_id = %(node)s AND unit_code LIKE %(unit)s "
        "LIMIT 1",
        {"node": node_id, "unit": like_prefix(principal.unit_code)},
    )
    if await cur.fetchone() is None:
        raise NotFound(f"node {node_id} has never reported")


@router.get("/nodes/{node_id}/state", response_model=NodeStateOut)
async def node_state(principal: FleetReader, conn: Conn, node_id: NodeIdPath) -> NodeStateOut:
    """The node's last known connection state (its retained state or last will)."""
    await check_node_visible(principal, conn, node_id)
    async with conn.cursor(row_factory=class_row(NodeStateOut)) as cur:
        await cur.execute(
            "SELECT node_id, status, reason, sent_at, received_at, agent_version, "
            "boot_id FROM node_state WHERE node_id = %s",
            (node_id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"node {node_id} has never reported")
    return row


@router.get("/nodes/{node_id}/health", response_model=list[HealthPoint])
async def node_health(
    principal: FleetReader,
    conn: Conn,
    node_id: NodeIdPath,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[HealthPoint]:
    """Health reports, newest first (default: the last 24 hours)."""
    await check_node_visible(principal, conn, node_id)
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=1)
    async with conn.cursor(row_factory=class_row(HealthPoint)) as cur:
        await cur.execute(
            "SELECT sent_at, cpu_percent, memory_used_bytes, disk_used_bytes, disk_total_bytes, "
            "temperature_c, outbox_depth, outbox_oldest_age_s, dropped_events, "
            "dropped_snapshots, cameras_connected, cameras_total, config_version, agent_version "
            "FROM node_health WHERE node_id = %s AND sent_at >= %s AND sent_at < %s "
            "ORDER BY sent_at DESC LIMIT %s",
            (node_id, start, end, limit),
        )
        return await cur.fetchall()
