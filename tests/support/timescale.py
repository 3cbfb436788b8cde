"""A real TimescaleDB for tests: the WASM build (PGlite + TimescaleDB) from npm, served over
TCP by the shared proxy script. One client connection at a time (its limit)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import wait_for_line


def timescale_dir(assets_dir: Path) -> Path:
    override = os.environ.get("GRIDWATCH_TIMESCALE_DIR")
    return Path(override) if override else assets_dir.parent / "timescale"


@contextmanager
def timescale_server(source: Path, workdir: Path) -> Iterator[str]:
    """Copy the server and its package.json, `npm install` (the registry), start it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("Node.js and npm are needed for the TimescaleDB test endpoint")
    for name in ("tsdb-pglite-server.mjs", "package.json"):
        shutil.copy(source / name, workdir / name)
    subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund"],
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=300,
    )
    port = free_port()
    process = subprocess.Popen(
        [node, str(workdir / "tsdb-pglite-server.mjs")],
        cwd=workdir,
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_line(process, "listening", timeout_s=120)
        yield f"host=127.0.0.1 port={port} user=postgres password=postgres dbname=postgres"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
