"""Decoders that fail the way no exception handler can catch: for the quarantine's tests,
which hand one to the child process it runs (a real crash of a real process)."""

from __future__ import annotations

import ctypes
import threading

from cloud.ingest.subscriber import Received

POISON = b"poison: kills its decoder"
HANG = b"poison: hangs its decoder"


def crash_on_poison(message: Received) -> object:
    """Segfault on POISON, never return on HANG, else nothing."""
    if message.payload.startswith(POISON):
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if message.payload.startswith(HANG):
        threading.Event().wait()
    return None
