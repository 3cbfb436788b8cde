"""Versioned SQL migrations, each applied once, in a transaction where PostgreSQL allows.

`NNNN_name.sql` applies everywhere; `NNNN_name.timescale.sql` or `NNNN_name.plain.sql`
follows it on the matching database. A file starting with `-- no-transaction` runs
statement by statement (TimescaleDB's continuous aggregates need that), and is written
to be re-runnable. Placeholders: {partitioned_observed_at}, {partitioned_sent_at},
{timezone}.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_NAME = re.compile(r"^(\d{4}_[a-z0-9_]+?)(?:\.(timescale|plain))?\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    files: tuple[Path, ...]


def migrations(timescale: bool) -> list[Migration]:
    variant = "timescale" if timescale else "plain"
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} does not follow NNNN_name[.variant].sql")
        version, which = match.groups()
        if which is None:
            found.setdefault(version, []).append((0, path))
        elif which == variant:
            found.setdefault(version, []).append((1, path))
    return [Migration(v, tuple(p for _, p in sorted(files))) for v, files in sorted(found.items())]


def render(sql: str, *, timescale: bool, timezone: str) -> str:
    return (
        sql.replace(
            "{partitioned_observed_at}", "" if timescale else "PARTITION BY RANGE (observed_at)"
        )
        .replace("{partitioned_sent_at}", "" if timescale else "PARTITION BY RANGE (sent_at)")
        .replace("{timezone}", timezone)
    )


def _statements(sql: str) -> list[str]:
    """Split a file on semicolons at line ends, except inside a $$-quoted function body."""
    statements, current, in_body = [], [], False
    for line in sql.splitlines():
        current.append(line)
        if line.count("$$") % 2:
            in_body = not in_body
        if not in_body and re.search(r";\s*$", line):
            statements.append("\n".join(current).strip().removesuffix(";").strip())
            current = []
    statements.append("\n".join(current).strip())
    return [
        part
        for part in statements
        if part
        and not all(line.strip().startswith("--") or not line.strip() for line in part.splitlines())
    ]


def applied_versions(conn: psycopg.Connection) -> set[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.commit()
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


_LOCK_ID = 0x6777_6D69  # "gwmi": one migrator at a time, however many processes start


@contextmanager
def migration_lock(conn: psycopg.Connection) -> Iterator[None]:
    """One process at a time changes the schema or the time series' policies, however many
    start together (adding a policy that another just added is an error, not a no-op)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
        if not conn.autocommit:
            conn.commit()


def migrate(conn: psycopg.Connection, *, timescale: bool, timezone: str) -> list[str]:
    """Apply what is missing; returns the versions applied now."""
    with migration_lock(conn):
        return _migrate(conn, timescale=timescale, timezone=timezone)


def _migrate(conn: psycopg.Connection, *, timescale: bool, timezone: str) -> list[str]:
    done = applied_versions(conn)
    applied = []
    for migration in migrations(timescale):
        if migration.version in done:
            continue
        for path in migration.files:
            sql = render(path.read_text(encoding="utf-8"), timescale=timescale, timezone=timezone)
            if sql.lstrip().startswith("-- no-transaction"):
                conn.autocommit = True
                try:
                    for statement in _statements(sql):
                        conn.execute(statement)
                finally:
                    conn.autocommit = False
            else:
                with conn.transaction():
                    for statement in _statements(sql):
                        conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,))
        conn.commit()
        applied.append(migration.version)
        logger.info(
            "migration applied version=%s files=%s",
            migration.version,
            ", ".join(p.name for p in migration.files),
        )
    return applied
