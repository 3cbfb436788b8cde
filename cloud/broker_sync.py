"""Keep the county broker's password and ACL files in step with the registry, and reload the
broker (SIGHUP) when they change. Run beside Mosquitto: once, or following every change
(`gridwatch cloud broker sync --follow`, woken by the database on each credential change)."""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pydantic import SecretStr

from cloud.alerts.render import org_path
from cloud.broker_acl import AppAccountRow, render_acl
from cloud.broker_passwords import render_password_file, write_atomically
from cloud.db.registry import broker_accounts
from cloud.errors import InvalidFile
from protocols.alerts import OrgPath
from protocols.passwords import hash_password, verify_password

logger = logging.getLogger(__name__)

# Even without a notice (one lost while the database restarted), files are checked this often.
RESYNC_S = 60.0


@dataclass
class BrokerFiles:
    password_file: Path
    acl_file: Path
    pid_file: Path | None = None
    cloud_user: str = "cloud"
    cloud_password: SecretStr | None = None
    apps: list[AppAccountRow] = field(default_factory=list)
    apps_file_name: str = "apps.csv"
    # Lines `username:hash` kept as they are (app accounts made with mosquitto_passwd).
    extra_passwords: Path | None = None


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


def _cloud_account(files: BrokerFiles) -> list[tuple[str, str]]:
    """The service's own account; its existing hash is kept while it still matches, so an
    unchanged registry rewrites nothing and reloads nothing."""
    if files.cloud_password is None:
        return []
    password = files.cloud_password.get_secret_value()
    if files.password_file.exists():
        for line in files.password_file.read_text(encoding="utf-8").splitlines():
            user, _, hashed = line.partition(":")
            if user == files.cloud_user and verify_password(password, hashed):
                return [(user, hashed)]
    return [(files.cloud_user, hash_password(password))]


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


def sync_once(conn: psycopg.Connection, files: BrokerFiles) -> bool:
    """Write both files when they differ; reload the broker then. Returns whether it did."""
    accounts = broker_accounts(conn) + _cloud_account(files) + _extra(files)
    users = [u for u, _ in accounts]
    if len(users) != len(set(users)):
        raise InvalidFile(
            f"broker accounts repeat: {sorted({u for u in users if users.count(u) > 1})}"
        )
    changed = write_atomically(files.password_file, render_password_file(accounts))
    acl = render_acl(files.cloud_user, app_accounts(conn, files))
    changed = write_atomically(files.acl_file, acl) or changed
    if changed:
        reload_broker(files.pid_file)
        logger.info("broker files written: %d accounts", len(accounts))
    return changed


def reload_broker(pid_file: Path | None) -> None:
    """SIGHUP: Mosquitto re-reads its password and ACL files; connected clients stay."""
    if pid_file is None:
        return
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        logger.warning("broker not reloaded: cannot read its pid from %s: %s", pid_file, exc)
        return
    os.kill(pid, signal.SIGHUP)


def follow(url: str, files: BrokerFiles, stop: threading.Event) -> None:
    """Sync now, then on every credential change (LISTEN), and every RESYNC_S anyway."""
    with psycopg.connect(url, autocommit=True, application_name="gridwatch-broker-sync") as conn:
        conn.execute("LISTEN gridwatch_credentials")
        sync_once(conn, files)
        next_check = time.monotonic() + RESYNC_S
        while not stop.is_set():
            # Short waits, so a stop request is seen within a second.
            ready, _, _ = select.select([conn.fileno()], [], [], 1.0)
            if ready:
                for _ in conn.notifies(timeout=0):
                    pass
            if ready or time.monotonic() >= next_check:
                sync_once(conn, files)
                next_check = time.monotonic() + RESYNC_S
