"""Cases: the closed loop from intake to closure, scoped to the caller's jurisdiction."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from datetime import date
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from uuid6 import uuid7

from cloud.access import Permission
from cloud.api import exports
from cloud.api.case_schemas import (
    CaseActionIn,
    CaseCheck,
    CaseDetail,
    CaseIn,
    CaseOut,
    CasePage,
    CasePhoto,
)
from cloud.api.contract import refusals
from cloud.api.deps import CaseReader, Conn, Moment, Publisher, Settings, Store, UnitQuery
from cloud.cases.actions import ActionRequest, NewCase, act, open_case
from cloud.cases.timers import utc_now
from cloud.commands import send_command
from cloud.db import audit
from cloud.db import cases as db
from cloud.db import events as events_db
from cloud.errors import BadRequest, BrokerUnavailable, Conflict, Forbidden, NotFound
from cloud.snapshots import read_verified, sha256_hex
from protocols.enums import CaseState
from protocols.identifiers import uuid7_time

logger = logging.getLogger(__name__)
router = APIRouter(tags=["cases"])

State = Annotated[list[CaseState] | None, Query(description="One or more states.")]
Open = Annotated[bool, Query(alias="open", description="Only cases not closed.")]
Start = Annotated[Moment | None, Query(alias="from", description="Opened at or after.")]
End = Annotated[Moment | None, Query(alias="to", description="Opened before.")]
Source = Annotated[str | None, Query(pattern="^(camera|fleet|report|operator)$")]


def case_filter(
    principal: CaseReader,
    unit: UnitQuery = None,
    state: State = None,
    open_only: Open = False,
    category: str | None = None,
    source: Source = None,
    start: Start = None,
    end: End = None,
    department: str | None = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    camera_id: Annotated[str | None, Query(max_length=64)] = None,
    false_alarm: Annotated[
        bool | None, Query(description="Only (or no) false alarms: what to tune a camera by.")
    ] = None,
) -> db.CaseFilter:
    """The filters of the case list and its export, inside the caller's jurisdiction."""
    return db.CaseFilter(
        unit=principal.scope(unit),
        states=tuple(s.value for s in state or ()),
        open_only=open_only,
        category=category,
        source=source,
        start=start,
        end=end,
        department=department,
        node_id=node_id,
        camera_id=camera_id,
        false_alarm=false_alarm,
    )


CaseFilterQuery = Annotated[db.CaseFilter, Depends(case_filter)]


@router.get(
    "/cases",
    response_model=CasePage,
    responses=refusals((400, "`cursor` is not one this API gave out.")),
)
async def list_cases(
    principal: CaseReader,
    conn: Conn,
    case_filter: CaseFilterQuery,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> CasePage:
    """Newest first. A grid worker's "my open cases" is `?open=true` with their token; a
    camera's false alarms, `?node_id=..&camera_id=..&false_alarm=true`."""
    rows, next_cursor = await db.list_cases(
        conn, principal, case_filter, cursor=cursor, limit=limit
    )
    return CasePage(items=[CaseOut(**r) for r in rows], next_cursor=next_cursor)


EXPORT_COLUMNS = (
    "case_id",
    "source",
    "category",
    "severity",
    "state",
    "title",
    "unit_code",
    "responsible_unit_code",
    "supervision_level",
    "escalations",
    "event_count",
    "opened_at",
    "acknowledged_at",
    "dispatched_at",
    "resolved_at",
    "closed_at",
    "close_reason",
    "false_alarm",
    "satisfaction",
)


@router.get("/cases.csv", response_class=StreamingResponse)
async def export_cases(
    principal: CaseReader, conn: Conn, case_filter: CaseFilterQuery
) -> StreamingResponse:
    """Every matching case as CSV (UTF-8 with BOM, as /events.csv, so that Excel reads the
    Chinese; with the times that measure acknowledge, dispatch and resolve), streamed page
    by page."""

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        out.write("\ufeff")
        writer = exports.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        cursor: str | None = None
        while True:
            rows, cursor = await db.list_cases(
                conn, principal, case_filter, cursor=cursor, limit=500
            )
            for row in rows:
                writer.writerow(exports.row(row, EXPORT_COLUMNS))
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if cursor is None:
                return

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="cases.csv"'},
    )


class CaseDay(BaseModel):
    day: date = Field(description="The county's calendar day (CLOUD_TIMEZONE).")
    opened: int
    acknowledged_p50_s: float | None
    resolved_p50_s: float | None


