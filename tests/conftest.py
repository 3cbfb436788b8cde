"""Service fixtures for the whole suite: assets, a real PostgreSQL, private Mosquittos."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.postgres import fresh_database, postgres_server
from tests.support.processes import GridwatchProcess

REPO = Path(__file__).resolve().parent.parent


def find_assets() -> Path | None:
    """GRIDWATCH_ASSETS, else shared/assets beside the checkout (or beside a parent)."""
    explicit = os.environ.get("GRIDWATCH_ASSETS")
    if explicit:
        return Path(explicit)
    for parent in REPO.parents:
        if (parent / "shared" / "assets" / "models").is_dir():
            return parent / "shared" / "assets"
    return None


@pytest.fixture(scope="module", autouse=True)
def no_process_left() -> Iterator[None]:
    """After each module, what its tests started and did not stop is killed (a failing test
    left a service running for the rest of the session)."""
    yield
    left = GridwatchProcess.kill_leftovers()
    if left:
        warnings.warn(f"killed processes a test left running: {left}", stacklevel=1)


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The shared assets (models, clips, images), never copied into the repository."""
    path = find_assets()
    if path is None or not (path / "models").is_dir():
        pytest.fail(
            f"assets not found (looked at {path or '../shared/assets'}): set "
            "GRIDWATCH_ASSETS to the assets folder"
        )
    return path


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An admin URL of a real PostgreSQL server (see tests/support/postgres.py)."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as admin_url:
        yield admin_url


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database on that server for this test session; dropped afterwards."""
    with fresh_database(postgres_admin_url) as url:
        yield url


BrokerFactory = Callable[..., MosquittoBroker]


@pytest.fixture(scope="module")
def broker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """Start private Mosquitto brokers with the options a test chooses; stopped at the end."""
    started: list[MosquittoBroker] = []

    def start(options: BrokerOptions | None = None) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), options).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture(scope="module")
def broker(broker_factory: BrokerFactory) -> MosquittoBroker:
    """A private anonymous Mosquitto for this test module."""
    return broker_factory()
