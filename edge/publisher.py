"""Drains the outbox over the link: a window of messages in flight. At the broker's PUBACK
an event is marked sent (its receipt deletes it, see edge/outbox.py) and anything else is
deleted."""

from __future__ import annotations

import logging
import queue
import threading
import time

from edge.link import Link
from edge.outbox import Outbox

logger = logging.getLogger(__name__)

# An entry handed to paho and not acknowledged this long after a (re)connect is sent
# again from the outbox: a duplicate is harmless (ids), a loss is not.
RESEND_AFTER_S = 60.0
# How much is handed to paho at once. paho keeps at most MAX_INFLIGHT unacknowledged on
# the wire and queues the rest, sending each as an ack frees a slot in its own thread;
# handing it only a window of 50 made every refill wait on a thread switch (2.5k/s).
WINDOW_ENTRIES = 500
WINDOW_BYTES = 8 * 1024 * 1024
# MQTT 5 PUBACK reason codes.
NO_MATCHING_SUBSCRIBERS = 0x10
REFUSED = 0x80
NO_SUBSCRIBER_PAUSE_S = 5.0


class Publisher:
    def __init__(self, outbox: Outbox, link: Link, *, window: int = WINDOW_ENTRIES) -> None:
        self.outbox = outbox
        self.link = link
        self.window = window
        self.sent = 0
        self.acked = 0
        self.refused = 0
        # mid -> (entry id, retain, handed at, kept for a receipt)
        self._inflight: dict[int, tuple[int, bool, float, bool]] = {}
        self._paused_until = 0.0  # nobody subscribed: wait before trying again
        self.unheard = 0
        self._acks: queue.Queue[tuple[int, int]] = queue.Queue()
        self._done: list[int] = []  # acknowledged, not yet deleted from the outbox
        self._sent: list[int] = []  # events acknowledged, not yet marked sent
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def on_published(self, mid: int, reason: int) -> None:
        """paho's PUBACK callback (network thread), with the MQTT 5 reason code."""
        self._acks.put((mid, reason))
        self._wake.set()

    def notify(self) -> None:
        """New entries are in the outbox."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def idle(self) -> bool:
        return (
            not self._inflight
            and not self._done
            and not self._sent
            and self.outbox.stats().unsent == 0
        )

    def flush(self, timeout_s: float) -> bool:
        """Wait (bounded) until the broker has taken everything stored (events awaiting
        their receipt stay in the outbox, and are sent again after a restart if need be)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.idle():
                return True
            self._wake.set()
            time.sleep(0.05)  # shutdown only: poll the outbox depth until it drains
        return self.idle()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before looking for work: a wake-up after this is kept
            self._take_acks()
            if not self._send():
                self._wake.wait(0.5)
        self._take_acks()

    def _take_acks(self) -> None:
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue
            entry_id, retain, _, kept = entry
            if reason == NO_MATCHING_SUBSCRIBERS and not retain:
                # The broker took it but nobody subscribes: the cloud's ingest is away (or,
                # after a broker restart, not subscribed again yet). Keep it and retry.
                self.unheard += 1
                if time.monotonic() >= self._paused_until:
                    logger.warning(
                        "no subscriber for the node's messages; holding the outbox for %.0f s",
                        NO_SUBSCRIBER_PAUSE_S,
                    )
                self._paused_until = time.monotonic() + NO_SUBSCRIBER_PAUSE_S
                continue
            if reason >= REFUSED:
                # The broker refused it (its ACL): retrying forever would block the queue.
                self.refused += 1
                logger.error(
                    "broker refused an outbox entry id=%d reason=%d; dropped", entry_id, reason
                )
                self._done.append(entry_id)
            else:
                (self._sent if kept else self._done).append(entry_id)
        # In batches: one transaction per acknowledged message caps the drain.
        waiting = len(self._done) + len(self._sent)
        if waiting and (waiting >= self.window // 2 or not self._inflight):
            self.outbox.remove(self._done)
            self.outbox.mark_sent(self._sent)
            self.acked += waiting
            self._done, self._sent = [], []

    def _send(self) -> int:
        if not self.link.connected.is_set() or time.monotonic() < self._paused_until:
            return 0
        now = time.monotonic()
        for mid, (_, _, handed, _) in list(self._inflight.items()):
            if now - handed > RESEND_AFTER_S:
                del self._inflight[mid]  # lost with a broker session: send it again
        room = self.window - len(self._inflight)
        if room < max(1, self.window // 2):
            # Refill by half windows: each outbox read and each delete then covers ~25
            # entries instead of one (one transaction per message capped drains at ~7k/s).
            return 0
        # In flight, or acknowledged and waiting for the batched delete: not to send again.
        busy = (
            {entry_id for entry_id, _, _, _ in self._inflight.values()}
            | set(self._done)
            | set(self._sent)
        )
        entries = self.outbox.pending(room, exclude=busy)
        sent = 0
        handed_bytes = 0
        for entry in entries:
            if sent and handed_bytes + len(entry.payload) > WINDOW_BYTES:
                break  # a window of snapshots: the rest waits for the next round
            handed_bytes += len(entry.payload)
            mid = self.link.publish(entry.topic, entry.payload, entry.qos, entry.retain)
            if mid is None:
                break
            if entry.qos == 0:
                self.outbox.remove([entry.id])
            else:
                self._inflight[mid] = (entry.id, entry.retain, now, entry.seq is not None)

            sent += 1
        self.sent += sent
        return sent
