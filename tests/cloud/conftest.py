"""Fixtures for the cloud: a migrated database per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cloud.db.schema import prepare_database
from cloud.settings import CloudSettings
from tests.support.postgres import fresh_database
from tests.support.timescale import timescale_dir, timescale_server


@pytest.fixture(scope="module")
def cloud_db(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database with the cloud schema (plain PostgreSQL path), per test module."""
    with fresh_database(postgres_admin_url, prefix="gridwatch_test_cloud") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        yield url


@pytest.fixture(scope="session")
def timescale_url(assets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A TimescaleDB 2.x endpoint (PGlite WASM): empty at first; one connection at a time."""
    with timescale_server(timescale_dir(assets_dir), tmp_path_factory.mktemp("tsdb")) as url:
        yield url
