"""`gridwatch demo`: the whole county on one machine, in one command.

It starts an embedded PostgreSQL and a Mosquitto configured as `broker sync` configures a
county's (registry accounts only, each bound to its client id, subscriptions checked when
they are made), imports a small real county, runs the county service (API, timers, fleet
monitor) and ingest as processes of their own with their own broker accounts, provisions
three boxes through the standalone provisioning path (each its own broker account and
bundle), and runs them as separate `gridwatch edge run` processes on the demo's clips.
Everything it keeps (database, broker, boxes' outboxes, logs, the ports it handed out) is
under `--dir`, so a second run keeps its history. Ctrl-C, a closed terminal (SIGHUP) or
SIGTERM stop everything; one demo runs from a folder at a time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import httpx2 as httpx
import psycopg
import typer

from cloud.access import Principal, Role
from cloud.auth import issue_access_token
from cloud.broker import alive, is_listening
from cloud.cases.rule_sets import ever_set_by, set_rules
from cloud.cases.rules import load_rules
from cloud.db.schema import prepare_database
from cloud.demo import county
from cloud.demo.assets import DemoAssets, draw_scene, find_assets
from cloud.embedded import SecuredBroker, embedded_database, kept_port, secured_broker
from cloud.errors import CloudError
from cloud.org_import import OrgFiles, import_org
from cloud.settings import CloudSettings
from cloud.tiers import Level

logger = logging.getLogger(__name__)
DEMO = Principal("demo", Role.COUNTY_ADMIN, county.COUNTY, Level.COUNTY)
app = typer.Typer(help="The whole county on one machine.", invoke_without_command=True)

# Short deadlines, so a case nobody acknowledges escalates while one watches.
DEMO_RULES = """\
# The demo's deadlines: a minute to acknowledge, ten to resolve, whatever the severity.
deadlines:
  low: {ack_s: 60, resolve_s: 600}
  medium: {ack_s: 60, resolve_s: 600}
  high: {ack_s: 60, resolve_s: 600}
  critical: {ack_s: 60, resolve_s: 600}
"""


class Processes:
    """The demo's child processes: started in their own session (Ctrl-C reaches the demo,
    which stops them in order), each logging to a file."""

    def __init__(self, logs: Path, pids: Path) -> None:
        self.logs = logs
        self.pids = pids  # what runs, for a next demo to stop if this one was killed
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self.start_program(name, [sys.executable, "-m", "gridwatch", *args], env)

    def start_program(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.started.append((name, process))
        self.pids.write_text("".join(f"{p.pid}\n" for _, p in self.started))
        return process

    def alive(self) -> list[str]:
        return [name for name, p in self.started if p.poll() is None]

    def stop(self) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in reversed(self.started):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in 30 s: killed", name)
                process.kill()
                process.wait(10)
        # All stopped: their ids may be anyone's next, and a next demo stops what it lists.
        self.pids.unlink(missing_ok=True)


def stop_leftovers(pids: Path) -> int:
    """Stop what a demo killed without its chance to stop them left running (its service,
    ingest, boxes, cameras): a new demo beside them would share their database, outboxes
    and broker accounts. Returns how many were stopped."""
    try:
        listed = [int(line) for line in pids.read_text().split()]
    except (OSError, ValueError):
        return 0
    left = []
    for pid in listed:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if alive(pid) and (b"gridwatch" in cmdline or CAMERA_SERVER.name.encode() in cmdline):
            os.kill(pid, signal.SIGTERM)
            left.append(pid)
    deadline = time.monotonic() + 30
    while any(alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for them to stop, bounded by the deadline
    for pid in left:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    pids.unlink(missing_ok=True)
    return len(left)


@contextmanager
def one_demo(directory: Path) -> Iterator[None]:
    """Hold the folder's lock while the demo runs: a second demo from the same folder is
    refused (it broke the first: two ingests on one account, two agents on one outbox)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "demo.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise RuntimeError(
                f"a demo is already running from {directory} (pid {holder}): stop it first "
                f"(Ctrl-C in its terminal, or kill {holder}), or give this one another --dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def _service_port(directory: Path, wanted: int | None) -> int:
    """The service's port: `wanted`, else the one kept from an earlier run (the boxes and
    the logins printed name it), else 8080; a free one when that is taken."""
    kept = directory / "service-port"
    asked = wanted or (int(kept.read_text()) if kept.exists() else DEFAULT_PORT)
    port = kept_port(kept, asked)
    if port != asked:
        logger.warning("port %d is taken by another program: the service uses %d", asked, port)
    return port


