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
refuses it until then; its outbox keeps its events).

Valid messages beyond a box's share are parked and counted too, against a far larger limit
(CLOUD_INGEST_SUSPEND_PARKED_RATE units a second over CLOUD_INGEST_SUSPEND_PARKED_WINDOW_S,
150,000 units by default): a box replaying a long outage parks its backlog once (a busy
town box's three days are about 130,000 events), while one sending 10,000 valid events a
second, which ingest parked no faster than it came, held every box's events up by 95 s.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from cloud.ingest.buckets import Buckets
from cloud.metrics import INGEST_SUSPENDED
from protocols.identifiers import NODE_ID_PATTERN
from protocols.topics import NODES

logger = logging.getLogger(__name__)

SUSPENDED_BY = "ingest"
NODE_ID = re.compile(NODE_ID_PATTERN)


@dataclass(frozen=True)
class Limit:
    """`rate` a second, sustained over `window_s` (0: no limit); `what` names what is
    counted, in the suspension's reason."""

    rate: float
    window_s: float
    what: str


class Guard:
    """Per box, what it sends that the county refuses (in messages) and its valid messages
    beyond its share (in units, parked): each against its limit. `count` names the boxes
    that went past one (each once while its suspension lasts), with why."""

    def __init__(
        self,
        refused: Limit,
        parked: Limit,
        suspend_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.suspend_s = suspend_s
        self.clock = clock
        self.limits = {
            name: (limit, Buckets[str](limit.rate, max(1, int(limit.rate * limit.window_s)), clock))
            for name, limit in (("refused", refused), ("parked", parked))
        }
        self.suspended: dict[str, float] = {}  # box → when its suspension here ends

    def count(self, name: str, amounts: dict[str, float]) -> dict[str, str]:
        limit, buckets = self.limits[name]
        if limit.rate <= 0:
            return {}
        now = self.clock()
        tripped = {}
        for node, n in amounts.items():
            if self.suspended.get(node, 0.0) > now:
                continue  # suspended already: its messages still queued are taken as before
            left = buckets.level(node)
            buckets.spend(node, n)
            if left - n < 0:
                self.suspended[node] = now + self.suspend_s
                tripped[node] = (
                    f"sent {limit.what} at more than {limit.rate:g} a second for "
                    f"{limit.window_s:g} s"
                )
        return tripped

    def follow(self, remaining_s: dict[str, float]) -> list[str]:
        """The suspensions in force now, by box with the seconds each has left (every
        process's, as the database holds them): boxes suspended elsewhere are suspended
        here too, and a box let back in (lifted by an operator, or over) starts afresh (it
        stayed suspended here, immune, until its time here ran out). Returns the boxes let
        back in."""
        now = self.clock()
        back = [node for node in self.suspended if node not in remaining_s]
        for node in back:
            del self.suspended[node]
            for _, buckets in self.limits.values():
                buckets.forget(node)
        for node, seconds in remaining_s.items():
            self.suspended[node] = now + seconds
        return back

    def shut_out(self, node: str) -> bool:
        """Whether `node` is suspended now."""
        return self.suspended.get(node, 0.0) > self.clock()


def by_sender(topics: Iterable[str]) -> dict[str, float]:
    counts: dict[str, float] = {}
    for topic in topics:
        node = sender_of(topic)
        if node is not None:
            counts[node] = counts.get(node, 0.0) + 1
    return counts


def suspend(conn: psycopg.Connection, reasons: dict[str, str], *, seconds: float) -> None:
    """Suspend the boxes for their reasons (in the caller's transaction): a suspension
    already running is lengthened, never shortened."""
    now = datetime.now(UTC)
    until = now + timedelta(seconds=seconds)
    nodes = sorted(reasons)
    conn.execute(
        "INSERT INTO node_suspensions (node_id, since, until, reason, suspended_by) "
        "SELECT v.node_id, %s, %s, v.reason, %s "
        "FROM unnest(%s::text[], %s::text[]) AS v(node_id, reason) ORDER BY 1 "
        "ON CONFLICT (node_id) DO UPDATE SET until = greatest(node_suspensions.until, "
        "excluded.until), reason = excluded.reason",
        (now, until, SUSPENDED_BY, nodes, [reasons[n] for n in nodes]),
    )
    INGEST_SUSPENDED.inc(len(nodes))
    for node in nodes:
        logger.warning("box %s suspended until %s: %s", node, until.isoformat(), reasons[node])


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
