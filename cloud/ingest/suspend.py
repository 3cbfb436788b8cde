"""Boxes whose accounts send what the county refuses, faster than any fault would, are
suspended: shut out of the broker for a while, so that ingest stops spending itself on them.

Shares, throttles and parking keep one box from costing another its events as long as
ingest reads faster than the box sends; a box account sending 47,000 junk messages a second
was refused message by message and held every box's events up by more than a minute. What
the county refuses (dead letters, reports beyond their throttle, answers nobody asked for,
messages beyond a full parking) is counted per box in a token bucket; a box that empties it
(CLOUD_INGEST_SUSPEND_REFUSED_RATE a second, sustained over CLOUD_INGEST_SUSPEND_WINDOW_S) is
suspended for CLOUD_INGEST_SUSPEND_S: a row in `node_suspensions`, which `gridwatch cloud
broker sync --follow` turns into a disabled account (the broker disconnects the box and
refuses it until then; its outbox keeps its events). Valid events beyond a box's share are
parked, not counted here: a box replaying a long outage is not a fault.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import psycopg

from cloud.ingest.buckets import Buckets
from cloud.metrics import INGEST_SUSPENDED
from protocols.identifiers import NODE_ID_PATTERN
from protocols.topics import NODES

logger = logging.getLogger(__name__)

SUSPENDED_BY = "ingest"
NODE_ID = re.compile(NODE_ID_PATTERN)


class Guard:
    """Per box, `rate` refused messages a second over `window_s`; `refused` names the boxes
    that went past it (each once while its suspension lasts)."""

    def __init__(
        self,
        rate: float,
        window_s: float,
        suspend_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.suspend_s = suspend_s
        self.clock = clock
        self.buckets: Buckets[str] = Buckets(rate, max(1, int(rate * window_s)), clock)
        self.suspended: dict[str, float] = {}  # box → when its suspension here ends

    def refused(self, topics: Iterable[str]) -> list[str]:
        if self.rate <= 0:
            return []
        counts: dict[str, int] = {}
        for topic in topics:
            node = sender_of(topic)
            if node is not None:
                counts[node] = counts.get(node, 0) + 1
        now = self.clock()
        tripped = []
        for node, n in counts.items():
            if self.suspended.get(node, 0.0) > now:
                continue  # suspended already: its messages still queued are refused as before
            left = self.buckets.level(node)
            self.buckets.spend(node, n)
            if left - n < 0:
                self.suspended[node] = now + self.suspend_s
                tripped.append(node)
        return tripped


def suspend(
    conn: psycopg.Connection, nodes: list[str], *, seconds: float, rate: float, window_s: float
) -> None:
    """Suspend `nodes` (in the caller's transaction): a suspension already running is
    lengthened, never shortened."""
    now = datetime.now(UTC)
    until = now + timedelta(seconds=seconds)
    reason = f"sent messages the county refuses at more than {rate:g} a second for {window_s:g} s"
    conn.execute(
        "INSERT INTO node_suspensions (node_id, since, until, reason, suspended_by) "
        "SELECT unnest(%s::text[]), %s, %s, %s, %s ORDER BY 1 "
        "ON CONFLICT (node_id) DO UPDATE SET until = greatest(node_suspensions.until, "
        "excluded.until), reason = excluded.reason",
        (sorted(nodes), now, until, reason, SUSPENDED_BY),
    )
    INGEST_SUSPENDED.inc(len(nodes))
    for node in nodes:
        logger.warning("box %s suspended until %s: %s", node, until.isoformat(), reason)


def sender_of(topic: str) -> str | None:
    """The box whose subtree `topic` is in (the broker lets an account publish only in its
    own), even when the rest of the topic is junk; None outside the boxes' subtrees."""
    try:
        return _SENDER[topic]
    except KeyError:
        pass
    node: str | None = None
    if topic.startswith(_PREFIX):
        candidate = topic[len(_PREFIX) :].split("/", 1)[0]
        node = candidate if NODE_ID.fullmatch(candidate) else None
    if len(_SENDER) < _CACHED_TOPICS:
        _SENDER[topic] = node
    return node


_PREFIX = f"{NODES}/"


_CACHED_TOPICS = 100_000
_SENDER: dict[str, str | None] = {}
