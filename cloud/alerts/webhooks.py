"""Webhook deliveries: every matching alert POSTed as JSON to each subscribed system,
signed, retried with backoff, and kept as a dead letter after the last attempt.

Receivers verify `Gridwatch-Signature: t=<unix seconds>,v1=<hex>` where the hex is
HMAC-SHA256(secret, "<t>." + body); `verify_signature` below is the reference. Deliveries
are at least once (deduplicate by the alert id) and not ordered across retries (order by
`sent_at`). Each delivery runs as its own task with a deadline, and a webhook has at most
a few in flight, so a slow or dead receiver never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx2 as httpx
from psycopg_pool import AsyncConnectionPool

from cloud.alerts.hub import AlertHub
from cloud.db import webhooks as db
from cloud.metrics import observe_delivery
from cloud.settings import CloudSettings
from protocols import encode

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Gridwatch-Signature"
PER_WEBHOOK = 4  # deliveries in flight per webhook, per instance
SLOTS = 64  # deliveries in flight per instance
TICK_S = 1.0
MAX_BACKOFF_S = 3600.0


def sign(secret: str, body: bytes, at: int) -> str:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """For receivers: the signature matches and is recent (a replay of an old delivery is
    refused)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        at = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, at), f"t={at},v1={parts.get('v1', '')}")


def backoff_s(attempts: int, base_s: float) -> float:
    """Doubling with full jitter, capped at an hour."""
    delay: float = min(MAX_BACKOFF_S, base_s * 2 ** (attempts - 1))
    return random.uniform(0.5, 1.0) * delay  # noqa: S311 - jitter, not a secret


class WebhookDispatcher:
    def __init__(self, pool: AsyncConnectionPool, hub: AlertHub, settings: CloudSettings) -> None:
        self.pool = pool
        self.hub = hub
        self.settings = settings
        self._wake = hub.watch()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: dict[UUID, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(follow_redirects=False)
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):  # not wait_for: see AlertHub._run
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with self.pool.connection() as conn:
                    await db.queue_new_alerts(conn)
                await self._lease_and_send()
            except Exception:  # the loop must survive anything one round meets
                logger.exception("webhook dispatcher round failed; next round in %.0f s", TICK_S)

    async def _lease_and_send(self) -> None:
        free = SLOTS - len(self._tasks)
        if free <= 0:
            return
        busy = [w for w, n in self._in_flight.items() if n >= PER_WEBHOOK]
        async with self.pool.connection() as conn:
            leased = await db.lease_due(
                conn, limit=free, lease_s=self.settings.webhook_timeout_s * 3, busy=busy
            )
        for delivery in leased:
            webhook_id = delivery["webhook_id"]
            if self._in_flight.get(webhook_id, 0) >= PER_WEBHOOK:
                # Leased but over this webhook's share: the lease runs out and it comes back.
                continue
            self._in_flight[webhook_id] = self._in_flight.get(webhook_id, 0) + 1
            task = asyncio.create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: dict[str, Any]) -> None:
        webhook_id = delivery["webhook_id"]
        try:
            await self._attempt(delivery)
        except Exception:
            logger.exception("webhook delivery %s failed unexpectedly", delivery["delivery_id"])
        finally:
            self._in_flight[webhook_id] -= 1
            if not self._in_flight[webhook_id]:
                del self._in_flight[webhook_id]

    async def _attempt(self, delivery: dict[str, Any]) -> None:
        async with self.pool.connection() as conn:
            hook = await db.webhook(conn, delivery["webhook_id"])
            row = await db.alert_row(conn, delivery["alert_seq"])
            if hook is None or row is None or not hook["active"]:
                await db.mark_failed(
                    conn,
                    delivery["delivery_id"],
                    status_code=None,
                    dead=True,
                    error="webhook removed",
                    next_attempt_at=datetime.now(UTC),
                )
                return
            alert = await self.hub.render(conn, row)
            body = encode(alert)
        at = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(hook["secret"], body, at),
            "Gridwatch-Delivery": str(delivery["delivery_id"]),
            "Gridwatch-Alert": str(delivery["alert_id"]),
            "User-Agent": "gridwatch-webhooks",
        }
        status: int | None = None
        error = ""
        assert self._client is not None
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_s):
                response = await self._client.post(hook["url"], content=body, headers=headers)
            status = response.status_code
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except TimeoutError:
            error = f"no answer in {self.settings.webhook_timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        async with self.pool.connection() as conn:
            if not error:
                await db.mark_delivered(conn, delivery["delivery_id"], status or 200)
                observe_delivery("webhook", alert.sent_at)
                return
            dead = delivery["attempts"] >= self.settings.webhook_attempts
            wait = backoff_s(delivery["attempts"], self.settings.webhook_backoff_s)
            await db.mark_failed(
                conn,
                delivery["delivery_id"],
                status_code=status,
                error=error,
                dead=dead,
                next_attempt_at=datetime.now(UTC) + timedelta(seconds=wait),
            )
        if dead:
            logger.warning(
                "webhook delivery dead after %d attempts webhook=%s alert_id=%s: %s",
                delivery["attempts"],
                hook["name"],
                delivery["alert_id"],
                error,
            )