def _secret(path: Path, length: int = 48) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(length))
        path.chmod(0o600)
    return path.read_text().strip()


def _wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (
                log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
            )
            raise RuntimeError(
                f"the county service stopped while starting (see {log}):\n  " + "\n  ".join(tail)
            )
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # polling a starting service, not synchronising anything
    raise RuntimeError(f"the county service did not come up in {timeout_s:g} s")


def _demo_rules(conn: psycopg.Connection, path: Path) -> None:
    """The demo's short deadlines put in force once, as a county admin sets rules; after
    that the rules are the county's (a later start leaves an admin's changes alone)."""
    path.write_text(DEMO_RULES)
    rules = load_rules(path)
    if not ever_set_by(conn, DEMO.subject):
        set_rules(conn, rules, principal=DEMO, reason="the demo's one-minute deadlines")


def _import_county(url: str, directory: Path) -> dict[str, str]:
    """The demo county, imported; a password for each login that has none yet (the first
    run's, or one a newer demo adds), printed once and kept by nobody."""
    files = county.write_org(directory)
    with psycopg.connect(url, autocommit=True) as conn:
        result = import_org(
            conn,
            OrgFiles(files["units"], files["departments"], files["staff"], files["geometry"]),
            DEMO,
            set_passwords=True,
        )
    return result.passwords


