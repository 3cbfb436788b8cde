"""Nodes: their state, health history, cameras, desired config and drift, commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, status
from fastapi.concurrency import run_in_threadpool
from psycopg.rows import class_row

from cloud.access import Principal
from cloud.api.contract import refusals
from cloud.api.deps import Conn, FleetOperator, FleetReader, Moment, Publisher, Settings
from cloud.api.fleet_schemas import (
    CameraOut,
    CommandIn,
    CommandOut,
    ConfigDrift,
    DesiredConfigIn,
    DesiredConfigOut,
    DesiredOut,
    HealthHour,
    NodeDetail,
    ReportedOut,
)
from cloud.api.schemas import HealthPoint, NodeStateOut
from cloud.commands import make_command, send_command
from cloud.database import like_prefix
from cloud.db import audit
from cloud.db import nodes as db
from cloud.errors import BrokerRefused, BrokerUnavailable, Conflict, NotFound
from cloud.tiers import Level
from protocols import NodeConfig, encode
from protocols.config import MAX_CONFIG_VERSION
from protocols.identifiers import NODE_ID_PATTERN
from protocols.topics import config_desired_topic

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
    if await cur.fetchone() is None:  # the same answer whether it exists elsewhere or not
        raise NotFound(f"no node {node_id} in your jurisdiction")


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
    start: Annotated[Moment | None, Query(alias="from")] = None,
    end: Annotated[Moment | None, Query(alias="to")] = None,
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


@router.get("/nodes/{node_id}", response_model=NodeDetail)
async def node_detail(
    principal: FleetReader, conn: Conn, settings: Settings, node_id: NodeIdPath
) -> NodeDetail:
    """Everything the node page shows: liveness, latest health, cameras, config drift."""
    await check_node_visible(principal, conn, node_id)
    now = datetime.now(UTC)
    rows = await db.list_nodes(conn, settings.fleet, now, None, node_id=node_id, limit=1)
    if not rows:
        raise NotFound(f"node {node_id} is not registered and has never reported")
    health = await db.last_health(conn, node_id) or {}
    return NodeDetail(
        **rows[0],
        memory_used_bytes=health.get("memory_used_bytes"),
        memory_total_bytes=health.get("memory_total_bytes"),
        cameras=[CameraOut(**c) for c in await db.cameras_of(conn, node_id)],
        config=config_drift(**await db.config_status(conn, node_id)),
        suspension=await db.suspension(conn, node_id),
    )


@router.delete("/nodes/{node_id}/suspension", status_code=status.HTTP_204_NO_CONTENT)
async def lift_suspension(
    principal: FleetOperator,
    conn: Conn,
    node_id: NodeIdPath,
    reason: Annotated[
        str,
        Query(
            min_length=4,
            max_length=500,
            description="Why it may come back now (what was fixed): kept in the audit log.",
        ),
    ],
) -> None:
    """Let a suspended box back before its suspension ends (once what made it send junk is
    fixed): `gridwatch cloud broker sync --follow` enables its account. Audited, with the
    reason."""
    await check_node_visible(principal, conn, node_id)
    async with conn.transaction():
        if not await db.lift_suspension(conn, node_id):
            raise NotFound(f"node {node_id} is not suspended")
        await audit.record(
            conn,
            principal,
            "node.suspension_lifted",
            target_type="node",
            target_id=node_id,
            detail={"reason": reason},
        )


def config_drift(desired: dict[str, Any] | None, reported: dict[str, Any] | None) -> ConfigDrift:
    """In sync when the node applied the newest version the service issued; pending while
    it has not answered it; rejected with the node's errors."""
    want = DesiredOut(**desired) if desired else None
    got = ReportedOut(**reported) if reported else None
    if want is None and got is None:
        return ConfigDrift(state="unknown", desired=None, reported=None, behind_since=None)
    if got is None or (want is not None and got.version < want.version):
        return ConfigDrift(
            state="pending",
            desired=want,
            reported=got,
            behind_since=want.issued_at if want else None,
        )
    if got.status == "rejected":
        return ConfigDrift(
            state="rejected",
            desired=want,
            reported=got,
            behind_since=want.issued_at if want else got.reported_at,
        )
    return ConfigDrift(state="in_sync", desired=want, reported=got, behind_since=None)


@router.get("/nodes/{node_id}/health/hourly", response_model=list[HealthHour])
async def node_health_hourly(
    principal: FleetReader,
    conn: Conn,
    node_id: NodeIdPath,
    start: Annotated[Moment | None, Query(alias="from")] = None,
    end: Annotated[Moment | None, Query(alias="to")] = None,
) -> list[HealthHour]:
    """Hourly health (averages, extremes), oldest first (default: the last 7 days)."""
    await check_node_visible(principal, conn, node_id)
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=7)
    return [HealthHour(**r) for r in await db.health_hourly(conn, node_id, start, end)]


# What a camera's password reads as in a config the API shows; sent back, it means "keep".
PASSWORD_MASK = "********"  # noqa: S105 (a mask, not a password)


def _masked(config: dict[str, Any]) -> dict[str, Any]:
    cameras = [
        {**c, "password": PASSWORD_MASK} if c.get("password") else c
        for c in config.get("cameras", [])
    ]
    return {**config, "cameras": cameras}


