"""Alerts for grid apps and screens: a page at a time, or live over WebSocket or
Server-Sent Events, resumed from the last alert id seen, from the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, WithJsonSchema

from cloud.access import Permission, Principal
from cloud.alerts.cap import atom_feed, cap_document
from cloud.alerts.hub import AlertHub, Delivered
from cloud.api.case_schemas import CaseOut
from cloud.api.contract import refusals
from cloud.api.deps import CaseReader, Conn, UnitQuery, principal_from_token
from cloud.cases.actions import ActionRequest, act
from cloud.cases.timers import utc_now
from cloud.cases.workflow import CaseAction
from cloud.db import alerts as db
from cloud.errors import CloudError, Forbidden, NotFound, Unauthorized
from cloud.metrics import observe_delivery
from protocols.alerts import Alert

logger = logging.getLogger(__name__)
router = APIRouter(tags=["alerts"])

PAGE = 500


class AlertPage(BaseModel):
    items: list[Alert]
    last_alert_id: UUID | None = Field(
        description="Pass back as `after` for the next page; null when nothing is new."
    )


async def _after_seq(conn: Any, principal: Principal, after: UUID | None) -> int:
    """Where `after` stands in the alert sequence; NotFound for an alert the caller may not
    see, as for none (another grid's alert id told a worker it existed)."""
    if after is None:
        return 0
    row = await db.alert_by_id(conn, principal, after)
    if row is None:
        raise NotFound("after: no such alert")  # as the WebSocket's 4404
    return int(row["seq"])


# A resume point the caller may not see, as one that does not exist.
_UNKNOWN_AFTER = refusals(
    (404, "No such alert as `after`, or no such unit in the caller's jurisdiction.")
)


@router.get(
    "/alerts",
    response_model=AlertPage,
    responses=_UNKNOWN_AFTER,
)
async def list_alerts(
    request: Request,
    principal: CaseReader,
    conn: Conn,
    after: Annotated[UUID | None, Query(description="The last alert id already seen.")] = None,
    unit: UnitQuery = None,
    limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
) -> AlertPage:
    """Alerts of the caller's jurisdiction (or of `unit` inside it), oldest first after
    `after` (for polling)."""
    hub: AlertHub = request.app.state.alerts
    rows = await db.alerts_after(
        conn,
        principal,
        after_seq=await _after_seq(conn, principal, after),
        limit=limit,
        unit=principal.scope(unit),
    )
    items = [await hub.render(conn, row) for row in rows]
    return AlertPage(items=items, last_alert_id=items[-1].alert_id if items else after)


@router.get(
    "/alerts/stream",
    response_class=StreamingResponse,
    responses=_UNKNOWN_AFTER,
)
async def stream_alerts(
    request: Request,
    principal: CaseReader,
    after: Annotated[UUID | None, Query(description="Resume after this alert id.")] = None,
    unit: UnitQuery = None,
    last_event_id: Annotated[
        UUID | None,
        Header(description="EventSource's resume id."),
        # Absent or an id: a header cannot be null (as the schema said, and a client sent).
        WithJsonSchema({"type": "string", "format": "uuid"}),
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: `id` is the alert id, `data` the alert; a client that reconnects
    with `Last-Event-ID` receives what it missed, then the live ones."""
    hub: AlertHub = request.app.state.alerts
    pool: AsyncConnectionPool = request.app.state.pool
    narrow = principal.scope(unit)
    async with pool.connection() as conn:
        after_seq = await _after_seq(conn, principal, last_event_id or after)

    token = request.headers.get("authorization", "").removeprefix("Bearer ")

    async def events() -> AsyncIterator[bytes]:
        yield b": gridwatch alerts\n\n"
        alerts = aiter(follow(hub, pool, principal, after_seq, narrow))
        signed_out = asyncio.create_task(until_signed_out(request.app, token))
        next_alert: asyncio.Future[Delivered] | None = None
        try:
            while True:
                next_alert = asyncio.ensure_future(anext(alerts))
                await asyncio.wait([next_alert, signed_out], return_when=asyncio.FIRST_COMPLETED)
                if not next_alert.done():
                    why = orjson.dumps({"detail": signed_out.result()})
                    yield b"event: signed_out\ndata: " + why + b"\n\n"
                    return
                item = next_alert.result()
                data = orjson.dumps(item.alert.model_dump(mode="json"))
                yield (
                    b"id: "
                    + str(item.alert.alert_id).encode()
                    + b"\nevent: alert\ndata: "
                    + data
                    + b"\n\n"
                )
                observe_delivery("sse", item.alert.sent_at)
        except StopAsyncIteration:
            return
        finally:
            signed_out.cancel()
            if next_alert is not None and not next_alert.done():
                next_alert.cancel()  # also when the client left while waiting

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# How often a stream checks that its token still holds (expired, revoked: it ends).
STREAM_CHECK_S = 5.0
# The WebSocket subprotocol that carries a browser's token (a browser cannot set headers,
# and a token in the URL ends up in access logs): `new WebSocket(url, [BEARER, token])`.
BEARER_PROTOCOL = "gridwatch.bearer"
# The close code a stream ends with when its token no longer holds: sign in and resume.
CLOSE_SIGNED_OUT = 4401
# The close code for a resume point (`after`) this service does not know: start afresh.
CLOSE_UNKNOWN_AFTER = 4404


def _websocket_token(websocket: WebSocket) -> tuple[str, str | None]:
    """The token, from `Authorization: Bearer`, or from the subprotocols a browser offers
    (BEARER_PROTOCOL, then the token); and the subprotocol to accept."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    if len(offered) == 2 and offered[0] == BEARER_PROTOCOL:
        return offered[1], BEARER_PROTOCOL
    return websocket.headers.get("authorization", "").removeprefix("Bearer "), None


async def until_signed_out(app: Any, token: str) -> str:
    """Wait until the token no longer holds; say why."""
    while True:
        await asyncio.sleep(STREAM_CHECK_S)
        try:
            await principal_from_token(app, token)
        except Unauthorized as exc:
            return str(exc)


@router.websocket("/alerts/ws")
async def websocket_alerts(
    websocket: WebSocket,
    after: UUID | None = None,
    unit: UnitQuery = None,
) -> None:
    """Live alerts as JSON text frames `{"type": "alert", "alert": {...}}`. Sign in with the
    `Authorization: Bearer` header, or, from a browser, by offering the subprotocols
    `gridwatch.bearer` and the token (never in the URL); resume with `after` = the last
    alert id seen. When the token expires or is revoked the stream closes with code 4401:
    sign in again and resume."""
    token, subprotocol = _websocket_token(websocket)
    try:
        principal = await principal_from_token(websocket.app, token)
        if not principal.can(Permission.READ_CASES):
            raise Forbidden(f"a {principal.role.value} may not read alerts")
        principal = replace(
            principal, remote_addr=websocket.client.host if websocket.client else ""
        )
        narrow = principal.scope(unit)
        pool: AsyncConnectionPool = websocket.app.state.pool
    except CloudError as exc:
        # Close before accepting: the handshake fails with 403 and the reason in the log.
        logger.info("alert websocket refused: %s", exc)
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    await websocket.accept(subprotocol=subprotocol)
    try:
        async with pool.connection() as conn:
            after_seq = await _after_seq(conn, principal, after)
    except NotFound as exc:
        # After the handshake, with its own code: a client told only "403" took it for a
        # bad token and signed in again, forever (a resume point from another county).
        await websocket.close(code=CLOSE_UNKNOWN_AFTER, reason=str(exc))
        return
    hub: AlertHub = websocket.app.state.alerts

    async def push() -> None:
        async for item in follow(hub, pool, principal, after_seq, narrow):
            await websocket.send_text(
                orjson.dumps(
                    {"type": "alert", "alert": item.alert.model_dump(mode="json")}
                ).decode()
            )
            observe_delivery("websocket", item.alert.sent_at)

    async def until_closed() -> None:
        # Waiting for the next alert would not notice a client that left (or a server that
        # shuts down): reading does, and then the push stops and the subscription goes.
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def signed_out() -> None:
        why = await until_signed_out(websocket.app, token)
        await websocket.close(code=CLOSE_SIGNED_OUT, reason=why)

    tasks = [
        asyncio.create_task(push()),
        asyncio.create_task(until_closed()),
        asyncio.create_task(signed_out()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task


async def follow(
    hub: AlertHub,
    pool: AsyncConnectionPool,
    principal: Principal,
    after_seq: int,
    unit: str | None = None,
) -> AsyncIterator[Delivered]:
    """What the caller missed after `after_seq` (from the database), then the live alerts,
    each once and in order. Subscribing first means nothing falls between the two."""
    subscriber = hub.subscribe(principal, unit)
    try:
        last = after_seq
        while True:
            async with pool.connection() as conn:
                rows = await db.alerts_after(conn, principal, after_seq=last, limit=PAGE, unit=unit)
                page = [Delivered(row["seq"], await hub.render(conn, row)) for row in rows]
            for item in page:
                yield item
                last = item.seq
            if len(rows) < PAGE:
                break
        while True:
            live = await subscriber.queue.get()
            if live is None:
                return  # dropped as too slow: the client reconnects and resumes
            if live.seq > last:
                yield live
                last = live.seq

    finally:
        hub.unsubscribe(subscriber)


CAP_MEDIA = "application/cap+xml"


@router.get(
    "/alerts/feed.atom",
    response_class=Response,
    responses={200: {"content": {"application/atom+xml": {}}}},
)
async def alert_feed(
    request: Request,
    principal: CaseReader,
    conn: Conn,
    limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
) -> Response:
    """The newest alerts of the caller's jurisdiction as an Atom feed linking each CAP 1.2
    document (for public warning systems and provincial platforms, with an API token)."""
    hub: AlertHub = request.app.state.alerts
    items = [await hub.render(conn, row) for row in await db.newest(conn, principal, limit=limit)]
    base = str(request.base_url).rstrip("/")
    body = atom_feed(
        items,
        feed_url=f"{base}/api/v1/alerts/feed.atom",
        title=f"gridwatch alerts · {principal.unit_code}",
        cap_url=lambda alert: f"{base}/api/v1/alerts/{alert.alert_id}.cap",
    )
    return Response(body, media_type="application/atom+xml")


@router.get(
    "/alerts/{alert_id}.cap", response_class=Response, responses={200: {"content": {CAP_MEDIA: {}}}}
)
async def alert_cap(
    request: Request, alert_id: UUID, principal: CaseReader, conn: Conn
) -> Response:
    """The alert as a CAP 1.2 document (Chinese and English `info`, the unit as the area)."""
    alert = await get_alert(request, alert_id, principal, conn)
    unit_code = alert.org.grid or alert.org.village or alert.org.town or alert.org.county
    name, geometry = await db.area(conn, unit_code)
    settings = request.app.state.settings
    document = cap_document(
        alert,
        references_sent=await db.sent_times(conn, list(alert.references)),
        area_name=name,
        geometry=geometry,
        case_url=f"{settings.public_url}/api/v1/cases/{alert.case_id}" if alert.case_id else None,
    )
    return Response(document, media_type=CAP_MEDIA)


@router.get("/alerts/{alert_id}", response_model=Alert)
async def get_alert(request: Request, alert_id: UUID, principal: CaseReader, conn: Conn) -> Alert:
    row = await db.alert_by_id(conn, principal, alert_id)
    if row is None:
        raise NotFound("alert not found")
    hub: AlertHub = request.app.state.alerts
    return await hub.render(conn, row)


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=CaseOut,
    responses=refusals((409, "The case is past being acknowledged.")),
)
async def acknowledge_alert(alert_id: UUID, principal: CaseReader, conn: Conn) -> CaseOut:
    """From the app: acknowledge the alert's case (intake → triage), which stops its
    escalation timer."""
    row = await db.alert_by_id(conn, principal, alert_id)
    if row is None or row["case_id"] is None:
        raise NotFound("alert not found")
    result = await act(
        conn,
        principal,
        row["case_id"],
        ActionRequest(action=CaseAction.ACKNOWLEDGE),
        now=utc_now(),
    )
    return CaseOut(**result.case)
