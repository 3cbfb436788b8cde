"""`gridwatch cloud` subcommands: migrate, ingest, serve."""

from __future__ import annotations

import logging
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cloud.access import Principal
    from cloud.broker_acl import AppAccountRow
    from cloud.ingest.worker import IngestWorker
    from cloud.settings import CloudSettings

app = typer.Typer(help="The cloud service: API, ingest, migrations.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """The cloud service: API, ingest, migrations."""


def _settings() -> CloudSettings:
    from pydantic import ValidationError

    from cloud.settings import CloudSettings

    try:
        return CloudSettings()
    except ValidationError as exc:
        for error in exc.errors():
            field = "__".join(str(p) for p in error["loc"]).upper()
            typer.echo(f"error: CLOUD_{field}: {error['msg']}", err=True)
        raise typer.Exit(2) from exc


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@contextmanager
def _embedded(
    settings: CloudSettings, broker: bool = True, *, existing: bool = False
) -> Iterator[tuple[CloudSettings, bool]]:
    """`with_embedded_defaults`, with a clear error and exit code 2 when one cannot start.
    `existing`: the command works on a county already there, so an embedded database that
    does not exist yet is not made (a mistyped command left 39 MB in the folder it ran in)."""
    from psycopg.errors import UndefinedTable

    if existing and settings.database_url is None and not (settings.data_dir / "pgdata").exists():
        typer.echo(
            f"error: no database: CLOUD_DATABASE_URL is not set and {settings.data_dir} holds "
            "no embedded one; set CLOUD_DATABASE_URL to the county's database (a running "
            "demo prints its own)",
            err=True,
        )
        raise typer.Exit(2)

    from cloud.embedded import with_embedded_defaults
    from cloud.errors import ServiceUnavailable

    try:
        with with_embedded_defaults(settings, broker=broker) as result:
            yield result
    except ServiceUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except UndefinedTable as exc:
        where = (
            "CLOUD_DATABASE_URL"
            if settings.database_url
            else f"the embedded database in {settings.data_dir}"
        )
        typer.echo(
            f"error: {where} holds no gridwatch county ({exc.diag.message_primary}): set "
            "CLOUD_DATABASE_URL to the county's database (a running demo prints its own), "
            "or run `gridwatch cloud migrate` to begin one here",
            err=True,
        )
        raise typer.Exit(2) from exc


LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")]


@app.command()
def migrate(log_level: LogLevel = "INFO") -> None:
    """Bring the database to the current schema (idempotent). Without CLOUD_DATABASE_URL,
    the embedded database in CLOUD_DATA_DIR."""
    _logging(log_level)
    from cloud.database import with_database
    from cloud.db.schema import prepare_database

    with _embedded(_settings(), broker=False) as (settings, _):
        timescale = with_database(settings, lambda conn: prepare_database(conn, settings))

    typer.echo(f"database ready ({'TimescaleDB' if timescale else 'plain PostgreSQL'})")


def _ingest_worker(settings: CloudSettings, *, leaving: bool = False) -> IngestWorker:
    from cloud.database import connect, with_database
    from cloud.db.schema import prepare_database
    from cloud.ingest.worker import IngestWorker

    timescale = with_database(settings, lambda conn: prepare_database(conn, settings))
    return IngestWorker(
        settings, connect=lambda: connect(settings), timescale=timescale, leaving=leaving
    )


@app.command()
def ingest(
    log_level: LogLevel = "INFO",
    retire: Annotated[
        bool,
        typer.Option(
            "--retire",
            help="Leave the ingest group for good: store what the broker still holds for "
            "this process's session, then end the session and exit. Run it before its "
            "account goes (`broker sync` without it): a session left behind keeps taking "
            "its share of every box's events.",
        ),
    ] = False,
) -> None:
    """Store what the nodes publish: several ingest processes may run at once (each with
    its own broker account, `ingest.<name>`, which is also its client id) on an MQTT 5
    shared subscription."""
    _logging(log_level)
    settings = _settings()
    missing = [name for name in ("database_url", "broker_url") if getattr(settings, name) is None]
    if missing:
        # A separate ingest process only makes sense beside a shared database and broker;
        # the all-in-one setup is `serve` without them.
        for name in missing:
            typer.echo(f"error: CLOUD_{name.upper()} is not set", err=True)
        raise typer.Exit(2)
    from cloud.ingest.worker import tune_garbage_collector

    worker = _ingest_worker(settings, leaving=retire)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    if settings.ingest_metrics_port is not None:
        from cloud.ingest.status import serve_status

        serve_status(worker.subscriber, settings)
    tune_garbage_collector()  # this process is ingest's alone (`serve --ingest` keeps defaults)
    worker.run()


@app.command()
def serve(
    log_level: LogLevel = "INFO",
    with_ingest: Annotated[
        bool | None,
        typer.Option(
            "--ingest/--no-ingest",
            help="Also store events in this process. Default: only when the database or "
            "broker is embedded (nothing configured: one process for a laptop or a demo).",
        ),
    ] = None,
) -> None:
    """The HTTP API. Without CLOUD_DATABASE_URL or CLOUD_BROKER_URL it starts an embedded
    PostgreSQL and a local Mosquitto, and ingests too: never for production."""
    _logging(log_level)
    import threading

    import uvicorn

    from cloud.app import create_app
    from cloud.database import with_database
    from cloud.db.schema import prepare_database

    with _embedded(_settings()) as (settings, embedded):
        if (with_ingest is None and embedded) or with_ingest:
            if settings.broker_username:
                # Ingest and the API's publisher are two connections, and the broker binds
                # an account to one client id: they would take each other's place.
                typer.echo(
                    "error: with a broker account (CLOUD_BROKER_USERNAME), run ingest as its "
                    "own process (`gridwatch cloud ingest`, with its own account) and serve "
                    "with --no-ingest",
                    err=True,
                )
                raise typer.Exit(2)
            worker = _ingest_worker(settings)
        else:
            worker = None
            # Migrations are idempotent and one at a time.
            with_database(settings, lambda conn: prepare_database(conn, settings))
        thread = None
        if worker is not None:
            thread = threading.Thread(target=worker.run, name="ingest", daemon=True)
            thread.start()
        # uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would kill this
        # process before the embedded services and ingest stop; a handler of ours takes it.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: logging.getLogger(__name__).info("stopping"))
        try:
            uvicorn.run(
                create_app(settings, ingest=worker.subscriber if worker else None),
                host=settings.host,
                port=settings.port,
                log_level=log_level.lower(),
            )
        finally:
            if worker is not None and thread is not None:
                worker.stop()
                thread.join(30)


org_app = typer.Typer(help="The org tree, departments and staff.", no_args_is_help=True)
app.add_typer(org_app, name="org")

FileOption = Annotated[
    Path | None, typer.Option(exists=True, dir_okay=False, readable=True, resolve_path=True)
]


def _cli_principal() -> Principal:
    """Who acts from the command line: the operating-system user, as a county admin (the
    command needs the database's credentials, which only the county's admins hold)."""
    import getpass

    from cloud.access import Principal, Role
    from cloud.tiers import Level

    return Principal(f"cli:{getpass.getuser()}", Role.COUNTY_ADMIN, "", Level.COUNTY)


@org_app.command("import")
def org_import(
    units: FileOption = None,
    departments: FileOption = None,
    staff: FileOption = None,
    geometry: FileOption = None,
    cameras: FileOption = None,
    nodes: FileOption = None,
    set_passwords: Annotated[
        bool, typer.Option(help="Make a password for each person without one; printed once.")
    ] = False,
    log_level: LogLevel = "WARNING",
) -> None:
    """Load units (CSV: code,parent_code,level,name,category), departments (CSV:
    code,name,unit_code), staff (CSV: username,display_name,role,unit_code,department_code,
    duty,employment,phone), geometry (GeoJSON with properties.code) and cameras (CSV:
    node_id,camera_id,unit_code: the unit each camera watches) and nodes (CSV:
    node_id,unit_code,tier). All or nothing."""
    _logging(log_level)
    import time

    from cloud.database import connect
    from cloud.db.schema import prepare_database
    from cloud.errors import InvalidFile
    from cloud.org_import import OrgFiles, import_org

    if all(f is None for f in (units, departments, staff, geometry, cameras, nodes)):
        typer.echo(
            "error: give at least one of --units, --departments, --staff, --geometry, "
            "--cameras, --nodes",
            err=True,
        )
        raise typer.Exit(2)
    started = time.perf_counter()
    with _embedded(_settings(), broker=False) as (settings, _), connect(settings) as conn:
        prepare_database(conn, settings)
        try:
            result = import_org(
                conn,
                OrgFiles(units, departments, staff, geometry, cameras, nodes),
                _cli_principal(),
                set_passwords=set_passwords,
            )
        except InvalidFile as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    typer.echo(
        f"imported {result.units} units, {result.departments} departments, {result.staff} "
        f"people, {result.geometries} geometries, {result.cameras} cameras, {result.nodes} nodes "
        f"in {time.perf_counter() - started:.1f} s"
    )
    for username, password in sorted(result.passwords.items()):
        typer.echo(f"password {username} {password}")


@org_app.command("export")
def org_export(
    directory: Annotated[Path, typer.Argument(file_okay=False, resolve_path=True)],
    unit: Annotated[str | None, typer.Option(help="Only this unit and below.")] = None,
) -> None:
    """Write units.csv, units.geojson, departments.csv, staff.csv (no passwords),
    nodes.csv and cameras.csv."""
    from cloud.database import connect
    from cloud.db import org as db
    from cloud.org_files import (
        CAMERA_COLUMNS,
        DEPARTMENT_COLUMNS,
        NODE_COLUMNS,
        STAFF_COLUMNS,
        UNIT_COLUMNS,
        write_geometries,
        write_rows,
    )

    directory.mkdir(parents=True, exist_ok=True)
    with (
        _embedded(_settings(), broker=False, existing=True) as (settings, _),
        connect(settings) as conn,
    ):
        prefix = unit or ""
        units = db.export_rows(conn, db.UNITS_SQL, prefix)
        (directory / "units.csv").write_text(write_rows(units, UNIT_COLUMNS), encoding="utf-8")
        (directory / "units.geojson").write_bytes(write_geometries(units))
        (directory / "departments.csv").write_text(
            write_rows(db.export_rows(conn, db.DEPARTMENTS_SQL, prefix), DEPARTMENT_COLUMNS),
            encoding="utf-8",
        )
        (directory / "staff.csv").write_text(
            write_rows(db.export_rows(conn, db.STAFF_SQL, prefix), STAFF_COLUMNS),
            encoding="utf-8",
        )
        (directory / "nodes.csv").write_text(
            write_rows(db.export_rows(conn, db.NODES_SQL, prefix), NODE_COLUMNS),
            encoding="utf-8",
        )
        (directory / "cameras.csv").write_text(
            write_rows(db.export_rows(conn, db.CAMERAS_SQL, prefix), CAMERA_COLUMNS),
            encoding="utf-8",
        )
    typer.echo(f"exported {len(units)} units to {directory}")


@org_app.command("passwd")
def org_passwd(username: str) -> None:
    """Give a person a new password (printed once)."""
    from cloud.auth import hash_password, new_password
    from cloud.database import connect
    from cloud.db import audit
    from cloud.db import org as db

    password = new_password()
    with (
        _embedded(_settings(), broker=False, existing=True) as (settings, _),
        connect(settings) as conn,
        conn.transaction(),
    ):
        if not db.set_password_hash(conn, username, hash_password(password)):
            typer.echo(f"error: no user {username}", err=True)
            raise typer.Exit(1)
        audit.record_sync(
            conn,
            _cli_principal(),
            "user.password",
            target_type="user",
            target_id=username,
        )
    typer.echo(f"password {username} {password}")


def _set_active(username: str, active: bool) -> None:
    from cloud.database import connect
    from cloud.db import audit
    from cloud.db import org as db

    with (
        _embedded(_settings(), broker=False, existing=True) as (settings, _),
        connect(settings) as conn,
        conn.transaction(),
    ):
        unit = db.set_active_sync(conn, username, active)
        if unit is None:
            typer.echo(f"error: no user {username}", err=True)
            raise typer.Exit(1)
        audit.record_sync(
            conn,
            _cli_principal(),
            "user.reactivate" if active else "user.deactivate",
            target_type="user",
            target_id=username,
            unit_code=unit,
        )
    typer.echo(f"{username} {'reactivated' if active else 'deactivated'}")


@org_app.command("deactivate")
def org_deactivate(username: str) -> None:
    """Stop a person signing in; their access tokens stop working within seconds."""
    _set_active(username, active=False)


@org_app.command("reactivate")
def org_reactivate(username: str) -> None:
    """Let a deactivated person sign in again (with the password they had)."""
    _set_active(username, active=True)


@org_app.command("unlock-address")
def org_unlock_address(address: str) -> None:
    """Lift the sign-in lock of a source address (an office behind one address locked out
    by its own typos, or an attack that has ended); audited."""
    from cloud.database import connect
    from cloud.db import audit
    from cloud.sign_in import FORGET_SQL, address_key

    with (
        _embedded(_settings(), broker=False, existing=True) as (settings, _),
        connect(settings) as conn,
        conn.transaction(),
    ):
        found = conn.execute(FORGET_SQL, (address_key(address),)).fetchone()
        failures = found[0] if found else 0
        audit.record_sync(
            conn,
            _cli_principal(),
            "sign_in.unlock",
            target_type="address",
            target_id=address,
            detail={"failures": failures},
        )
    typer.echo(f"{address}: {failures or 'no'} failed sign-ins forgotten")


keys_app = typer.Typer(help="The keys that sign access tokens.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate(
    force: Annotated[
        bool, typer.Option("--force", help="Rotate even if that signs people out.")
    ] = False,
) -> None:
    """A new key signs access tokens from now on (every instance within a minute); tokens
    signed with the key before stay valid until they expire; older keys are dropped."""
    from cloud.database import connect
    from cloud.db import audit
    from cloud.signing import RELOAD_S, newest_key_age_s, rotate

    with _embedded(_settings(), broker=False, existing=True) as (settings, _):
        if settings.jwt_secret is not None:
            typer.echo(
                "error: tokens are signed with CLOUD_JWT_SECRET: put a new secret there and "
                "the old one in CLOUD_JWT_PREVIOUS_SECRET",
                err=True,
            )
            raise typer.Exit(2)
        with connect(settings) as conn:
            # The key in use now becomes the one before, and the one before it is dropped:
            # tokens it signed (up to a lifetime ago, and a minute while instances caught
            # up) would stop working.
            age = newest_key_age_s(conn)
            wait_s = settings.access_token_s + RELOAD_S
            if age is not None and age < wait_s and not force:
                typer.echo(
                    f"error: the key in use is {age:.0f} s old; rotating again before "
                    f"{wait_s:.0f} s signs out whoever holds a token of the key before it "
                    "(--force to do it anyway)",
                    err=True,
                )
                raise typer.Exit(2)
            name, dropped = rotate(conn)
            audit.record_sync(
                conn,
                _cli_principal(),
                "signing_key.rotate",
                target_type="signing_key",
                target_id=name,
                detail={"dropped": dropped},
            )
    typer.echo(f"signing key {name} in use; dropped: {', '.join(dropped) or 'none'}")


rules_app = typer.Typer(
    help="The county's case rules: which detections open cases, where, and deadlines.",
    no_args_is_help=True,
)
app.add_typer(rules_app, name="rules")


@rules_app.command("show")
def rules_show() -> None:
    """The rules in force (YAML, as `rules set` takes them), with their version."""
    import yaml

    from cloud.cases.rule_sets import current
    from cloud.database import connect

    with (
        _embedded(_settings(), broker=False, existing=True) as (settings, _),
        connect(settings) as conn,
    ):
        found = current(conn)
    if found is None:
        typer.echo("no rules yet: `gridwatch cloud migrate` sets the first", err=True)
        raise typer.Exit(1)
    version, rules, record = found
    typer.echo(
        f"# version {version}, set by {record['set_by']} at {record['set_at']:%Y-%m-%d %H:%M}: "
        f"{record['reason']}"
    )
    typer.echo(yaml.safe_dump(rules.model_dump(mode="json"), allow_unicode=True, sort_keys=False))


@rules_app.command("set")
def rules_set(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    reason: Annotated[str, typer.Option(help="Why they change (kept with them, audited).")],
) -> None:
    """Put the rules in `file` in force, as a new version (the only way they change)."""
    from cloud.cases.rule_sets import set_rules
    from cloud.cases.rules import load_rules
    from cloud.database import connect
    from cloud.errors import InvalidFile

    try:
        rules = load_rules(file)
    except InvalidFile as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    with (
        _embedded(_settings(), broker=False, existing=True) as (settings, _),
        connect(settings) as conn,
    ):
        try:
            version = set_rules(conn, rules, principal=_cli_principal(), reason=reason)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    typer.echo(f"case rules version {version} in force")


broker_app = typer.Typer(
    help="The county broker's accounts, and what each may do.", no_args_is_help=True
)
app.add_typer(broker_app, name="broker")

ServiceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--service",
        help="A service account, `ingest.<name>` (joins the ingest group) or `api.<name>` "
        "(publishes configs, commands, alerts); repeat, one per process. Their password: "
        "CLOUD_BROKER_PASSWORD. Default: ingest.1 and api.1.",
    ),
]


def _app_rows(apps: Path | None) -> list[AppAccountRow]:
    from cloud.broker_acl import AppAccountRow
    from cloud.errors import InvalidFile
    from cloud.org_files import read_rows

    try:
        if apps is None:
            return []
        return read_rows(apps.read_text(encoding="utf-8"), AppAccountRow, apps.name)
    except InvalidFile as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _services(service: list[str] | None) -> list[str]:
    import re

    from cloud.broker_acl import SERVICE_USERNAME_PATTERN

    names = service or ["ingest.1", "api.1"]
    for name in names:
        if not re.fullmatch(SERVICE_USERNAME_PATTERN, name):
            typer.echo(f"error: --service {name}: not ingest.<name> or api.<name>", err=True)
            raise typer.Exit(2)
    return names


@broker_app.command("acl")
def broker_acl(
    apps: FileOption = None,
    service: ServiceOption = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """What `broker sync` gives the broker's plugin, as JSON, for review: every account
    (bound to its client id) with its roles, and each role's rules — each node confined to
    its subtree, each app account (CSV: username,unit_code; usernames `app.<name>`) to the
    alerts of its unit, the service accounts to their part."""
    import json

    from cloud.broker_acl import grants
    from cloud.broker_sync import BrokerFiles, app_accounts
    from cloud.database import connect
    from cloud.db.registry import broker_accounts
    from cloud.errors import InvalidFile

    rows = _app_rows(apps)
    files = BrokerFiles(Path(), apps=rows, apps_file_name=apps.name if apps else "")
    with (
        _embedded(_settings(), broker=False, existing=True) as (settings, _),
        connect(settings) as conn,
    ):
        try:
            access = grants(
                [node_id for node_id, _ in broker_accounts(conn)],
                _services(service),
                app_accounts(conn, files),
                [],
                ingest_group=settings.ingest_group,
            )
        except InvalidFile as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    text = json.dumps(
        {
            "clients": {user: sorted(roles) for user, roles in sorted(access.clients.items())},
            "roles": {
                name: [{"acltype": acl.value, "topic": topic} for acl, topic in sorted(rules)]
                for name, rules in sorted(access.roles.items())
            },
        },
        indent=1,
        ensure_ascii=False,
    )
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {out} ({len(access.clients)} accounts)")


def _restart_by(command: str | None) -> Callable[[], None] | None:
    """`command` as a restart of the broker (run without a shell), or None."""
    if not command:
        return None
    args = shlex.split(command)

    def restart() -> None:
        subprocess.run(args, check=True, timeout=120)

    return restart


@broker_app.command("sync")
def broker_sync(
    password_file: Annotated[Path, typer.Option(help="Mosquitto's password_file.")],
    pid_file: Annotated[
        Path | None,
        typer.Option(help="Mosquitto's pid file: following, sync again when the broker restarts."),
    ] = None,
    restart_command: Annotated[
        str | None,
        typer.Option(
            help="How to restart the running broker when its password file changed (e.g. "
            "'systemctl restart mosquitto'): Mosquitto reads the file only at start, and "
            "Mosquitto 2.0.11 crashes after a reload (SIGHUP). Without it, a sync that "
            "changed the file says so and the broker reads it at its next start.",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            help="The plugin's file (plugin_opt_config_file), for a broker that is stopped: "
            "write it whole, and the password file, for its start. Without it, the running "
            "broker's plugin is changed on its control topic (CLOUD_BROKER_URL).",
        ),
    ] = None,
    service: ServiceOption = None,
    admin: Annotated[
        str, typer.Option(help="The plugin's admin account (CLOUD_BROKER_ADMIN_PASSWORD).")
    ] = "sync.admin",
    apps: FileOption = None,
    extra_passwords: FileOption = None,
    follow_changes: Annotated[
        bool, typer.Option("--follow", help="Keep running: sync on every credential change.")
    ] = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Give the broker the registry's accounts: its password file (every active node's
    account, the service accounts', `--extra-passwords` lines as they are) and its
    dynamic-security plugin (each account bound to its client id, with what it may
    subscribe to and publish); reload the broker when the password file changed."""
    import threading

    from cloud.broker_sync import BrokerFiles, follow, init_broker, sync_once
    from cloud.database import connect, database_url
    from cloud.errors import BrokerUnavailable, InvalidFile

    _logging(log_level)
    if init is not None and follow_changes:
        typer.echo("error: --init is for a stopped broker; --follow for a running one", err=True)
        raise typer.Exit(2)
    settings = _settings()
    missing = [
        name
        for name, value in (
            ("CLOUD_BROKER_PASSWORD", settings.broker_password),  # the service accounts'
            ("CLOUD_BROKER_ADMIN_PASSWORD", settings.broker_admin_password),
        )
        if value is None
    ]
    if missing:
        # Without them the service accounts, or the plugin's admin, would silently be
        # left out, and ingest and serve refused at their next connect.
        typer.echo(f"error: {' and '.join(missing)} not set", err=True)
        raise typer.Exit(2)
    files = BrokerFiles(
        password_file=password_file,
        pid_file=pid_file,
        broker_url=settings.broker_url,
        ca_file=settings.broker_ca_file,
        services=_services(service),
        service_password=settings.broker_password,
        admin=admin,
        admin_password=settings.broker_admin_password,
        ingest_group=settings.ingest_group,
        apps=_app_rows(apps),
        apps_file_name=apps.name if apps else "",
        extra_passwords=extra_passwords,
        restart=_restart_by(restart_command),
    )
    try:
        if follow_changes:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            follow(database_url(settings), files, stop)
        elif init is not None:
            with connect(settings) as conn:
                init_broker(conn, files, init)
            typer.echo(f"wrote {password_file} {init}")
        else:
            with connect(settings) as conn:
                changed = sync_once(conn, files)
            typer.echo(f"{'synced' if changed else 'unchanged:'} {password_file}")
    except InvalidFile as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except BrokerUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