def _unmasked(cameras: list[dict[str, Any]], before: dict[str, Any] | None) -> None:
    """A config read, changed and put back carries the mask, not the password: each such
    camera keeps the password it had (the mask went to the box as its camera login)."""
    kept = {c["camera_id"]: c.get("password") for c in (before or {}).get("cameras", [])}
    for camera in cameras:
        secret = camera.get("password")
        if secret is not None and secret.get_secret_value() == PASSWORD_MASK:
            camera["password"] = kept.get(camera["camera_id"])


@router.get("/nodes/{node_id}/config", response_model=DesiredConfigOut)
async def get_desired_config(
    principal: FleetReader, conn: Conn, node_id: NodeIdPath
) -> DesiredConfigOut:
    """The newest desired config the service issued to the node (passwords masked)."""
    await check_node_visible(principal, conn, node_id)
    row = await db.desired_config(conn, node_id)
    if row is None:
        raise NotFound(f"no desired config issued to node {node_id}")
    return DesiredConfigOut(**{**row, "config": _masked(row["config"])})


@router.put(
    "/nodes/{node_id}/config",
    response_model=DesiredConfigOut,
    responses=refusals((409, "The box reports the highest config version there is.")),
)
async def put_desired_config(
    principal: FleetOperator,
    conn: Conn,
    publisher: Publisher,
    node_id: NodeIdPath,
    body: DesiredConfigIn,
) -> DesiredConfigOut:
    """Issue a new desired config: numbered above every version known for the node, kept,
    audited and published retained on its `config/desired` topic, where the node takes it
    without a restart and reports back (see `GET /nodes/{node_id}`: config drift)."""
    await check_node_visible(principal, conn, node_id)
    now = datetime.now(UTC)
    async with conn.transaction():
        version = await db.next_config_version(conn, node_id)
        if version > MAX_CONFIG_VERSION:
            # Only a box's own report can have got there: it leaves no newer number.
            raise Conflict(
                f"node {node_id} reports config version {version - 1}, the highest a config "
                "may have: no newer one can be issued (provision the box again)"
            )
        fields = body.model_dump(exclude={"node_id", "version", "issued_at"})
        before = await db.desired_config(conn, node_id)
        _unmasked(fields["cameras"], before["config"] if before else None)
        config = NodeConfig(**fields, node_id=node_id, version=version, issued_at=now)
        wire = config.model_dump(mode="json")
        await db.store_config(
            conn, node_id, version, wire, now, principal.subject, config.publish.health_interval_s
        )
        await audit.record(
            conn,
            principal,
            "node.config",
            target_type="node",
            target_id=node_id,
            detail={"version": version, "cameras": len(config.cameras)},
        )
    # After the commit: the version is on record even when the broker is away; then the
    # answer is 503 and the config relay publishes it once the broker is back.
    try:
        await run_in_threadpool(
            publisher.publish, [(config_desired_topic(node_id), encode(config))], retain=True
        )
    except BrokerRefused as exc:
        raise BrokerRefused(
            f"{exc}; config version {version} is kept, unpublished, and tried again later",
            exc.refused,
        ) from exc
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(
            f"{exc}; config version {version} is kept and will be published to the node "
            "when the broker is back"
        ) from exc
    await db.mark_config_published(conn, node_id, version, datetime.now(UTC))
    return await get_desired_config(principal, conn, node_id)


@router.post(
    "/nodes/{node_id}/commands", response_model=CommandOut, status_code=status.HTTP_202_ACCEPTED
)
async def post_command(
    principal: FleetOperator,
    conn: Conn,
    publisher: Publisher,
    node_id: NodeIdPath,
    body: CommandIn,
) -> CommandOut:
    """Send a command; the node answers through its responses topic and the answer shows
    here and in the node's command list. A node offline gets it when it returns (its
    session is persistent) unless the command expired first."""
    await check_node_visible(principal, conn, node_id)
    command = make_command(node_id, body.command, **body.args)
    # Published first: a command that never left is not listed as pending.
    await run_in_threadpool(send_command, publisher, command)
    async with conn.transaction():
        await db.store_command(
            conn,
            command.request_id,
            node_id,
            command.command,
            command.args,
            command.issued_at,
            command.expires_at or command.issued_at,
            principal.subject,
        )
        await audit.record(
            conn,
            principal,
            "node.command",
            target_type="node",
            target_id=node_id,
            detail={"command": command.command, "request_id": str(command.request_id)},
        )
    return await get_command(principal, conn, node_id, command.request_id)


@router.get("/nodes/{node_id}/commands", response_model=list[CommandOut])
async def list_commands(
    principal: FleetReader,
    conn: Conn,
    node_id: NodeIdPath,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[CommandOut]:
    """Commands sent to the node, newest first, with their answers (pending until one comes,
    expired when none came in time)."""
    await check_node_visible(principal, conn, node_id)
    rows = await db.list_commands(conn, node_id, datetime.now(UTC), limit)
    return [CommandOut(**r) for r in rows]


@router.get("/nodes/{node_id}/commands/{request_id}", response_model=CommandOut)
async def get_command(
    principal: FleetReader, conn: Conn, node_id: NodeIdPath, request_id: UUID
) -> CommandOut:
    await check_node_visible(principal, conn, node_id)
    row = await db.get_command(conn, node_id, request_id, datetime.now(UTC))
    if row is None:
        raise NotFound("command not found")
    return CommandOut(**row)
