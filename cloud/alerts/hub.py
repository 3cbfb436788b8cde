"""The API's live alert fan-out: one database listener per process, many subscribers.

Alerts are committed by whichever process changed a case; PostgreSQL's NOTIFY wakes each
API instance's hub, which reads the new rows once, in `seq` order, and hands each to the
subscribers allowed to hear it. A subscriber that cannot keep up is dropped rather than
slowing the others; it resumes from its last alert id, from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from cloud.access import Principal
from cloud.alerts.render import Units, render_alert
from cloud.db import alerts as db
from cloud.tiers import Level, is_within
from protocols.alerts import Alert

logger = logging.getLogger(__name__)

QUEUE_MAX = 1000
UNITS_REFRESH_S = 60.0
SAFETY_POLL_S = 5.0  # a lost notice (a listener reconnecting) costs at most this long


@dataclass(frozen=True)
class Delivered:
    seq: int
    alert: Alert


@dataclass(eq=False)
class Subscriber:
    principal: Principal
    unit: str | None = None  # narrower than the caller's jurisdiction, when asked
    queue: asyncio.Queue[Delivered | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    dropped: bool = False


def may_hear(principal: Principal, row: dict[str, Any]) -> bool:
    """The same rule as the SQL scope in cloud.db.alerts, for the live path."""
    if principal.sees_only_dispatched:
        return principal.department_code in (row["departments"] or [])
    inside = principal.level is Level.COUNTY or is_within(row["unit_code"], principal.unit_code)
    if principal.sees_only_work_orders:
        return inside and row["source"] == "fleet"
    return inside


def _key(principal: Principal) -> str:
    if principal.sees_only_dispatched:
        return f"dept:{principal.department_code}"
    return principal.unit_code


class AlertHub:
    def __init__(self, pool: AsyncConnectionPool, url: str, public_url: str) -> None:
        self.pool = pool
        self.url = url
        self.public_url = public_url
        self.subscribers: set[Subscriber] = set()
        # Subscribers by the key they listen under (their unit, or their department): an
        # alert looks up its unit's chain of ancestors instead of asking every subscriber.
        self._by_key: dict[str, set[Subscriber]] = {}
        self.last_seq = 0
        self.units: Units = {}
        self._units_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._watchers: list[asyncio.Event] = []  # the MQTT relay, the webhook dispatcher

    async def start(self) -> None:
        async with self.pool.connection() as conn:
            self.last_seq = await db.last_seq(conn)
            await self._refresh_units(conn, force=True)
        self._task = asyncio.create_task(self._run(), name="alert-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subscriber in list(self.subscribers):
            self._drop(subscriber)

    def watch(self) -> asyncio.Event:
        """An event set whenever new alerts arrived (the waiter clears it)."""
        event = asyncio.Event()
        self._watchers.append(event)
        return event

    def subscribe(self, principal: Principal, unit: str | None = None) -> Subscriber:
        subscriber = Subscriber(principal, unit)
        self.subscribers.add(subscriber)
        self._by_key.setdefault(_key(principal), set()).add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        listeners = self._by_key.get(_key(subscriber.principal))
        if listeners is not None:
            listeners.discard(subscriber)
            if not listeners:
                del self._by_key[_key(subscriber.principal)]

    def _candidates(self, row: dict[str, Any]) -> list[Subscriber]:
        """Subscribers at the alert's unit or above it, and of its departments."""
        found: list[Subscriber] = []
        code: str | None = row["unit_code"]
        seen = 0
        while code is not None and seen < 8:
            found.extend(self._by_key.get(code, ()))
            code = self.units[code][2] if code in self.units else None
            seen += 1
        for department in row["departments"] or ():
            found.extend(self._by_key.get(f"dept:{department}", ()))
        return found

    async def render(self, conn: psycopg.AsyncConnection, row: dict[str, Any]) -> Alert:
        await self._refresh_units(conn)
        return render_alert(row, self.units, self.public_url)

    async def _refresh_units(self, conn: psycopg.AsyncConnection, force: bool = False) -> None:
        if force or time.monotonic() - self._units_at > UNITS_REFRESH_S:
            self.units = await db.units(conn)
            self._units_at = time.monotonic()

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="alert-listener")
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that arrives as the event is set, and stop() waits forever.
                    async with asyncio.timeout(SAFETY_POLL_S):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self._deliver_new()
                except (psycopg.Error, OSError) as exc:
                    logger.warning("alert hub cannot read alerts: %s", exc)
        finally:
            listener.cancel()

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; reconnects, and the safety poll covers gaps."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute("LISTEN gridwatch_alerts")
                    self._wake.set()  # whatever committed while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except (psycopg.Error, OSError) as exc:
                logger.warning("alert listener lost its connection: %s", exc)
                await asyncio.sleep(1)

    async def _deliver_new(self) -> None:
        async with self.pool.connection() as conn:
            while True:
                rows = await db.all_after(conn, after_seq=self.last_seq, limit=1000)
                if not rows:
                    return
                # A unit added since the last read: its ancestors are needed for the fan-out.
                unknown = any(row["unit_code"] not in self.units for row in rows)
                await self._refresh_units(conn, force=unknown)
                for row in rows:
                    self._fan_out(row)
                    self.last_seq = row["seq"]
                for watcher in self._watchers:
                    watcher.set()

    def _fan_out(self, row: dict[str, Any]) -> None:
        alert: Alert | None = None
        for subscriber in self._candidates(row):
            if not may_hear(subscriber.principal, row):
                continue
            if subscriber.unit is not None and not is_within(row["unit_code"], subscriber.unit):
                continue
            alert = alert or render_alert(row, self.units, self.public_url)
            try:
                subscriber.queue.put_nowait(Delivered(row["seq"], alert))
            except asyncio.QueueFull:
                logger.warning(
                    "alert subscriber %s too slow; dropped (it resumes from its last alert)",
                    subscriber.principal.subject,
                )
                self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        subscriber.dropped = True
        self.unsubscribe(subscriber)
        with contextlib.suppress(asyncio.QueueFull):
            subscriber.queue.put_nowait(None)  # wakes its sender, which then ends