class CaseStats(BaseModel):
    cases: int
    open: int
    escalated: int
    false_alarms: int
    acknowledged_p50_s: float | None = Field(description="Opened → acknowledged, median.")
    acknowledged_p90_s: float | None
    dispatched_p50_s: float | None = Field(description="Opened → dispatched, median.")
    dispatched_p90_s: float | None
    resolved_p50_s: float | None = Field(description="Opened → resolved, median.")
    resolved_p90_s: float | None
    satisfaction_avg: float | None
    overdue: int = Field(
        description="Open cases that missed a deadline to acknowledge or resolve (escalated or "
        "pressed since count as well: their new deadline does not make them on time)."
    )
    by_state: dict[str, int]
    daily: list[CaseDay] = Field(description="Per day (county time) of opening.")


@router.get("/stats/cases", response_model=CaseStats)
async def case_stats(
    principal: CaseReader,
    conn: Conn,
    settings: Settings,
    unit: UnitQuery = None,
    category: str | None = None,
    source: Source = None,
    start: Start = None,
    end: End = None,
) -> CaseStats:
    """How the loop performs in a unit: times to acknowledge, dispatch and resolve, cases by
    state, escalations, false alarms and satisfaction (cases opened in the range)."""
    case_filter = db.CaseFilter(
        unit=principal.scope(unit), category=category, source=source, start=start, end=end
    )
    return CaseStats(**await db.case_stats(conn, principal, case_filter, settings.timezone))


@router.get("/cases/{case_id}", response_model=CaseDetail)
async def get_case(case_id: UUID, principal: CaseReader, conn: Conn) -> CaseDetail:
    case = await db.get_case(conn, principal, case_id)
    if case is None:
        raise NotFound("case not found")
    checks = [
        CaseCheck(
            **{k: v for k, v in c.items() if k != "has_snapshot"},
            snapshot_url=(
                f"/api/v1/cases/{case_id}/checks/{c['request_id']}/snapshot"
                if c["has_snapshot"]
                else None
            ),
        )
        for c in await db.checks(conn, case_id)
    ]
    before = None
    if case["first_event_id"] is not None and await events_db.has_snapshot(
        conn, case["first_event_id"], "frame", case["node_id"]
    ):
        before = f"/api/v1/events/{case['first_event_id']}/snapshots/frame"
    return CaseDetail(
        **case,
        assignments=await db.assignments(conn, case_id),
        history=await db.history(conn, case_id),
        threads=await db.threads(conn, case_id),
        checks=checks,
        before_snapshot_url=before,
        photos=[
            CasePhoto(**p, url=f"/api/v1/cases/{case_id}/photos/{p['photo_id']}")
            for p in await db.photos(conn, case_id)
        ],
    )


PHOTO_MAX_BYTES = 8 << 20
PHOTO_TYPES = {b"\xff\xd8\xff": ("image/jpeg", "jpg"), b"\x89PNG\r\n\x1a\n": ("image/png", "png")}


@router.post(
    "/cases/{case_id}/photos",
    response_model=CasePhoto,
    status_code=201,
    responses=refusals(
        (400, "Larger than 8 MiB, or not a JPEG or PNG image."), (409, "The case is closed.")
    ),
)
async def upload_photo(
    case_id: UUID, photo: UploadFile, principal: CaseReader, conn: Conn, store: Store
) -> CasePhoto:
    """A JPEG or PNG (up to 8 MiB) for a report, a handling note or the result; refer to it
    by `photo_id` in an action's `photos`."""
    case = await db.get_case(conn, principal, case_id)
    if case is None:
        raise NotFound("case not found")
    if not (principal.can(Permission.HANDLE_CASES) or principal.can(Permission.REPORT_CASES)):
        raise Forbidden(f"a {principal.role.value} may not add photos")
    if case["state"] == "closed":
        raise Conflict("the case is closed")
    data = await photo.read(PHOTO_MAX_BYTES + 1)
    if len(data) > PHOTO_MAX_BYTES:
        raise BadRequest("photo: larger than 8 MiB")
    kind = next((t for magic, t in PHOTO_TYPES.items() if data.startswith(magic)), None)
    if kind is None:
        raise BadRequest("photo: not a JPEG or PNG image")
    photo_id = uuid7()
    key = f"cases/{uuid7_time(photo_id):%Y/%m/%d}/{case_id}/{photo_id}.{kind[1]}"
    await run_in_threadpool(store.put, key, data)  # before the row that points at it
    now = utc_now()
    async with conn.transaction():
        await db.add_photo(
            conn,
            photo_id=photo_id,
            case_id=case_id,
            uploaded_by=principal.subject,
            uploaded_at=now,
            content_type=kind[0],
            size_bytes=len(data),
            sha256=sha256_hex(data),
            storage_key=key,
        )
        await db.add_history(
            conn,
            case_id,
            at=now,
            actor=principal.subject,
            action="photo",
            from_state=case["state"],
            to_state=case["state"],
            detail={"photo_id": str(photo_id)},
        )
        await audit.record(
            conn,
            principal,
            "case.photo",
            target_type="case",
            target_id=str(case_id),
            unit_code=case["unit_code"],
            detail={"photo_id": str(photo_id), "bytes": len(data)},
        )
    return CasePhoto(
        photo_id=photo_id,
        uploaded_by=principal.subject,
        uploaded_at=now,
        content_type=kind[0],
        size_bytes=len(data),
        url=f"/api/v1/cases/{case_id}/photos/{photo_id}",
    )


