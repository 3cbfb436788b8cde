"""A background task that publishes what the database holds unpublished, in rounds: woken
early when there is news, otherwise every few seconds. While the broker is away a round
publishes nothing and marks nothing, and the next round tries again; the state change is
logged once, not once a round."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

from cloud.errors import BrokerUnavailable

logger = logging.getLogger(__name__)

POLL_S = 5.0
HOLD_FIRST_S = 5.0
HOLD_MAX_S = 600.0

K = TypeVar("K", bound=Hashable)


class Held(Generic[K]):
    """What the broker refused, kept out of the relay's claims for a while: a refused
    message is tried again (its account's rules may be mended) but never blocks the ones
    behind it in the queue. The wait doubles with each refusal, up to HOLD_MAX_S."""

    def __init__(self, first_s: float = HOLD_FIRST_S, max_s: float = HOLD_MAX_S) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._until: dict[K, tuple[float, float]] = {}  # key -> (retry at, last wait)

    def hold(self, key: K) -> None:
        wait = min(self.max_s, 2 * self._until[key][1]) if key in self._until else self.first_s
        self._until[key] = (time.monotonic() + wait, wait)

    def release(self, key: K) -> None:
        self._until.pop(key, None)

    def keys(self) -> list[K]:
        """The keys still held; those whose wait is over may be claimed again (and keep
        their doubling should they be refused again)."""
        now = time.monotonic()
        return [key for key, (until, _) in self._until.items() if until > now]


class RelayLoop:
    """Subclasses publish one batch in `relay_once` and return how many they published."""

    name = "relay"
    batch = 200

    def __init__(self, *, wake: asyncio.Event | None = None, poll_s: float = POLL_S) -> None:
        self.poll_s = poll_s
        self.wake = wake or asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def relay_once(self) -> int:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
                # cancellation that stops the task.
                async with asyncio.timeout(self.poll_s):
                    await self.wake.wait()
            self.wake.clear()
            try:
                while await self.relay_once() == self.batch:
                    pass
                if self._failing:
                    logger.info("%s publishing again", self.name)
                    self._failing = False
            except BrokerUnavailable as exc:
                if not self._failing:
                    logger.warning("%s waits for the broker: %s", self.name, exc)
                    self._failing = True
            except Exception:  # the database away, a bug: the next round tries again
                logger.exception("%s round failed; next in %g s", self.name, self.poll_s)