def _provision(
    directory: Path,
    service_url: str,
    broker: SecuredBroker,
    jwt_secret: str,
    assets: DemoAssets,
    rtsp_port: int | None,
) -> list[Path]:
    """The three boxes through `gridwatch provision bulk` (standalone: each gets a bundle).
    Their bundles name the broker, the service and the cameras: when any of them moved
    since (a port taken by something else meanwhile), every box is provisioned again."""
    made_with = directory / "provisioned-with"
    where = f"broker {broker.url}\nservice {service_url}\ncameras {rtsp_port}\n"
    if not made_with.exists() or made_with.read_text() != where:
        (directory / "provision-result.csv").unlink(missing_ok=True)
    clips = assets.clips or {"scene.avi": draw_scene(directory / "scene" / "scene.avi")}
    boxes, cameras = county.write_sheets(
        directory / "sheets", clips, motion=assets.models is None, rtsp_port=rtsp_port
    )
    token = issue_access_token(
        Principal("tech", Role.FIELD_TECHNICIAN, county.TOWN, Level.TOWN),
        key=jwt_secret.encode(),
        lifetime_s=3600,
    )
    env = {
        **os.environ,
        "PROVISION_CLOUD_URL": service_url,
        "PROVISION_CLOUD_TOKEN": token,
        "PROVISION_BROKER_URL": broker.url,
        "PROVISION_BACKEND": "standalone",
        "PROVISION_STATE_DIR": str(directory / "provision"),
        "PROVISION_TECHNICIAN": "demo",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gridwatch",
            "provision",
            "bulk",
            str(boxes),
            "--cameras",
            str(cameras),
            "--result",
            str(directory / "provision-result.csv"),
            "--bundles",
            str(directory / "bundles"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"provisioning failed:\n{done.stdout}\n{done.stderr}")
    made_with.write_text(where)
    return sorted(p for p in (directory / "bundles").iterdir() if p.is_dir())


def _banner(
    service_url: str,
    broker: SecuredBroker,
    logins: dict[str, str],
    boxes: list[Path],
    assets: DemoAssets,
    cameras: str,
    database_url: str,
) -> str:
    lines = [
        "",
        "gridwatch demo — 渠县土溪镇: one town, two villages, four grids, three edge boxes",
        "",
        f"  operations screen   {service_url}/ops/",
        f"  API docs            {service_url}/docs",
        f"  broker              {broker.url} (registry accounts only)",
        f"  model and clips     {assets.source}",
        f"  cameras             {cameras}",
    ]
    gridwatch = _gridwatch_command()
    if logins:
        lines += ["", "  logins (printed once):"]
        lines += [f"    {user:<10} {password}" for user, password in sorted(logins.items())]
    else:
        users = ", ".join(user for user, *_ in county.STAFF)
        lines += ["", f"  logins              {users} (passwords as printed at the first run)"]
    lines += [
        # Pasted in another terminal while the demo runs, each works as printed: the
        # demo's database is its own embedded one, which no default setting names.
        f"  new password        CLOUD_DATABASE_URL={shlex.quote(database_url)} "
        f"{gridwatch} cloud org passwd <user>",
        "",
        f"  boxes               {', '.join(p.name for p in boxes)}",
        f"  alerts, live        {gridwatch} alerts tail --url {service_url} --username town-op",
        "  stop                Ctrl-C",
        "",
    ]
    return "\n".join(lines)


def _gridwatch_command() -> str:
    """How to run `gridwatch` from any terminal: the script beside this Python (`make setup`
    puts it in .venv/bin, which is not on the PATH), by its absolute path (a relative one
    failed pasted in a new terminal, which starts in the home folder)."""
    script = Path(sys.executable).parent / "gridwatch"
    return str(script.absolute()) if script.exists() else "gridwatch"


DEFAULT_PORT = 8080
SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's GObject bindings live in the system Python
CAMERA_SERVER = Path(__file__).resolve().parent / "rtsp_cameras.py"


def _cameras(processes: Processes, assets: DemoAssets, directory: Path) -> int | None:
    """The clips as RTSP cameras on loopback (GStreamer's RTSP server), or None when it
    cannot run here: then the boxes read the clips as files. The port is kept in
    `directory`: the boxes' configs name it, so a second run serves them where they look
    (when it is taken, `_provision` provisions the boxes again with the new one)."""
    if not assets.clips:
        return None
    probe = (
        subprocess.run(
            [
                SYSTEM_PYTHON,
                "-c",
                "import gi; gi.require_version('GstRtspServer', '1.0'); "
                "from gi.repository import GstRtspServer",
            ],
            capture_output=True,
            check=False,
        )
        if Path(SYSTEM_PYTHON).exists()
        else None
    )
    if probe is None or probe.returncode != 0:
        logger.warning("no GStreamer RTSP server (gir1.2-gst-rtsp-server-1.0): clips read as files")
        return None
    port = kept_port(directory / "rtsp-port")
    server = processes.start_program(
        "cameras",
        [
            SYSTEM_PYTHON,
            str(CAMERA_SERVER),
            "--port",
            str(port),
            *map(str, [assets.clips[k] for k in sorted(assets.clips)]),
        ],
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and server.poll() is None:
        if is_listening(port):
            return port
        time.sleep(0.2)  # polling a starting server, bounded
    logger.warning("the RTSP camera server did not start: clips read as files")
    return None


@contextmanager
def _county(
    directory: Path, port: int | None, assets: DemoAssets
) -> Iterator[tuple[str, Processes]]:
    stopped = stop_leftovers(directory / "pids")
    if stopped:
        typer.echo(f"stopped {stopped} processes an earlier demo left running", err=True)
    service_port = _service_port(directory, port)
    processes = Processes(directory / "logs", directory / "pids")
    with ExitStack() as stack:
        database = stack.enter_context(embedded_database(directory / "pgdata"))
        jwt_secret = _secret(directory / "jwt-secret")
        settings = CloudSettings(database_url=database, timezone="Asia/Shanghai")
        with psycopg.connect(database, autocommit=True) as conn:
            prepare_database(conn, settings)
            _demo_rules(conn, directory / "case-rules.yaml")
        logins = _import_county(database, directory / "org")
        broker = stack.enter_context(secured_broker(directory / "broker", database))
        service_url = f"http://127.0.0.1:{service_port}"
        stack.callback(processes.stop)
        cloud_env = {
            "CLOUD_DATABASE_URL": database,
            "CLOUD_BROKER_URL": broker.url,
            "CLOUD_BROKER_PASSWORD": broker.password,
            "CLOUD_DATA_DIR": str(directory / "cloud"),
            "CLOUD_PORT": str(service_port),
            "CLOUD_PUBLIC_URL": service_url,
            "CLOUD_JWT_SECRET": jwt_secret,
        }
        # As in a county: the API and ingest are processes of their own, each with its own
        # broker account (the broker binds an account to one client id).
        serve = processes.start(
            "cloud",
            ["cloud", "serve", "--no-ingest"],
            {**cloud_env, "CLOUD_BROKER_USERNAME": broker.api_username},
        )
        ingest_env = {**cloud_env, "CLOUD_BROKER_USERNAME": broker.ingest_username}
        processes.start("ingest", ["cloud", "ingest"], ingest_env)
        _wait_healthy(service_url, serve, directory / "logs" / "cloud.log")
        rtsp_port = _cameras(processes, assets, directory)
        bundles = _provision(directory, service_url, broker, jwt_secret, assets, rtsp_port)
        for bundle in bundles:
            env = {
                "EDGE_BUNDLE_DIR": str(bundle),
                "EDGE_DATA_DIR": str(directory / "boxes" / bundle.name),
                "EDGE_METRICS_PORT": "0",
            }
            if assets.models is not None:
                env["EDGE_MODEL_DIR"] = str(assets.models)
            processes.start(bundle.name, ["edge", "run"], env)
        cameras = (
            f"rtsp://127.0.0.1:{rtsp_port}/cam1.. (the clips, as IP cameras serve them)"
            if rtsp_port
            else "the clips, read as files"
        )
        typer.echo(_banner(service_url, broker, logins, bundles, assets, cameras, database))
        yield service_url, processes


@app.callback()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps everything between runs.")
    ] = Path("var/demo"),
    port: Annotated[
        int | None,
        typer.Option(
            envvar="CLOUD_PORT",
            help="The service's port (default: the last run's, at first 8080; a free one "
            "when it is taken).",
        ),
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this long (default: at Ctrl-C).")
    ] = None,
) -> None:
    """Start the county, print where to look, run until Ctrl-C."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    directory = directory.resolve()
    assets = find_assets()
    if assets.models is None:
        typer.echo(
            "The model and clips were not found (GRIDWATCH_ASSETS, ../shared/assets beside the "
            "repository, ~/.cache/gridwatch/assets) and could not be downloaded:",
            err=True,
        )
        for problem in assets.missing:
            typer.echo(f"  {problem}", err=True)
        typer.echo(
            "Set GRIDWATCH_ASSETS to a folder with models/ and video/; running the rest with the "
            "motion backend on a drawn scene meanwhile.",
            err=True,
        )
    stop = threading.Event()
    # A closed terminal (SIGHUP) stops it too: the demo's processes run in sessions of
    # their own and outlived a demo that hung up.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with one_demo(directory), _county(directory, port, assets) as (_, processes):
            deadline = None if seconds is None else time.monotonic() + seconds
            while not stop.wait(1.0):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                stopped = {"cloud", "ingest"} - set(processes.alive())
                if stopped:
                    typer.echo(
                        f"the county's {' and '.join(sorted(stopped))} stopped: see the logs "
                        "in the demo folder",
                        err=True,
                    )
                    break
            typer.echo("stopping the county…")
    except (RuntimeError, CloudError) as exc:  # e.g. no Mosquitto on this machine
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("stopped.")
