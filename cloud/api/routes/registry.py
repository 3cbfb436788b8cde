"""Provisioning's side of the API: register a node and its cameras, issue and rotate its
broker account, keep its commissioning checks, retire it. All audited, all within the
caller's unit."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import ValidationError

from cloud.access import Principal
from cloud.api.contract import refusals
from cloud.api.deps import Conn, FleetOperator, FleetReader
from cloud.api.fleet_schemas import (
    CommissioningIn,
    CommissioningOut,
    CredentialsOut,
    NodeRegistrationIn,
    NodeRegistrationOut,
    PasswordHashIn,
)
from cloud.api.routes.nodes import NodeIdPath, check_node_visible
from cloud.db import audit
from cloud.db import registry as db
from cloud.errors import BadRequest, Conflict, NotFound
from cloud.org_files import CameraRow, NodeRow
from protocols.passwords import hash_password, new_password

router = APIRouter(tags=["provisioning"])


async def _registered_within(principal: Principal, conn: Conn, node_id: str) -> str:
    """The node's unit, when it is registered, active and inside the caller's unit."""
    unit = await db.registered_unit(conn, node_id)
    if unit is None or not principal.covers(unit):
        raise NotFound(f"node {node_id} is not registered (register it first)")
    return unit


@router.put("/fleet/nodes/{node_id}", response_model=NodeRegistrationOut, responses=refusals(400))
async def register_node(
    principal: FleetOperator, conn: Conn, node_id: NodeIdPath, body: NodeRegistrationIn
) -> NodeRegistrationOut:
    """Register (or update) a node and its whole camera list; idempotent, so a provisioning
    run that stopped half-way simply runs again. A retired node registered again is active
    again: that is how a replacement box takes over its predecessor's id."""
    try:
        node = NodeRow(
            node_id=node_id,
            unit_code=body.unit_code,
            tier=body.tier,
            name=body.name,
            balena_uuid=body.balena_uuid,
        )
        cameras = [
            CameraRow(**{**c.model_dump(exclude={"node_id"}), "node_id": node_id})
            for c in body.cameras
        ]
    except ValidationError as exc:
        raise BadRequest(str(exc.errors()[0]["msg"])) from exc
    ids = [c.camera_id for c in cameras]
    if len(ids) != len(set(ids)):
        raise BadRequest(f"cameras: camera ids repeat: {sorted(ids)}")
    units = {node.unit_code, *(c.unit_code for c in cameras)}
    async with conn.transaction():
        # Neither where it goes nor where it was may lie outside the caller's unit.
        for unit in units | set(await db.existing_units(conn, node_id)):
            if not principal.covers(unit):
                raise NotFound(f"unit {unit} not found")
        if unknown := await db.unknown_units(conn, sorted(units)):
            raise BadRequest(f"unknown units: {', '.join(unknown)}")
        await db.register_node(conn, node, cameras)
        await audit.record(
            conn,
            principal,
            "node.register",
            target_type="node",
            target_id=node_id,
            unit_code=node.unit_code,
            detail={"tier": node.tier.value, "cameras": ids, "balena_uuid": node.balena_uuid},
        )
    return NodeRegistrationOut(
        node_id=node_id,
        unit_code=node.unit_code,
        tier=node.tier.value,
        name=node.name,
        balena_uuid=node.balena_uuid,
        cameras=len(cameras),
    )


@router.delete("/fleet/nodes/{node_id}", status_code=status.HTTP_204_NO_CONTENT)
async def retire_node(principal: FleetOperator, conn: Conn, node_id: NodeIdPath) -> None:
    """Retire a box: out of the fleet's lists, its broker account gone (at the broker's next
    sync), its events, cases and health kept."""
    async with conn.transaction():
        unit = await _registered_within(principal, conn, node_id)
        await db.retire_node(conn, node_id)
        await audit.record(
            conn, principal, "node.retire", target_type="node", target_id=node_id, unit_code=unit
        )


