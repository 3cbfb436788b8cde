"""Start-up that waits, and says why: a database that is not there yet, TimescaleDB that the
server cannot load."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from cloud.db.timeseries import use_timescale
from tests.support.ports import free_port
from tests.support.postgres import private_server
from tests.support.processes import wait_for_line


def test_migrate_waits_for_a_database_that_comes_up_later() -> None:
    port = free_port()
    env = {**os.environ, "CLOUD_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/postgres"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gridwatch", "cloud", "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        waiting = wait_for_line(process, "waiting for the database", timeout_s=60)
        with private_server(port):
            output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    lines = [waiting, *output.splitlines()]
    assert process.returncode == 0, output
    assert "Connection refused" in waiting
    assert sum("waiting for the database" in line for line in lines) == 1  # once a reason
    assert any("database reached after" in line for line in lines)
    assert "database ready (plain PostgreSQL)" in output


class PreloadMissing:
    """Test double of a PostgreSQL server with TimescaleDB installed but not in
    shared_preload_libraries (no such server can run here): it answers the three queries
    use_timescale makes as such a server does, and refuses CREATE EXTENSION with its error."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, statement: str) -> PreloadMissing:
        self.statements.append(statement)
        if statement.startswith("CREATE EXTENSION"):
            raise psycopg.errors.FeatureNotSupported('extension "timescaledb" must be preloaded')
        return self

    def fetchone(self) -> tuple[object, ...] | None:
        last = self.statements[-1]
        if "pg_available_extensions" in last:
            return (1,)
        if "to_regclass" in last:
            return (False,)
        return None  # not created

    def transaction(self) -> PreloadMissing:
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_auto_falls_back_to_plain_when_the_server_cannot_load_timescaledb(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert use_timescale(PreloadMissing(), "auto") is False  # type: ignore[arg-type]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "shared_preload_libraries" in warnings[0]
    assert "must be preloaded" in warnings[0]
    with pytest.raises(RuntimeError, match="shared_preload_libraries"):
        use_timescale(PreloadMissing(), "on")  # type: ignore[arg-type]
