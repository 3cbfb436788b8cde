"""Keep the county broker in step with the registry: its password file (hashes: nodes, the
service accounts, accounts made by hand) and its dynamic-security plugin (every account
bound to its client id, and what it may subscribe to and publish). Run beside Mosquitto:
once with `--init` while it is stopped (the plugin's file is written whole), then once or
following every change (`gridwatch cloud broker sync --follow`, woken by the database on
each credential change), talking to the running plugin on its control topic."""

from __future__ import annotations

import logging
import select
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pydantic import SecretStr

from cloud.alerts.render import org_path
from cloud.broker_acl import AppAccountRow, Grants, grants
from cloud.broker_control import BrokerControl
from cloud.broker_dynsec import plan, render_config
from cloud.broker_passwords import read_password_file, render_password_file, write_atomically
from cloud.db.registry import broker_accounts, next_lift_s, suspended_nodes
from cloud.errors import BrokerUnavailable, InvalidFile, ServiceUnavailable
from cloud.mqtt import address_of
from protocols.alerts import OrgPath
from protocols.passwords import hash_password, verify_password
from protocols.topics import SHARED_GROUP_DEFAULT

logger = logging.getLogger(__name__)

# Even without a notice (one lost while the database restarted), the broker is checked this
# often; after a failed round, sooner.
RESYNC_S = 60.0
RETRY_S = 5.0
ADMIN = "sync.admin"  # a dot: never a node id


@dataclass
class BrokerFiles:
    """What `broker sync` writes and where the running broker is."""

    password_file: Path
    pid_file: Path | None = None
    broker_url: str | None = None  # the broker's listener sync reaches the plugin on
    ca_file: Path | None = None
    services: list[str] = field(default_factory=list)  # `ingest.<name>`, `api.<name>`
    service_password: SecretStr | None = None  # one password for the service accounts
    admin: str = ADMIN
    admin_password: SecretStr | None = None
    ingest_group: str = SHARED_GROUP_DEFAULT
    apps: list[AppAccountRow] = field(default_factory=list)
    apps_file_name: str = "apps.csv"
    # Lines `username:hash` kept as they are (app accounts made with mosquitto_passwd).
    extra_passwords: Path | None = None
    # Restarts the running broker after its password file changed (see restart_broker).
    restart: Callable[[], None] | None = None


def app_accounts(conn: psycopg.Connection, files: BrokerFiles) -> list[tuple[str, OrgPath]]:
    """Each app account with the org path of its unit; an unknown unit is refused with the
    file's line."""
    units = {
        code: (level, name, parent)
        for code, level, name, parent in conn.execute(
            "SELECT code, level, name, parent_code FROM org_units"
        )
    }
    for line, row in enumerate(files.apps, start=2):
        if row.unit_code not in units:
            raise InvalidFile(
                f"{files.apps_file_name} line {line}: unit_code: unknown unit {row.unit_code}"
            )
    return [(r.username, org_path(r.unit_code, units)) for r in files.apps]


def _service_accounts(files: BrokerFiles) -> list[tuple[str, str]]:
    """The service accounts; an existing hash is kept while it still matches, so an
    unchanged registry rewrites nothing and reloads nothing."""
    if files.service_password is None:
        return []
    password = files.service_password.get_secret_value()
    known = dict(read_password_file(files.password_file))
    return [
        (user, known[user])
        if user in known and verify_password(password, known[user])
        else (user, hash_password(password))
        for user in files.services
    ]


def _extra(files: BrokerFiles) -> list[tuple[str, str]]:
    if files.extra_passwords is None:
        return []
    out = []
    for number, line in enumerate(
        files.extra_passwords.read_text(encoding="utf-8").splitlines(), start=1
    ):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith("$"):
            raise InvalidFile(f"{files.extra_passwords.name} line {number}: not `username:hash`")
        out.append((user, hashed))
    return out


def wanted(conn: psycopg.Connection, files: BrokerFiles) -> tuple[list[tuple[str, str]], Grants]:
    """The password file's accounts, and what the plugin must hold for them."""
    nodes = broker_accounts(conn)
    extra = _extra(files)
    accounts = nodes + _service_accounts(files) + extra
    users = [u for u, _ in accounts] + [files.admin]
    if len(users) != len(set(users)):
        raise InvalidFile(
            f"broker accounts repeat: {sorted({u for u in users if users.count(u) > 1})}"
        )
    # A suspended box keeps its password (a new password file restarts the broker for
    # everyone) but not its grants: the plugin disables its account until it is lifted.
    suspended = suspended_nodes(conn)
    access = grants(
        [n for n, _ in nodes if n not in suspended],
        files.services if files.service_password is not None else [],
        app_accounts(conn, files),
        [u for u, _ in extra],
        ingest_group=files.ingest_group,
    )
    return accounts, access


