"""Fixtures for the cloud: a migrated database per test module."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from cloud.db.schema import prepare_database
from cloud.settings import CloudSettings
from tests.support.postgres import fresh_database


@pytest.fixture(scope="module")
def cloud_db(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database with the cloud schema (plain PostgreSQL path), per test module."""
    with fresh_database(postgres_admin_url, prefix="gridwatch_test_cloud") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        yield url
