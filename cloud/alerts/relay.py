"""Alerts onto the broker's alert topics (QoS 1) for apps that speak MQTT.

Each API instance relays: it claims unpublished alerts with SKIP LOCKED (so instances
share the work and never publish one twice while both run), publishes them, waits for the
broker's acknowledgements, and only then marks them published in the same transaction.
If the broker is away nothing is marked, and the next round publishes them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from cloud.alerts.hub import AlertHub
from cloud.db.alerts import ALERT_COLUMNS
from cloud.errors import BrokerUnavailable
from cloud.metrics import observe_delivery
from cloud.publisher import BrokerPublisher
from protocols import encode
from protocols.topics import alert_topic

logger = logging.getLogger(__name__)

BATCH = 200
POLL_S = 5.0

CLAIM_SQL = (
    f"SELECT {ALERT_COLUMNS} FROM alerts WHERE mqtt_published_at IS NULL "  # noqa: S608
    "ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
)


class AlertRelay:
    def __init__(
        self, pool: AsyncConnectionPool, publisher: BrokerPublisher, hub: AlertHub
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.hub = hub
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._wake = hub.watch()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):  # not wait_for: see AlertHub._run
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self.relay_once() == BATCH:
                    pass
                if self._failing:
                    logger.info("alert relay publishing again")
                    self._failing = False
            except BrokerUnavailable as exc:
                if not self._failing:
                    logger.warning("alert relay waits for the broker: %s", exc)
                    self._failing = True

    async def relay_once(self) -> int:
        """Publish one batch; returns how many were published."""
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(CLAIM_SQL, (BATCH,))
                rows = await cur.fetchall()
            if not rows:
                return 0
            messages = []
            alerts = []
            for row in rows:
                alert = await self.hub.render(conn, row)
                org = alert.org
                topic = alert_topic(org.county, org.town, org.village, org.grid, alert.kind.value)
                messages.append((topic, encode(alert)))
                alerts.append(alert)
            await asyncio.to_thread(self.publisher.publish, messages)
            for alert in alerts:
                observe_delivery("mqtt", alert.sent_at)
            await conn.execute(
                "UPDATE alerts SET mqtt_published_at = now() WHERE seq = ANY(%s)",
                ([row["seq"] for row in rows],),
            )
        return len(rows)
