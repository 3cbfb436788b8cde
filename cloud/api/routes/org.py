"""The org tree and its people: browse within the caller's unit, export as CSV/GeoJSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from psycopg import AsyncConnection
from pydantic import BaseModel

from cloud.access import Principal
from cloud.api.deps import AuditReader, Caller, Conn, OrgManager
from cloud.api.schemas import ErrorOut
from cloud.db import audit
from cloud.db import org as db
from cloud.errors import Conflict, NotFound
from cloud.org_files import (
    DEPARTMENT_COLUMNS,
    STAFF_COLUMNS,
    UNIT_COLUMNS,
    write_geometries,
    write_rows,
)
from protocols.identifiers import ORG_CODE_PATTERN

router = APIRouter(tags=["org"])

Code = Annotated[str, Path(pattern=ORG_CODE_PATTERN)]


class UnitOut(BaseModel):
    code: str
    parent_code: str | None
    level: str
    name: str
    category: str


class UnitDetail(UnitOut):
    geometry: dict[str, Any] | None
    children: list[UnitOut]


@router.get("/org/units", response_model=list[UnitOut])
async def list_units(principal: Caller, conn: Conn) -> list[dict[str, Any]]:
    """The caller's unit and everything below it, parents before children."""
    return await db.units_within(conn, principal.unit_code)


@router.get("/org/units/{code}", response_model=UnitDetail)
async def get_unit(code: Code, principal: Caller, conn: Conn) -> UnitDetail:
    unit = await db.unit(conn, code)
    if unit is None or not principal.covers(code):
        raise NotFound("unit not found")
    children = [u for u in await db.units_within(conn, code) if u["parent_code"] == code]
    return UnitDetail(**unit, children=[UnitOut(**c) for c in children])


def _csv(text: str, name: str) -> Response:
    return Response(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/org/units.csv", response_class=Response)
async def export_units(principal: Caller, conn: Conn) -> Response:
    rows = await db.export_rows_async(conn, db.UNITS_SQL, principal.unit_code)
    return _csv(write_rows(rows, UNIT_COLUMNS), "units.csv")


@router.get("/org/units.geojson", response_class=Response)
async def export_geometry(principal: Caller, conn: Conn) -> Response:
    rows = await db.export_rows_async(conn, db.UNITS_SQL, principal.unit_code)
    return Response(write_geometries(rows), media_type="application/geo+json")


@router.get("/org/departments.csv", response_class=Response)
async def export_departments(principal: Caller, conn: Conn) -> Response:
    rows = await db.export_rows_async(conn, db.DEPARTMENTS_SQL, principal.unit_code)
    return _csv(write_rows(rows, DEPARTMENT_COLUMNS), "departments.csv")


@router.get("/org/staff.csv", response_class=Response)
async def export_staff(principal: OrgManager, conn: Conn) -> Response:
    """People of the caller's unit and below (never their password hashes)."""
    rows = await db.export_rows_async(conn, db.STAFF_SQL, principal.unit_code)
    return _csv(write_rows(rows, STAFF_COLUMNS), "staff.csv")


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target_type: str
    target_id: str
    unit_code: str
    remote_addr: str
    detail: dict[str, Any]


@router.get("/audit", response_model=list[AuditEntry], tags=["audit"])
async def audit_log(
    principal: AuditReader,
    conn: Conn,
    target_type: str | None = None,
    target_id: str | None = None,
    after_id: int | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Oldest first; page with `after_id` = the last id seen."""
    return await audit.entries(
        conn,
        unit_code=principal.scope(None),
        target_type=target_type,
        target_id=target_id,
        after_id=after_id,
        limit=min(max(limit, 1), 1000),
    )


Username = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class UserActive(BaseModel):
    username: str
    active: bool


@router.post(
    "/org/users/{username}/deactivate",
    response_model=UserActive,
    responses={
        404: {"model": ErrorOut, "description": "No such user in your jurisdiction."},
        409: {"model": ErrorOut, "description": "The caller's own account."},
    },
)
async def deactivate_user(username: Username, principal: OrgManager, conn: Conn) -> UserActive:
    """Stop a person signing in: their access tokens stop working within seconds (audited)."""
    return await _set_active(conn, principal, username, active=False)


@router.post(
    "/org/users/{username}/reactivate",
    response_model=UserActive,
    responses={404: {"model": ErrorOut, "description": "No such user in your jurisdiction."}},
)
async def reactivate_user(username: Username, principal: OrgManager, conn: Conn) -> UserActive:
    """Let a deactivated person sign in again (audited)."""
    return await _set_active(conn, principal, username, active=True)


async def _set_active(
    conn: AsyncConnection, principal: Principal, username: str, *, active: bool
) -> UserActive:
    if not active and username == principal.subject:
        # Nobody locks themselves out (an admin's own token would stop at once).
        raise Conflict("you cannot deactivate yourself: another org manager can")
    async with conn.transaction():
        unit = await db.set_active(conn, username, active, principal.unit_code)
        if unit is None:
            raise NotFound(f"no user {username} in your jurisdiction")
        await audit.record(
            conn,
            principal,
            "user.reactivate" if active else "user.deactivate",
            target_type="user",
            target_id=username,
            unit_code=unit,
        )
    return UserActive(username=username, active=active)
