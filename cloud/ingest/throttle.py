"""Reports that only say how a box is now — health, state, its config report — are taken
at most so often from each box, before anything parses them.

A box sends them every few seconds at most (health every `publish.health_interval_s`, 5 s
or more; state at each connect; a config report per config). A box sending a thousand
80 KB health reports a second cost ingest 4.5 ms each to refuse and delayed every box's
events by 90 s. The next report says the same thing newer, so the excess is counted
(`gridwatch_ingest_throttled_total`) and acknowledged, not stored. Events, telemetry,
snapshots and command answers are never throttled here: each is data of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cloud.ingest.buckets import Buckets
from cloud.ingest.subscriber import Received
from cloud.metrics import INGEST_THROTTLED
from protocols.errors import InvalidTopic
from protocols.topics import Channel, NodeTopic, parse_topic

THROTTLED = frozenset({Channel.HEALTH, Channel.STATE, Channel.CONFIG_REPORTED})
RATE_PER_S = 0.5  # a report every 2 s, on average
BURST = 10  # reports one box may send at once (a reconnect sends state, health, config)


class Throttle:
    """Per box and channel, a token bucket of `burst` reports refilled at `rate_per_s`."""

    def __init__(
        self,
        rate_per_s: float = RATE_PER_S,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buckets: Buckets[tuple[str, Channel]] = Buckets(rate_per_s, burst, clock)

    def admit(self, messages: list[Received]) -> list[Received]:
        """The messages to decode: all but the throttled channels' excess."""
        kept = []
        for message in messages:
            key = _key(message.topic)
            if key is None:
                kept.append(message)
            elif self.buckets.level(key) >= 1:
                self.buckets.spend(key, 1)
                kept.append(message)
            else:
                INGEST_THROTTLED.labels(key[1].value).inc()
        return kept


def _key(topic: str) -> tuple[str, Channel] | None:
    try:
        return _KEYS[topic]
    except KeyError:
        pass
    try:
        parts = parse_topic(topic)
    except InvalidTopic:
        return None  # a dead letter, decided by the decoder
    key = (
        (parts.node_id, parts.channel)
        if isinstance(parts, NodeTopic) and parts.channel in THROTTLED
        else None
    )
    if len(_KEYS) < _CACHED_TOPICS:  # each box reports and sends events on a few topics
        _KEYS[topic] = key
    return key


_CACHED_TOPICS = 100_000
_KEYS: dict[str, tuple[str, Channel] | None] = {}
