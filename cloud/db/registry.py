"""Writing the fleet registry from provisioning: a node and its cameras, its broker account,
its commissioning checks, its retirement. Every change is audited by the caller's route."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.db.org import UPSERT_CAMERAS_SQL, camera_params
from cloud.org_files import CameraRow, NodeRow


async def registered_unit(conn: AsyncConnection, node_id: str) -> str | None:
    """The unit of a registered, active node (None when unknown or retired)."""
    cur = await conn.execute(
        "SELECT unit_code FROM nodes WHERE node_id = %s AND retired_at IS NULL", (node_id,)
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def existing_units(conn: AsyncConnection, node_id: str) -> list[str]:
    """Units the node and its cameras are registered in now (whatever their state)."""
    cur = await conn.execute(
        "SELECT unit_code FROM nodes WHERE node_id = %(n)s "
        "UNION SELECT unit_code FROM cameras WHERE node_id = %(n)s AND unit_code IS NOT NULL",
        {"n": node_id},
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def unknown_units(conn: AsyncConnection, codes: Sequence[str]) -> list[str]:
    cur = await conn.execute(
        "SELECT c FROM unnest(%s::text[]) AS c WHERE c NOT IN (SELECT code FROM org_units)",
        (list(codes),),
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def register_node(conn: AsyncConnection, node: NodeRow, cameras: list[CameraRow]) -> None:
    """The node as given, its cameras exactly the list (others leave the registry; their
    events stay). A retired node registered again is active again (a replaced box)."""
    await conn.execute(
        "INSERT INTO nodes (node_id, unit_code, tier, name, balena_uuid) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (node_id) DO UPDATE SET "
        "unit_code = excluded.unit_code, tier = excluded.tier, name = excluded.name, "
        "balena_uuid = excluded.balena_uuid, retired_at = NULL, updated_at = now()",
        (node.node_id, node.unit_code, node.tier.value, node.name, node.balena_uuid),
    )
    await conn.execute(
        "DELETE FROM cameras WHERE node_id = %s AND NOT camera_id = ANY(%s)",
        (node.node_id, [c.camera_id for c in cameras]),
    )
    async with conn.cursor() as cur:
        await cur.executemany(UPSERT_CAMERAS_SQL, camera_params(cameras))


async def retire_node(conn: AsyncConnection, node_id: str) -> bool:
    """Out of the fleet and off the broker; its events, cases and health stay."""
    cur = await conn.execute(
        "UPDATE nodes SET retired_at = now(), updated_at = now() "
        "WHERE node_id = %s AND retired_at IS NULL",
        (node_id,),
    )
    await conn.execute("DELETE FROM node_credentials WHERE node_id = %s", (node_id,))
    return cur.rowcount == 1


async def set_credentials(
    conn: AsyncConnection, node_id: str, password_hash: str, issued_by: str, *, pending: bool
) -> None:
    """A new password: the current one, or (`pending`) the next one of a rotation."""
    if pending:
        cur = await conn.execute(
            "UPDATE node_credentials SET pending_hash = %s, issued_at = now(), issued_by = %s "
            "WHERE node_id = %s",
            (password_hash, issued_by, node_id),
        )
        if cur.rowcount == 1:
            return
    await conn.execute(
        "INSERT INTO node_credentials (node_id, password_hash, issued_by) VALUES (%s, %s, %s) "
        "ON CONFLICT (node_id) DO UPDATE SET password_hash = excluded.password_hash, "
        "pending_hash = NULL, issued_at = now(), issued_by = excluded.issued_by",
        (node_id, password_hash, issued_by),
    )


async def activate_pending(conn: AsyncConnection, node_id: str) -> bool:
    cur = await conn.execute(
        "UPDATE node_credentials SET password_hash = pending_hash, pending_hash = NULL "
        "WHERE node_id = %s AND pending_hash IS NOT NULL",
        (node_id,),
    )
    return cur.rowcount == 1


async def record_commissioning(
    conn: AsyncConnection,
    node_id: str,
    checked_at: datetime,
    passed: bool,
    checks: list[dict[str, Any]],
    recorded_by: str,
) -> int:
    cur = await conn.execute(
        "INSERT INTO commissioning (node_id, checked_at, passed, checks, recorded_by) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (node_id, checked_at, passed, Jsonb(checks), recorded_by),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def commissioning_of(conn: AsyncConnection, node_id: str) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, node_id, checked_at, passed, checks, recorded_by, recorded_at "
            "FROM commissioning WHERE node_id = %s ORDER BY checked_at DESC LIMIT 50",
            (node_id,),
        )
        return await cur.fetchall()


def suspended_nodes(conn: psycopg.Connection) -> set[str]:
    """Nodes whose suspension runs now (cloud.ingest.suspend)."""
    rows = conn.execute("SELECT node_id FROM node_suspensions WHERE until > now()").fetchall()
    return {str(r[0]) for r in rows}


def next_lift_s(conn: psycopg.Connection) -> float | None:
    """Seconds until the next suspension ends, if one runs."""
    row = conn.execute(
        "SELECT extract(epoch FROM min(until) - now()) FROM node_suspensions WHERE until > now()"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def broker_accounts(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(username, hash) of every active node: the username is the node id (the ACL's %u)."""
    rows = conn.execute(
        "SELECT c.node_id, c.password_hash FROM node_credentials c "
        "JOIN nodes n ON n.node_id = c.node_id WHERE n.retired_at IS NULL ORDER BY c.node_id"
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]