def init_broker(conn: psycopg.Connection, files: BrokerFiles, dynsec_file: Path) -> None:
    """For a broker that is stopped: the plugin's file whole (with its admin) and the
    password file. It reads both when it starts."""
    if files.admin_password is None:
        raise InvalidFile("the broker's admin password is not set (CLOUD_BROKER_ADMIN_PASSWORD)")
    accounts, access = wanted(conn, files)
    admin_hash = hash_password(files.admin_password.get_secret_value())
    # The broker reads the plugin's file at start and writes it after every change: its
    # user needs both (the group of the file's directory, or the broker's own user).
    write_atomically(dynsec_file, render_config(access, files.admin, admin_hash), mode=0o660)
    write_atomically(files.password_file, render_password_file(accounts))
    logger.info("broker files written for its start: %d accounts", len(accounts))


def sync_once(conn: psycopg.Connection, files: BrokerFiles) -> bool:
    """Bring the running broker's plugin, then its password file, to the registry; reload
    the broker when the file changed. Returns whether anything changed. When the plugin
    cannot be reached, the file only loses accounts (a new one would not be bound to its
    client id yet) and BrokerUnavailable is raised."""
    if files.admin_password is None:
        raise InvalidFile("the broker's admin password is not set (CLOUD_BROKER_ADMIN_PASSWORD)")
    accounts, access = wanted(conn, files)
    in_file = {user for user, _ in read_password_file(files.password_file)}
    host, port, tls = address_of(files.broker_url)
    failure: BrokerUnavailable | None = None
    commands = []
    try:
        with BrokerControl(
            host,
            port,
            username=files.admin,
            password=files.admin_password.get_secret_value(),
            tls=tls,
            ca_file=str(files.ca_file) if files.ca_file else None,
        ) as control:
            commands = plan(control.state(), access, admin=files.admin, in_password_file=in_file)
            if commands:
                control.call(commands)
    except BrokerUnavailable as exc:
        failure = exc
        accounts = [(user, hashed) for user, hashed in accounts if user in in_file]
    changed = write_atomically(files.password_file, render_password_file(accounts))
    if changed:
        restart_broker(files)
    if changed or commands:
        logger.info(
            "broker synced: %d accounts, %d plugin commands, password file %s",
            len(accounts),
            len(commands),
            "rewritten" if changed else "unchanged",
        )
    if failure is not None:
        raise failure
    return changed or bool(commands)


def restart_broker(files: BrokerFiles) -> None:
    """Have the broker read its new password file: Mosquitto reads it only at start, and a
    reload (SIGHUP) crashes Mosquitto 2.0.11 once a box whose session it re-checked comes
    back (a use-after-free in its session-expiry list, fixed upstream in PR #3341). So the
    broker is restarted (`files.restart`, e.g. `systemctl restart mosquitto`); its sessions
    and queued messages are kept in its persistence file, and every client reconnects."""
    if files.restart is None:
        logger.warning(
            "the password file changed: restart the broker to apply it (no restart command)"
        )
        return
    try:
        files.restart()
    except (OSError, subprocess.CalledProcessError, ServiceUnavailable) as exc:
        logger.error("the broker could not be restarted to read its password file: %s", exc)


def _broker_pid(files: BrokerFiles) -> str | None:
    try:
        return files.pid_file.read_text().strip() if files.pid_file else None
    except OSError:
        return None


COALESCE_S = 1.0


def follow(url: str, files: BrokerFiles, stop: threading.Event) -> None:
    """Sync now, then on every credential change (LISTEN), when the broker restarts (its
    pid changes: it started from its plugin file, which may be older than the password
    file), and every RESYNC_S anyway."""
    with psycopg.connect(url, autocommit=True, application_name="gridwatch-broker-sync") as conn:
        conn.execute("LISTEN gridwatch_credentials")
        failing, first = False, True
        next_check = time.monotonic()
        broker_pid = _broker_pid(files)
        while not stop.is_set():
            if (pid := _broker_pid(files)) != broker_pid:
                broker_pid, next_check = pid, time.monotonic()
            if time.monotonic() >= next_check:
                try:
                    sync_once(conn, files)
                except BrokerUnavailable as exc:
                    if not failing:
                        logger.warning("broker not synced, retrying: %s", exc)
                    failing = True
                    next_check = time.monotonic() + RETRY_S
                else:
                    if failing or first:
                        logger.info("broker in step with the registry; following its changes")
                    failing = first = False
                    # A suspension that ends is lifted when it ends (nothing notifies it).
                    lift = next_lift_s(conn)
                    wait = RESYNC_S if lift is None else min(RESYNC_S, lift + 0.5)
                    next_check = time.monotonic() + wait
            # Short waits, so a stop request is seen within a second.
            ready, _, _ = select.select([conn.fileno()], [], [], 1.0)
            if ready:
                for _ in conn.notifies(timeout=0):
                    pass
                # A second for the burst to end (bulk provisioning issues many): one sync,
                # one restart of the broker, for all of them.
                next_check = min(next_check, time.monotonic() + COALESCE_S)
