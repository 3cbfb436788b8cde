"""Cases: the closed loop from intake to closure, scoped to the caller's jurisdiction."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from cloud.api.case_schemas import (
    CaseActionIn,
    CaseCheck,
    CaseDetail,
    CaseIn,
    CaseOut,
    CasePage,
)
from cloud.api.deps import CaseReader, Commands, Conn, Store
from cloud.cases.actions import ActionRequest, NewCase, act, open_case
from cloud.cases.timers import utc_now
from cloud.db import cases as db
from cloud.db import events as events_db
from cloud.errors import BrokerUnavailable, NotFound
from protocols.enums import CaseState

logger = logging.getLogger(__name__)
router = APIRouter(tags=["cases"])

UnitQuery = Annotated[
    str | None,
    Query(
        description="Org unit code: the unit and all below it.",
        max_length=32,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
    ),
]


def _filter(
    principal_unit: str | None,
    state: list[CaseState] | None,
    open_only: bool,
    category: str | None,
    source: str | None,
    start: datetime | None,
    end: datetime | None,
    department: str | None,
) -> db.CaseFilter:
    return db.CaseFilter(
        unit=principal_unit,
        states=tuple(s.value for s in state or ()),
        open_only=open_only,
        category=category,
        source=source,
        start=start,
        end=end,
        department=department,
    )


State = Annotated[list[CaseState] | None, Query(description="One or more states.")]
Open = Annotated[bool, Query(alias="open", description="Only cases not closed.")]
Start = Annotated[datetime | None, Query(alias="from", description="Opened at or after.")]
End = Annotated[datetime | None, Query(alias="to", description="Opened before.")]
Source = Annotated[str | None, Query(pattern="^(camera|fleet|report|operator)$")]


@router.get("/cases", response_model=CasePage)
async def list_cases(
    principal: CaseReader,
    conn: Conn,
    unit: UnitQuery = None,
    state: State = None,
    open_only: Open = False,
    category: str | None = None,
    source: Source = None,
    start: Start = None,
    end: End = None,
    department: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> CasePage:
    """Newest first. A grid worker's "my open cases" is `?open=true` with their token."""
    case_filter = _filter(
        principal.scope(unit), state, open_only, category, source, start, end, department
    )
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
    principal: CaseReader,
    conn: Conn,
    unit: UnitQuery = None,
    state: State = None,
    open_only: Open = False,
    category: str | None = None,
    source: Source = None,
    start: Start = None,
    end: End = None,
    department: str | None = None,
) -> StreamingResponse:
    """Every matching case as CSV (with the times that measure acknowledge, dispatch and
    resolve), streamed page by page."""
    case_filter = _filter(
        principal.scope(unit), state, open_only, category, source, start, end, department
    )

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        cursor: str | None = None
        while True:
            rows, cursor = await db.list_cases(
                conn, principal, case_filter, cursor=cursor, limit=500
            )
            for row in rows:
                writer.writerow(["" if row[c] is None else row[c] for c in EXPORT_COLUMNS])
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if cursor is None:
                return

    return StreamingResponse(
        lines(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="cases.csv"'},
    )


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
        conn, case["first_event_id"], "frame"
    ):
        before = f"/api/v1/events/{case['first_event_id']}/snapshots/frame"
    return CaseDetail(
        **case,
        assignments=await db.assignments(conn, case_id),
        history=await db.history(conn, case_id),
        threads=await db.threads(conn, case_id),
        checks=checks,
        before_snapshot_url=before,
    )


@router.get(
    "/cases/{case_id}/checks/{request_id}/snapshot",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def check_snapshot(
    case_id: UUID, request_id: UUID, principal: CaseReader, conn: Conn, store: Store
) -> Response:
    """What the camera saw when its node rechecked the zone (boxes drawn)."""
    if await db.get_case(conn, principal, case_id) is None:
        raise NotFound("case not found")
    key = await db.check_snapshot_key(conn, case_id, request_id)
    if key is None:
        raise NotFound("no snapshot for this check yet")
    data = await run_in_threadpool(store.get, key)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private"})


@router.post("/cases", response_model=CaseDetail, status_code=status.HTTP_201_CREATED)
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
            location=body.location,
            photos=tuple(body.photos),
        ),
        now=utc_now(),
    )
    return await get_case(case_id, principal, conn)


@router.post("/cases/{case_id}/actions", response_model=CaseOut)
async def case_action(
    case_id: UUID, body: CaseActionIn, principal: CaseReader, conn: Conn, commands: Commands
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
            await run_in_threadpool(commands.send, command)
            await db.mark_check_sent(conn, command.request_id, sent_at=utc_now(), error=None)
        except BrokerUnavailable as exc:
            logger.warning("recheck not sent request_id=%s: %s", command.request_id, exc)
            await db.mark_check_sent(conn, command.request_id, sent_at=None, error=str(exc))
    return CaseOut(**result.case)
