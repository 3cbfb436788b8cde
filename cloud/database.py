"""Connections to the service's PostgreSQL (or TimescaleDB)."""

from __future__ import annotations

import psycopg

from cloud.settings import CloudSettings


def database_url(settings: CloudSettings) -> str:
    if settings.database_url is None:
        raise RuntimeError(
            "no database: set CLOUD_DATABASE_URL (`gridwatch cloud serve` without it "
            "starts an embedded PostgreSQL)"
        )
    return settings.database_url


def connect(settings: CloudSettings) -> psycopg.Connection:
    """An autocommit connection; writers open explicit transactions."""
    return psycopg.connect(
        database_url(settings), autocommit=True, application_name="gridwatch", connect_timeout=10
    )


def like_prefix(code: str) -> str:
    """A LIKE pattern for "this unit and everything below it" (the index answers it)."""
    return code.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
