"""SQL for the org tree, departments, people and API tokens (signing keys: cloud.signing)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.access import Principal, Role
from cloud.database import like_prefix
from cloud.org_files import CameraRow, DepartmentRow, KnownUnit, NodeRow, StaffRow, UnitRow
from cloud.sign_in import FORGET_SQL, account_key
from cloud.tiers import Level


def known_units(conn: psycopg.Connection) -> dict[str, KnownUnit]:
    return {
        code: KnownUnit(code, Level(level), parent)
        for code, level, parent in conn.execute("SELECT code, level, parent_code FROM org_units")
    }


def upsert_units(conn: psycopg.Connection, rows: list[UnitRow], geometries: dict[str, Any]) -> None:
    """Insert or update; parents first, so the foreign key holds row by row."""
    ordered = sorted(rows, key=lambda r: len(r.code))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO org_units (code, parent_code, level, name, category, geometry) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (code) DO UPDATE SET "
            "parent_code = excluded.parent_code, name = excluded.name, "
            "category = excluded.category, "
            "geometry = coalesce(excluded.geometry, org_units.geometry), updated_at = now()",
            [
                (
                    r.code,
                    r.parent_code,
                    r.level.value,
                    r.name,
                    r.category,
                    Jsonb(geometries[r.code]) if r.code in geometries else None,
                )
                for r in ordered
            ],
        )


def set_geometries(conn: psycopg.Connection, geometries: dict[str, Any]) -> list[str]:
    """Returns the codes that are not in the tree (nothing is written for them)."""
    known = set(known_units(conn))
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE org_units SET geometry = %s, updated_at = now() WHERE code = %s",
            [(Jsonb(g), code) for code, g in geometries.items() if code in known],
        )
    return sorted(set(geometries) - known)


def upsert_departments(conn: psycopg.Connection, rows: list[DepartmentRow]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO departments (code, name, unit_code) VALUES (%s, %s, %s) "
            "ON CONFLICT (code) DO UPDATE SET name = excluded.name, unit_code = excluded.unit_code",
            [(r.code, r.name, r.unit_code) for r in rows],
        )


def department_codes(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT code FROM departments")]


def upsert_staff(
    conn: psycopg.Connection, rows: list[StaffRow], passwords: dict[str, str] | None = None
) -> None:
    """People from a staff list; a password hash is set only where one is given."""
    hashes = passwords or {}
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO users (username, display_name, role, unit_code, department_code, "
            "duty, employment, phone, password_hash) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (username) DO UPDATE SET "
            "display_name = excluded.display_name, role = excluded.role, "
            "unit_code = excluded.unit_code, department_code = excluded.department_code, "
            "duty = excluded.duty, employment = excluded.employment, phone = excluded.phone, "
            "password_hash = coalesce(excluded.password_hash, users.password_hash)",
            [
                (
                    r.username,
                    r.display_name,
                    r.role.value,
                    r.unit_code,
                    r.department_code,
                    r.duty,
                    r.employment,
                    r.phone,
                    hashes.get(r.username),
                )
                for r in rows
            ],
        )


# Cameras as given, from an org import or from provisioning (registry).
UPSERT_CAMERAS_SQL = (
    "INSERT INTO cameras (node_id, camera_id, unit_code, name, stream_url, lon, lat) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (node_id, camera_id) DO UPDATE "
    "SET unit_code = excluded.unit_code, name = excluded.name, "
    "stream_url = excluded.stream_url, lon = excluded.lon, lat = excluded.lat"
)


def camera_params(rows: list[CameraRow]) -> list[tuple[Any, ...]]:
    return [(r.node_id, r.camera_id, r.unit_code, r.name, r.stream_url, r.lon, r.lat) for r in rows]


def upsert_cameras(conn: psycopg.Connection, rows: list[CameraRow]) -> None:
    with conn.cursor() as cur:
        cur.executemany(UPSERT_CAMERAS_SQL, camera_params(rows))


def upsert_nodes(conn: psycopg.Connection, rows: list[NodeRow]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO nodes (node_id, unit_code, tier, name, balena_uuid) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (node_id) DO UPDATE SET "
            "unit_code = excluded.unit_code, tier = excluded.tier, name = excluded.name, "
            "balena_uuid = excluded.balena_uuid, updated_at = now()",
            [(r.node_id, r.unit_code, r.tier.value, r.name, r.balena_uuid) for r in rows],
        )


# A new password or a reactivation lifts the account's sign-in lock (cloud.sign_in's
# FORGET_SQL): an attacker who keeps failing cannot keep a person out once an admin acted.


def set_password_hash(conn: psycopg.Connection, username: str, password_hash: str) -> bool:
    cur = conn.execute(
        "UPDATE users SET password_hash = %s WHERE username = %s", (password_hash, username)
    )
    if cur.rowcount == 1:
        conn.execute(FORGET_SQL, (account_key(username),))
    return cur.rowcount == 1


def set_active_sync(conn: psycopg.Connection, username: str, active: bool) -> str | None:
    """Deactivate or reactivate a user (their tokens stop: see migration 0033); returns the
    user's unit, None when there is no such user."""
    row = conn.execute(
        "UPDATE users SET active = %s WHERE username = %s RETURNING unit_code",
        (active, username),
    ).fetchone()
    if row and active:
        conn.execute(FORGET_SQL, (account_key(username),))
    return str(row[0]) if row else None


