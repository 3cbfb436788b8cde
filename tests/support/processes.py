"""Helpers for tests that start, watch and kill real processes."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar, Self

REPO = Path(__file__).resolve().parents[2]


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


class GridwatchProcess:
    """One `gridwatch ...` command run as its own process (its own session, so a kill takes
    only it), logging to `log_path`."""

    # Started and not yet stopped: what a test's clean-up missed is killed after its module
    # (tests/conftest.py), so one failing test never leaves a service running into others.
    running: ClassVar[set[GridwatchProcess]] = set()

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.args = args
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gridwatch", *self.args],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        GridwatchProcess.running.add(self)
        return self

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, as a supervisor stops a service; returns the exit code (killed, and
        TimeoutExpired raised, when it does not stop in time)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.process = None
        GridwatchProcess.running.discard(self)
        return code

    def kill(self) -> None:
        """SIGKILL: a crash or a power cut, as far as the process can tell."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
        GridwatchProcess.running.discard(self)

    @classmethod
    def kill_leftovers(cls) -> list[str]:
        """Kill every process still running; returns their commands."""
        left = [p for p in cls.running if p.process is not None and p.process.poll() is None]
        for process in list(cls.running):
            process.kill()
        return [" ".join(p.args) for p in left]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
