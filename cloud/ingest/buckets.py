"""Token buckets by key: what a box (or one of its channels) may use of ingest, refilled at
a steady rate up to a burst. The report throttle and the boxes' shares both count with them."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_MAX_BUCKETS = 100_000  # keys tracked at once; beyond, the full ones are forgotten


@dataclass
class _Bucket:
    level: float
    at: float


class Buckets(Generic[K]):
    """A bucket per key, `burst` deep, refilled at `rate` a second; a new key's is full."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[K, _Bucket] = {}

    def level(self, key: K) -> float:
        """What `key` may use now (negative after an overdraw)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.level = min(self.burst, bucket.level + (now - bucket.at) * self.rate)
        bucket.at = now
        return bucket.level

    def spend(self, key: K, amount: float) -> None:
        """Take `amount` from `key`'s bucket (read with `level` first); it may overdraw."""
        self._buckets[key].level -= amount

    def forget(self, key: K) -> None:
        """Start `key` afresh: its next bucket is full."""
        self._buckets.pop(key, None)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: a new one starts full just the same."""
        refill_s = self.burst / self.rate if self.rate > 0 else float("inf")
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.at < refill_s}
