"""Helpers for tests that start, watch and kill real processes."""

from __future__ import annotations

import selectors
import subprocess
import time


def wait_for_line(process: subprocess.Popen[str], expected: str, timeout_s: float = 10.0) -> str:
    """Read the process's stdout until a line containing `expected`; fail on exit or timeout."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                continue
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"process exited ({process.wait()}) before {expected!r}: {seen}")
            seen.append(line.rstrip("\n"))
            if expected in line:
                return line
    raise TimeoutError(f"no line with {expected!r} in {timeout_s} s; saw {seen[-5:]}")
