"""Messages redelivered after their process died are decoded in a child process first: one
that kills or hangs the child is a dead letter, not the next ingest process's end.

Every exception a message raises is already its own dead letter (cloud/ingest/decode.py).
What is left can end a process outright — a crash in a decoder's C or Rust code, the
kernel's out-of-memory killer, a loop that never ends — and a message that did so once
would do it again on every restart: the broker redelivers what was not acknowledged, to
the restarted session. Such a message comes back with the broker's DUP flag, so ingest
tries the redelivered messages of a batch in a child process (forked from a server started
once) before it decodes them itself; the decoders are deterministic, so what the child
survived the parent survives. The first delivery of a poison message can still end the
process once; no message can end two.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from cloud.ingest.dead_letters import Cause, DeadLetter
from cloud.ingest.decode import decode_batch
from cloud.ingest.subscriber import Received

logger = logging.getLogger(__name__)

# A message the child works on for this long hung it: decoding one takes microseconds.
HANG_S = 10.0
START_S = 60.0  # a forkserver's first start imports the decoders
_POLL_S = 0.05

# What the child runs on each message; an argument so that a test can hand it a decoder
# that crashes for real.
Probe = Callable[[Received], object]


def probe_decode(message: Received) -> object:
    """The child's work: decode as the parent will (decode_batch never raises)."""
    return decode_batch([message])


def _child(conn: Connection, progress: Synchronized[int], probe: Probe) -> None:
    """Try each message; `progress` names the one being tried, so a death names it."""
    messages: list[Received] = conn.recv()
    for index, message in enumerate(messages):
        progress.value = index
        probe(message)
    progress.value = len(messages)
    conn.send(True)


class QuarantineUnavailable(Exception):
    """The child could not be started or died before it tried anything."""


class Quarantine:
    def __init__(self, probe: Probe = probe_decode, hang_s: float = HANG_S) -> None:
        self.probe = probe
        self.hang_s = hang_s
        self._context = multiprocessing.get_context("forkserver")
        # Children fork from a server that has imported the decoders once.
        self._context.set_forkserver_preload([__name__, probe.__module__])
        self._lock = threading.Lock()

    def screen(self, messages: list[Received]) -> tuple[list[Received], list[DeadLetter]]:
        """`messages` split into those a decoder survives and a dead letter for each that
        killed or hung the child trying it."""
        survivors: list[Received] = []
        dead: list[DeadLetter] = []
        rest = messages
        with self._lock:
            while rest:
                done, why = self._try(rest)
                if done < 0:
                    raise QuarantineUnavailable(why)
                survivors += rest[:done]
                if done >= len(rest):
                    break
                culprit = rest[done]
                logger.error(
                    "a message on %s (%d bytes) %s: dead letter",
                    culprit.topic,
                    len(culprit.payload),
                    why,
                )
                dead.append(DeadLetter(culprit.topic, culprit.payload, "$", why, Cause.CRASH))
                rest = rest[done + 1 :]
        return survivors, dead

    def _try(self, messages: list[Received]) -> tuple[int, str]:
        """How many of `messages` the child got through, and why it stopped short."""
        progress: Synchronized[int] = self._context.Value("q", -1, lock=False)
        parent, child_end = self._context.Pipe()
        child = self._context.Process(
            target=_child, args=(child_end, progress, self.probe), daemon=True
        )
        child.start()
        child_end.close()
        try:
            parent.send(messages)
            return self._watch(child, progress, len(messages))
        except (BrokenPipeError, EOFError):  # it died while reading what it was sent
            child.join(self.hang_s)
            return progress.value, _death(child.exitcode)
        finally:
            if child.is_alive():
                child.kill()
            child.join()
            parent.close()

    def _watch(self, child: Any, progress: Synchronized[int], total: int) -> tuple[int, str]:
        """Wait for the child: done, dead (on which message), or stuck on one too long."""
        current, since = progress.value, time.monotonic()
        while True:
            child.join(_POLL_S)
            if child.exitcode is not None:
                done = progress.value
                if done >= total and child.exitcode == 0:
                    return total, ""
                return done, _death(child.exitcode)  # -1: before it tried any
            if progress.value != current:
                current, since = progress.value, time.monotonic()
            elif time.monotonic() - since > (self.hang_s if current >= 0 else START_S):
                child.kill()
                if current < 0:
                    return -1, f"the decoder did not start in {START_S:g} s"
                return current, f"hung the decoder for more than {self.hang_s:g} s"


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed the decoder ({signal.Signals(-exitcode).name})"
        except ValueError:
            pass
    return f"ended the decoder (exit code {exitcode})"
