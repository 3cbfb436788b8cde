"""Events: query, export, one by id, its snapshots, and counts per hour or day."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from cloud.access import Principal
from cloud.api import exports
from cloud.api.contract import refusals
from cloud.api.deps import Conn, EventReader, Moment, Store, UnitQuery
from cloud.api.schemas import CountPoint, EventOut, EventPage
from cloud.db import events as db
from cloud.errors import BadRequest, NotFound
from cloud.snapshots import read_verified
from protocols.enums import EventKind, EventPhase, SnapshotVariant

router = APIRouter(tags=["events"])

MAX_RANGE = timedelta(days=400)


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=1)
    if start >= end:
        raise BadRequest("from must be before to")
    if end - start > MAX_RANGE:
        raise BadRequest("the range is limited to 400 days")
    return start, end


def _out(row: dict[str, Any]) -> EventOut:
    urls = {
        s["variant"]: f"/api/v1/events/{row['event_id']}/snapshots/{s['variant']}"
        for s in row.get("snapshots") or []
    }
    return EventOut(**{**row, "snapshots": row.get("snapshots") or []}, snapshot_urls=urls)


Start = Annotated[Moment | None, Query(alias="from", description="Inclusive; default: 24 h ago.")]
End = Annotated[Moment | None, Query(alias="to", description="Exclusive; default: now.")]


def _filter(
    start: datetime | None,
    end: datetime | None,
    unit: str | None,
    node_id: str | None,
    camera_id: str | None,
    kind: EventKind | None,
    label: str | None,
    phase: EventPhase | None,
    min_score: float | None,
) -> db.EventFilter:
    lower, upper = _range(start, end)
    return db.EventFilter(
        lower,
        upper,
        unit,
        node_id,
        camera_id,
        None if kind is None else kind.value,
        label,
        None if phase is None else phase.value,
        min_score,
    )


@router.get("/events", response_model=EventPage, responses=refusals(400))
async def list_events(
    principal: EventReader,
    conn: Conn,
    start: Start = None,
    end: End = None,
    unit: UnitQuery = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    camera_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: EventKind | None = None,
    label: Annotated[str | None, Query(max_length=64)] = None,
    phase: EventPhase | None = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> EventPage:
    """Events, newest first. Filter by time, org unit (and below), node, camera, kind,
    label, phase and minimum score."""
    where = _filter(
        start, end, principal.scope(unit), node_id, camera_id, kind, label, phase, min_score
    )
    rows, next_cursor = await db.list_events(conn, where, limit=limit, cursor=cursor)
    return EventPage(items=[_out(r) for r in rows], next_cursor=next_cursor)


CSV_COLUMNS = [
    "event_id",
    "thread_id",
    "observed_at",
    "node_id",
    "seq",
    "camera_id",
    "unit_code",
    "kind",
    "phase",
    "severity",
    "rule_id",
    "label",
    "score",
    "track_id",
    "direction",
    "dwell_s",
    "count",
    "tamper",
]


@router.get(
    "/events.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, **refusals(400)},
)
async def export_events(
    principal: EventReader,
    conn: Conn,
    start: Start = None,
    end: End = None,
    unit: UnitQuery = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    camera_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: EventKind | None = None,
    label: Annotated[str | None, Query(max_length=64)] = None,
    phase: EventPhase | None = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
) -> StreamingResponse:
    """The same filter as /events, all rows, oldest first, streamed as CSV (UTF-8 with BOM,
    so spreadsheet programs open Chinese text correctly)."""
    where = _filter(
        start, end, principal.scope(unit), node_id, camera_id, kind, label, phase, min_score
    )

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = exports.writer(buffer)
        buffer.write("\ufeff")
        writer.writerow(CSV_COLUMNS)
        async for row in db.stream_events(conn, where):
            writer.writerow(exports.row(row, CSV_COLUMNS))
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="events.csv"'},
    )


@router.get("/events/{event_id}", response_model=EventOut)
async def get_event(principal: EventReader, conn: Conn, event_id: UUID) -> EventOut:
    """One event, with links to its snapshots."""
    return _out(await _visible_event(principal, conn, event_id))


async def _visible_event(principal: Principal, conn: Conn, event_id: UUID) -> dict[str, Any]:
    row = await db.get_event(conn, event_id)
    if not principal.covers(row["unit_code"]):
        raise NotFound(f"event {event_id} not found")  # outside looks like missing
    return row


@router.get(
    "/events/{event_id}/snapshots/{variant}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **refusals(500)},
)
async def get_snapshot(
    principal: EventReader, conn: Conn, store: Store, event_id: UUID, variant: SnapshotVariant
) -> Response:
    """The event's JPEG: `frame` (box drawn) or `crop`; only while its bytes hash to the
    sha256 on record (500 otherwise: never another picture)."""
    event = await _visible_event(principal, conn, event_id)
    key, sha256 = await db.snapshot_record(conn, event_id, variant.value, event["node_id"])
    # An object store may take a while.
    data = await run_in_threadpool(read_verified, store, key, sha256)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get("/stats/events", response_model=list[CountPoint], responses=refusals(400))
async def count_events(
    principal: EventReader,
    conn: Conn,
    bucket: Annotated[Literal["hour", "day"], Query()] = "hour",
    start: Start = None,
    end: End = None,
    unit: UnitQuery = None,
    kind: EventKind | None = None,
    camera_id: Annotated[str | None, Query(max_length=64)] = None,
) -> list[CountPoint]:
    """Situations (event threads) per hour or per day (days start at the county's midnight),
    by kind, from the continuous aggregates or rollup tables."""
    lower, upper = _range(start, end)
    rows = await db.count_events(
        conn,
        bucket=bucket,
        start=lower,
        end=upper,
        unit=principal.scope(unit),
        kind=None if kind is None else kind.value,
        camera_id=camera_id,
    )
    return [CountPoint(**r) for r in rows]
