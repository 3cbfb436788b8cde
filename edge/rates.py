"""Event rates over a sliding window, for stream and analysis figures."""

from __future__ import annotations

import threading
import time
from collections import deque


class RateMeter:
    """Counts events in one-second buckets; `rate()` is events per second over `window_s`."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.total = 0
        self._buckets: deque[list[float]] = deque()  # [second, count]
        self._lock = threading.Lock()

    def add(self, count: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        second = float(int(now))
        with self._lock:
            self.total += count
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1][1] += count
            else:
                self._buckets.append([second, float(count)])
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] < now - self.window_s:
            self._buckets.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            count = sum(bucket[1] for bucket in self._buckets)
        return count / self.window_s
