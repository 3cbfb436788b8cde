"""Connections to the service's PostgreSQL (or TimescaleDB)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")


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


def with_database(settings: CloudSettings, action: Callable[[psycopg.Connection], T]) -> T:
    """`action` on a new connection, waiting for the database while it cannot be reached (a
    service started before its database, or during its restart): retried with backoff up to
    every 30 s, each reason logged once."""
    reasons: set[str] = set()
    began = time.monotonic()

    def waiting(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = (str(exc).strip().splitlines() or ["unknown"])[0]
        if reason not in reasons:
            reasons.add(reason)
            logger.warning("waiting for the database (%s); retrying with backoff", reason)

    for attempt in Retrying(
        retry=retry_if_exception_type(psycopg.OperationalError),
        wait=wait_exponential_jitter(multiplier=0.5, max=30, jitter=0.5),
        before_sleep=waiting,
        reraise=True,
    ):
        with attempt, connect(settings) as conn:
            result = action(conn)
    if reasons:
        logger.info("database reached after %.0f s", time.monotonic() - began)
    return result


def like_prefix(code: str) -> str:
    """A LIKE pattern for "this unit and everything below it" (the index answers it)."""
    return code.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
