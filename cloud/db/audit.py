"""The append-only audit log: who changed what, when and from where."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.access import Principal
from cloud.database import like_prefix

_INSERT = (
    "INSERT INTO audit_log (actor, role, action, target_type, target_id, unit_code, "
    "remote_addr, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


def _values(
    principal: Principal,
    action: str,
    target_type: str,
    target_id: str,
    unit_code: str,
    detail: dict[str, Any],
) -> tuple[Any, ...]:
    return (
        principal.subject,
        principal.role.value,
        action,
        target_type,
        target_id,
        unit_code,
        principal.remote_addr,
        Jsonb(detail),
    )


async def record(
    conn: AsyncConnection,
    principal: Principal,
    action: str,
    *,
    target_type: str,
    target_id: str,
    unit_code: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Write in the caller's transaction, so the change and its record commit together."""
    await conn.execute(
        _INSERT, _values(principal, action, target_type, target_id, unit_code, detail or {})
    )


def record_sync(
    conn: psycopg.Connection,
    principal: Principal,
    action: str,
    *,
    target_type: str,
    target_id: str,
    unit_code: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        _INSERT, _values(principal, action, target_type, target_id, unit_code, detail or {})
    )


async def entries(
    conn: AsyncConnection,
    *,
    unit_code: str | None,
    target_type: str | None,
    target_id: str | None,
    after_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Oldest first after `after_id`; `unit_code` None: the whole county."""
    clauses = [sql.SQL("true")]
    if unit_code is not None:
        clauses.append(sql.SQL("unit_code LIKE %(unit)s"))
    if target_type:
        clauses.append(sql.SQL("target_type = %(target_type)s"))
    if target_id:
        clauses.append(sql.SQL("target_id = %(target_id)s"))
    if after_id is not None:
        clauses.append(sql.SQL("id > %(after_id)s"))
    query = sql.SQL(
        "SELECT id, at, actor, role, action, target_type, target_id, unit_code, remote_addr, "
        "detail FROM audit_log WHERE {} ORDER BY id LIMIT %(limit)s"
    ).format(sql.SQL(" AND ").join(clauses))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query,
            {
                "unit": None if unit_code is None else like_prefix(unit_code),
                "target_type": target_type,
                "target_id": target_id,
                "after_id": after_id,
                "limit": limit,
            },
        )
        return await cur.fetchall()
