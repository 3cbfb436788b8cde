"""Webhooks for other systems (the provincial platform, the dispute-resolution system, an
SMS gateway): subscribe by unit, kind and severity; see every delivery; retry dead ones."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from uuid6 import uuid7

from cloud.api.contract import refusals
from cloud.api.deps import Conn, OrgManager
from cloud.db import audit
from cloud.db import org as org_db
from cloud.db import webhooks as db
from cloud.db.alerts import last_seq
from cloud.errors import BadRequest, NotFound
from protocols.enums import AlertKind, Severity
from protocols.identifiers import ORG_CODE_PATTERN

router = APIRouter(tags=["webhooks"])


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{2,63}$", examples=["provincial-grid"])
    url: HttpUrl = Field(examples=["https://grid.sc.gov.cn/hooks/gridwatch"])
    unit_code: str = Field(pattern=ORG_CODE_PATTERN, examples=["511725106"])
    kinds: list[AlertKind] = Field(default_factory=list, description="Empty: every kind.")
    min_severity: Severity = Severity.LOW


class WebhookOut(BaseModel):
    webhook_id: UUID
    name: str
    url: str
    unit_code: str
    kinds: list[str]
    min_severity: str
    active: bool
    created_by: str
    created_at: datetime
    pending: int = 0
    dead: int = 0


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Signs each delivery (HMAC-SHA256); shown only now.")


class DeliveryOut(BaseModel):
    delivery_id: int
    alert_id: UUID
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


async def _own(conn: Any, principal: Any, webhook_id: UUID) -> dict[str, Any]:
    hook = await db.webhook(conn, webhook_id)
    if hook is None or not principal.covers(hook["unit_code"]):
        raise NotFound("webhook not found")
    return hook


@router.post(
    "/webhooks",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    responses=refusals(400),
)
async def create_webhook(body: WebhookIn, principal: OrgManager, conn: Conn) -> WebhookCreated:
    """New alerts of the unit from now on are POSTed to `url`, signed with the secret."""
    if await org_db.unit(conn, body.unit_code) is None or not principal.covers(body.unit_code):
        raise BadRequest(f"unit_code: no unit {body.unit_code} in your jurisdiction")
    webhook_id = uuid7()
    secret = "whsec_" + secrets.token_urlsafe(32)
    kinds = [k.value for k in body.kinds]
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO webhooks (webhook_id, name, url, secret, unit_code, kinds, min_severity, "
            "created_by, last_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                webhook_id,
                body.name,
                str(body.url),
                secret,
                body.unit_code,
                kinds,
                body.min_severity.value,
                principal.subject,
                await last_seq(conn),
            ),
        )
        await audit.record(
            conn,
            principal,
            "webhook.create",
            target_type="webhook",
            target_id=str(webhook_id),
            unit_code=body.unit_code,
            detail={"name": body.name, "url": str(body.url)},
        )
    hook = await _own(conn, principal, webhook_id)
    return WebhookCreated(**{k: v for k, v in hook.items() if k != "secret"}, secret=secret)


@router.get("/webhooks", response_model=list[WebhookOut])
async def list_webhooks(principal: OrgManager, conn: Conn) -> list[dict[str, Any]]:
    return await db.list_webhooks(conn, principal.unit_code)


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_webhook(webhook_id: UUID, principal: OrgManager, conn: Conn) -> None:
    """Stops deliveries; the log stays."""
    hook = await _own(conn, principal, webhook_id)
    async with conn.transaction():
        await conn.execute(
            "UPDATE webhooks SET active = false WHERE webhook_id = %s", (webhook_id,)
        )
        await audit.record(
            conn,
            principal,
            "webhook.remove",
            target_type="webhook",
            target_id=str(webhook_id),
            unit_code=hook["unit_code"],
        )


@router.get("/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut])
async def webhook_deliveries(
    webhook_id: UUID,
    principal: OrgManager,
    conn: Conn,
    delivery_status: Annotated[
        Literal["pending", "delivered", "dead"] | None, Query(alias="status")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """The delivery log, newest first; `status=dead` is the dead-letter list."""
    await _own(conn, principal, webhook_id)
    return await db.deliveries(conn, webhook_id, status=delivery_status, limit=limit)


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", response_model=DeliveryOut)
async def retry_delivery(
    webhook_id: UUID, delivery_id: int, principal: OrgManager, conn: Conn
) -> dict[str, Any]:
    """A dead letter back into the queue (after the receiver is fixed)."""
    hook = await _own(conn, principal, webhook_id)
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, "
            "next_attempt_at = now() WHERE delivery_id = %s AND webhook_id = %s "
            "AND status = 'dead'",
            (delivery_id, webhook_id),
        )
        if cur.rowcount != 1:
            raise NotFound("no dead delivery with that id")
        await audit.record(
            conn,
            principal,
            "webhook.retry",
            target_type="webhook",
            target_id=str(webhook_id),
            unit_code=hook["unit_code"],
            detail={"delivery_id": delivery_id},
        )
    [row] = [
        d
        for d in await db.deliveries(conn, webhook_id, status=None, limit=1000)
        if d["delivery_id"] == delivery_id
    ]
    return row