async def set_active(conn: AsyncConnection, username: str, active: bool, within: str) -> str | None:
    """As `set_active_sync`, for a user in the unit `within` (or below) only."""
    cur = await conn.execute(
        "UPDATE users SET active = %s WHERE username = %s AND unit_code LIKE %s "
        "RETURNING unit_code",
        (active, username, like_prefix(within)),
    )
    row = await cur.fetchone()
    if row and active:
        await conn.execute(FORGET_SQL, (account_key(username),))
    return str(row[0]) if row else None


UNITS_SQL = (
    "SELECT code, parent_code, level, name, category, geometry FROM org_units "
    "WHERE code LIKE %s ORDER BY code"
)
DEPARTMENTS_SQL = (
    "SELECT code, name, unit_code FROM departments WHERE unit_code LIKE %s ORDER BY code"
)
NODES_SQL = (
    "SELECT node_id, unit_code, tier, name, balena_uuid FROM nodes WHERE unit_code LIKE %s "
    "ORDER BY node_id"
)
CAMERAS_SQL = (
    "SELECT node_id, camera_id, unit_code, name, stream_url, lon, lat FROM cameras "
    "WHERE unit_code LIKE %s "
    "ORDER BY node_id, camera_id"
)
STAFF_SQL = (
    "SELECT username, display_name, role, unit_code, department_code, duty, employment, phone "
    "FROM users WHERE unit_code LIKE %s ORDER BY username"
)


def export_rows(conn: psycopg.Connection, query: str, unit_code: str) -> list[dict[str, Any]]:
    """Rows of UNITS_SQL, DEPARTMENTS_SQL or STAFF_SQL for a unit and everything below."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (like_prefix(unit_code),)).fetchall()


async def export_rows_async(
    conn: AsyncConnection, query: str, unit_code: str
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, (like_prefix(unit_code),))
        return await cur.fetchall()


# ---- the API's side (async) -------------------------------------------------------------


async def user_for_login(conn: AsyncConnection, username: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT username, role, unit_code, level, department_code, password_hash, active, "
            "token_version FROM users JOIN org_units ON org_units.code = users.unit_code "
            "WHERE username = %s",
            (username,),
        )
        return await cur.fetchone()


async def token_version(conn: AsyncConnection, username: str) -> int | None:
    """The user's current token version; None when unknown or deactivated."""
    cur = await conn.execute(
        "SELECT token_version FROM users WHERE username = %s AND active", (username,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def principal_for_api_token(
    conn: AsyncConnection, secret_sha256: bytes, now: datetime
) -> Principal | None:
    row = await (
        await conn.execute(
            "UPDATE api_tokens t SET last_used_at = %(now)s FROM org_units u "
            "WHERE t.secret_sha256 = %(hash)s AND u.code = t.unit_code "
            "AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > %(now)s) "
            "RETURNING t.name, t.role, t.unit_code, u.level, t.department_code",
            {"now": now, "hash": secret_sha256},
        )
    ).fetchone()
    if row is None:
        return None
    return Principal(f"token:{row[0]}", Role(row[1]), row[2], Level(row[3]), row[4])


async def insert_api_token(
    conn: AsyncConnection,
    *,
    token_id: UUID,
    name: str,
    secret_sha256: bytes,
    role: Role,
    unit_code: str,
    department_code: str | None,
    created_by: str,
    expires_at: datetime | None,
) -> None:
    await conn.execute(
        "INSERT INTO api_tokens (token_id, name, secret_sha256, role, unit_code, "
        "department_code, created_by, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            token_id,
            name,
            secret_sha256,
            role.value,
            unit_code,
            department_code,
            created_by,
            expires_at,
        ),
    )


async def revoke_api_token(conn: AsyncConnection, token_id: UUID, unit_code: str) -> bool:
    cur = await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s AND unit_code LIKE %s "
        "AND revoked_at IS NULL",
        (token_id, like_prefix(unit_code)),
    )
    return cur.rowcount == 1


async def unit(conn: AsyncConnection, code: str) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT code, parent_code, level, name, category, geometry FROM org_units "
            "WHERE code = %s",
            (code,),
        )
        return await cur.fetchone()


async def units_within(conn: AsyncConnection, unit_code: str) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT code, parent_code, level, name, category FROM org_units "
            "WHERE code LIKE %s ORDER BY code",
            (like_prefix(unit_code),),
        )
        return await cur.fetchall()


async def department_exists(conn: AsyncConnection, code: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM departments WHERE code = %s", (code,))
    return await cur.fetchone() is not None


def usernames_without_password(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT username FROM users WHERE password_hash IS NULL")}


def user_exists(conn: psycopg.Connection, username: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM users WHERE username = %s", (username,)).fetchone() is not None
    )
