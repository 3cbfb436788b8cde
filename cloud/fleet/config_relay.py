"""Desired configs onto the broker when the request that issued them could not publish.

`PUT /nodes/{id}/config` commits the new version and then publishes it retained; with the
broker away it answers 503 and the version stays unpublished. This relay (one per API
instance; SKIP LOCKED shares the work) publishes each node's newest unpublished version
once the broker is back, and marks it published after the broker's acknowledgement. A
version a newer one replaced is never sent: the node only ever needs the newest. A version
the broker refuses stays unpublished, and its node is held back from the next rounds for a
while, so it blocks no other."""

from __future__ import annotations

import asyncio
import logging

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from cloud.errors import BrokerRefused
from cloud.publisher import BrokerPublisher
from cloud.relay_loop import Held, RelayLoop
from protocols import NodeConfig, encode
from protocols.topics import config_desired_topic

logger = logging.getLogger(__name__)

CLAIM_SQL = """
SELECT c.node_id, c.version, c.config FROM node_configs c
WHERE c.published_at IS NULL AND c.issued_at < now() - make_interval(secs => %(grace)s)
  AND c.node_id <> ALL(%(held)s)
  AND NOT EXISTS (SELECT 1 FROM node_configs n
                  WHERE n.node_id = c.node_id AND n.version > c.version)
  AND NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.node_id = c.node_id
                  AND nodes.retired_at IS NOT NULL)
ORDER BY c.node_id LIMIT %(batch)s FOR UPDATE OF c SKIP LOCKED
"""


class ConfigRelay(RelayLoop):
    name = "config relay"

    def __init__(
        self,
        pool: AsyncConnectionPool,
        publisher: BrokerPublisher,
        *,
        retry_after_s: float,
    ) -> None:
        # A version younger than retry_after_s is left to the request that issued it (it
        # is publishing it); the relay looks as often.
        super().__init__(poll_s=max(retry_after_s, 0.5))
        self.pool = pool
        self.publisher = publisher
        self.retry_after_s = retry_after_s
        self.held: Held[str] = Held()

    async def relay_once(self) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    CLAIM_SQL,
                    {"grace": self.retry_after_s, "batch": self.batch, "held": self.held.keys()},
                )
                rows = await cur.fetchall()
            if not rows:
                return 0
            messages, sent = [], []
            for row in rows:
                try:
                    config = NodeConfig.model_validate(row["config"])
                except ValidationError as exc:  # stored by an older service: never blocks others
                    logger.error(
                        "desired config node_id=%s version=%d no longer valid: %s",
                        row["node_id"],
                        row["version"],
                        exc,
                    )
                    continue
                messages.append((config_desired_topic(row["node_id"]), encode(config)))
                sent.append(row)
            if messages:
                refused: dict[int, str] = {}
                try:
                    await asyncio.to_thread(self.publisher.publish, messages, retain=True)
                except BrokerRefused as exc:
                    refused = exc.refused
                for index, row in enumerate(sent):
                    (self.held.hold if index in refused else self.held.release)(row["node_id"])
                published = [row for index, row in enumerate(sent) if index not in refused]
                await conn.execute(
                    "UPDATE node_configs SET published_at = now() "
                    "WHERE (node_id, version) IN (SELECT * FROM unnest(%s::text[], %s::int[]))",
                    ([r["node_id"] for r in published], [r["version"] for r in published]),
                )
        return len(sent)