@router.get(
    "/cases/{case_id}/photos/{photo_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
async def get_photo(
    case_id: UUID, photo_id: UUID, principal: CaseReader, conn: Conn, store: Store
) -> Response:
    if await db.get_case(conn, principal, case_id) is None:
        raise NotFound("case not found")
    photo = next((p for p in await db.photos(conn, case_id) if p["photo_id"] == photo_id), None)
    if photo is None:
        raise NotFound("photo not found")
    data = await run_in_threadpool(store.get, photo["storage_key"])
    return Response(data, media_type=photo["content_type"], headers={"Cache-Control": "private"})


@router.get(
    "/cases/{case_id}/checks/{request_id}/snapshot",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **refusals(500)},
)
async def check_snapshot(
    case_id: UUID, request_id: UUID, principal: CaseReader, conn: Conn, store: Store
) -> Response:
    """What the camera saw when its node rechecked the zone (boxes drawn)."""
    if await db.get_case(conn, principal, case_id) is None:
        raise NotFound("case not found")
    record = await db.check_snapshot(conn, case_id, request_id)
    if record is None:
        raise NotFound("no snapshot for this check yet")
    data = await run_in_threadpool(read_verified, store, *record)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private"})


@router.post(
    "/cases",
    response_model=CaseDetail,
    status_code=status.HTTP_201_CREATED,
    responses=refusals(400),
)
async def report_case(body: CaseIn, principal: CaseReader, conn: Conn) -> CaseDetail:
    """A grid worker's report ("must report" duties) or an operator's case."""
    case_id = await open_case(
        conn,
        principal,
        NewCase(
            category=body.category,
            severity=body.severity,
            title=body.title,
            description=body.description,
            unit_code=body.unit_code or principal.unit_code,
            location=body.location.model_dump(mode="json") if body.location else None,
        ),
        now=utc_now(),
    )
    return await get_case(case_id, principal, conn)


@router.post(
    "/cases/{case_id}/actions",
    response_model=CaseOut,
    responses=refusals(400, (409, "The action does not apply to the case's current state.")),
)
async def case_action(
    case_id: UUID, body: CaseActionIn, principal: CaseReader, conn: Conn, publisher: Publisher
) -> CaseOut:
    """Move the case along the loop; an action that does not fit its state is refused with
    409 and the actions that would. `approve` of a camera's case (and `recheck`) asks the
    camera's node to look at the zone again; its answer appears in the case's `checks`."""
    result = await act(
        conn,
        principal,
        case_id,
        ActionRequest(
            action=body.action,
            comment=body.comment,
            category=body.category,
            severity=body.severity,
            reason=body.reason,
            unit_code=body.unit_code,
            departments=tuple(body.departments),
            satisfaction=body.satisfaction,
            photos=tuple(body.photos),
        ),
        now=utc_now(),
    )
    for command in result.commands:
        # After the commit: the check is on record even when the broker is away.
        try:
            await run_in_threadpool(send_command, publisher, command)
            await db.mark_check_sent(conn, command.request_id, sent_at=utc_now(), error=None)
        except BrokerUnavailable as exc:
            logger.warning("recheck not sent request_id=%s: %s", command.request_id, exc)
            await db.mark_check_sent(conn, command.request_id, sent_at=None, error=str(exc))
    return CaseOut(**result.case)
