"""The fleet of a unit: overview, nodes worst first, and the map one level down."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from cloud.api.deps import Conn, FleetReader, Settings, UnitQuery
from cloud.api.fleet_schemas import FleetOverview, NodeSummary, UnitSummary
from cloud.db import nodes as db

router = APIRouter(prefix="/fleet", tags=["fleet"])


@router.get("/overview", response_model=FleetOverview)
async def fleet_overview(
    principal: FleetReader, conn: Conn, settings: Settings, unit: UnitQuery = None
) -> FleetOverview:
    """Nodes online, offline, unknown and flapping; cameras up; open work orders by
    category; the twenty worst nodes. A node is offline as soon as its last will arrives,
    or after `missed_heartbeats` silent intervals."""
    scope = principal.scope(unit)
    now = datetime.now(UTC)
    return FleetOverview(
        unit_code=scope,
        generated_at=now,
        **await db.overview(conn, settings.fleet, now, scope, worst=20),
    )


@router.get("/nodes", response_model=list[NodeSummary])
async def fleet_nodes(
    principal: FleetReader,
    conn: Conn,
    settings: Settings,
    unit: UnitQuery = None,
    status: Literal["online", "offline", "unknown"] | None = None,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 500,
) -> list[NodeSummary]:
    """The unit's nodes, worst first: offline, flapping, most problems, fewest cameras up."""
    rows = await db.list_nodes(
        conn, settings.fleet, datetime.now(UTC), principal.scope(unit), status=status, limit=limit
    )
    return [NodeSummary(**r) for r in rows]


@router.get("/units", response_model=list[UnitSummary])
async def fleet_units(
    principal: FleetReader, conn: Conn, settings: Settings, unit: UnitQuery = None
) -> list[UnitSummary]:
    """The children of a unit (default: the caller's) with open and overdue cases and node
    health: the org tree, one level down at a time."""

    scope = principal.scope(unit) or principal.unit_code
    rows = await db.unit_summaries(
        conn,
        settings.fleet,
        datetime.now(UTC),
        scope,
        work_orders_only=principal.sees_only_work_orders,
    )
    return [UnitSummary(**r) for r in rows]


@router.get("/map", response_class=Response)
async def fleet_map(
    principal: FleetReader, conn: Conn, settings: Settings, unit: UnitQuery = None
) -> Response:
    """GeoJSON of the grids under a unit (default: the caller's), each with open and overdue
    cases, cameras and cameras down, and `child_code`: the child of the unit it lies in."""
    scope = principal.scope(unit) or principal.unit_code
    rows = await db.grid_map(
        conn,
        settings.fleet,
        datetime.now(UTC),
        scope,
        work_orders_only=principal.sees_only_work_orders,
    )
    features = [
        {
            "type": "Feature",
            "geometry": row.pop("geometry"),
            "properties": row,
        }
        for row in rows
    ]
    body = {"type": "FeatureCollection", "unit_code": scope, "features": features}
    return Response(orjson.dumps(body), media_type="application/geo+json")
