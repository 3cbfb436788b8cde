"""Alerts onto the broker's alert topics (QoS 1) for apps that speak MQTT.

Each API instance relays: it claims unpublished alerts with SKIP LOCKED (so instances
share the work and never publish one twice while both run), publishes them, waits for the
broker's acknowledgements, and only then marks them published in the same transaction.
If the broker is away nothing is marked, and the next round publishes them again. An alert
the broker refuses (its PUBACK says so) is not marked either: it is logged and counted by
the publisher, and held back from the next rounds for a while, so it blocks no other.
"""

from __future__ import annotations

import asyncio
import logging

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from cloud.alerts.hub import AlertHub
from cloud.db.alerts import ALERT_COLUMNS
from cloud.errors import BrokerRefused
from cloud.metrics import observe_delivery
from cloud.publisher import BrokerPublisher
from cloud.relay_loop import Held, RelayLoop
from protocols import encode
from protocols.topics import alert_topic

logger = logging.getLogger(__name__)

BATCH = 200

CLAIM_SQL = (
    f"SELECT {ALERT_COLUMNS} FROM alerts WHERE mqtt_published_at IS NULL "  # noqa: S608
    "AND seq <> ALL(%s) ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
)


class AlertRelay(RelayLoop):
    name = "alert relay"
    batch = BATCH

    def __init__(
        self, pool: AsyncConnectionPool, publisher: BrokerPublisher, hub: AlertHub
    ) -> None:
        super().__init__(wake=hub.watch())
        self.pool = pool
        self.publisher = publisher
        self.hub = hub
        self.held: Held[int] = Held()

    async def relay_once(self) -> int:
        """Publish one batch; returns how many were claimed (published or held back)."""
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(CLAIM_SQL, (self.held.keys(), BATCH))
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
            refused: dict[int, str] = {}
            try:
                await asyncio.to_thread(self.publisher.publish, messages)
            except BrokerRefused as exc:
                refused = exc.refused
            published = []
            for index, (row, alert) in enumerate(zip(rows, alerts, strict=True)):
                if index in refused:
                    self.held.hold(row["seq"])
                    continue
                self.held.release(row["seq"])
                observe_delivery("mqtt", alert.sent_at)
                published.append(row["seq"])
            await conn.execute(
                "UPDATE alerts SET mqtt_published_at = now() WHERE seq = ANY(%s)", (published,)
            )
        return len(rows)