@router.post(
    "/nodes/{node_id}/credentials",
    response_model=CredentialsOut,
    status_code=status.HTTP_201_CREATED,
)
async def issue_credentials(
    principal: FleetOperator, conn: Conn, node_id: NodeIdPath, rotate: bool = False
) -> CredentialsOut:
    """A new broker password for the node, shown once. Without `rotate` it replaces the
    current one at once (a new or replaced box); with `rotate` it is the next one, for a box
    in service: deliver it beside the current one, then activate it."""
    password = new_password()
    async with conn.transaction():
        unit = await _registered_within(principal, conn, node_id)
        await db.set_credentials(
            conn, node_id, hash_password(password), principal.subject, pending=rotate
        )
        await audit.record(
            conn,
            principal,
            "node.credentials.rotate" if rotate else "node.credentials.issue",
            target_type="node",
            target_id=node_id,
            unit_code=unit,
        )
    return CredentialsOut(node_id=node_id, username=node_id, password=password, pending=rotate)


@router.put("/nodes/{node_id}/credentials", status_code=status.HTTP_204_NO_CONTENT)
async def set_credentials_hash(
    principal: FleetOperator, conn: Conn, node_id: NodeIdPath, body: PasswordHashIn
) -> None:
    """The hash of a password made elsewhere: a box provisioned offline, whose bundle
    holds the password and whose registration arrives once the technician has a link."""
    async with conn.transaction():
        unit = await _registered_within(principal, conn, node_id)
        await db.set_credentials(
            conn, node_id, body.password_hash, principal.subject, pending=False
        )
        await audit.record(
            conn,
            principal,
            "node.credentials.set",
            target_type="node",
            target_id=node_id,
            unit_code=unit,
        )


@router.post(
    "/nodes/{node_id}/credentials/activate",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=refusals((409, "No rotation is pending for the box.")),
)
async def activate_credentials(principal: FleetOperator, conn: Conn, node_id: NodeIdPath) -> None:
    """The rotation's next password becomes the only one (the old one is refused from the
    broker's next sync; the box falls back to the next one when it reconnects)."""
    async with conn.transaction():
        unit = await _registered_within(principal, conn, node_id)
        if not await db.activate_pending(conn, node_id):
            raise Conflict(f"node {node_id} has no rotation pending")
        await audit.record(
            conn,
            principal,
            "node.credentials.activate",
            target_type="node",
            target_id=node_id,
            unit_code=unit,
        )


@router.post(
    "/nodes/{node_id}/commissioning",
    response_model=CommissioningOut,
    status_code=status.HTTP_201_CREATED,
)
async def record_commissioning(
    principal: FleetOperator, conn: Conn, node_id: NodeIdPath, body: CommissioningIn
) -> CommissioningOut:
    """Keep the on-site checks of a box (cameras, broker, clock, disk, model)."""
    checks = [c.model_dump() for c in body.checks]
    passed = all(c.passed for c in body.checks)
    async with conn.transaction():
        unit = await _registered_within(principal, conn, node_id)
        record_id = await db.record_commissioning(
            conn, node_id, body.checked_at, passed, checks, principal.subject
        )
        await audit.record(
            conn,
            principal,
            "node.commissioning",
            target_type="node",
            target_id=node_id,
            unit_code=unit,
            detail={"passed": passed, "failed": [c["name"] for c in checks if not c["passed"]]},
        )
    [record] = [r for r in await db.commissioning_of(conn, node_id) if r["id"] == record_id]
    return CommissioningOut(**record)


@router.get("/nodes/{node_id}/commissioning", response_model=list[CommissioningOut])
async def list_commissioning(
    principal: FleetReader, conn: Conn, node_id: NodeIdPath
) -> list[CommissioningOut]:
    await check_node_visible(principal, conn, node_id)
    return [CommissioningOut(**r) for r in await db.commissioning_of(conn, node_id)]
