"""`gridwatch cloud` subcommands: migrate, ingest, serve."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
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
def _embedded(settings: CloudSettings, broker: bool = True) -> Iterator[tuple[CloudSettings, bool]]:
    """`with_embedded_defaults`, with a clear error and exit code 2 when one cannot start."""
    from cloud.embedded import with_embedded_defaults
    from cloud.errors import ServiceUnavailable

    try:
        with with_embedded_defaults(settings, broker=broker) as result:
            yield result
    except ServiceUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")]


@app.command()
def migrate(log_level: LogLevel = "INFO") -> None:
    """Bring the database to the current schema (idempotent). Without CLOUD_DATABASE_URL,
    the embedded database in CLOUD_DATA_DIR."""
    _logging(log_level)
    from cloud.database import connect
    from cloud.db.schema import prepare_database

    with (
        _embedded(_settings(), broker=False) as (settings, _),
        connect(settings) as conn,
    ):
        timescale = prepare_database(conn, settings)

    typer.echo(f"database ready ({'TimescaleDB' if timescale else 'plain PostgreSQL'})")


def _ingest_worker(settings: CloudSettings) -> IngestWorker:
    from cloud.database import connect
    from cloud.db.schema import prepare_database
    from cloud.ingest.worker import IngestWorker

    with connect(settings) as conn:
        timescale = prepare_database(conn, settings)
    return IngestWorker(settings, connect=lambda: connect(settings), timescale=timescale)


@app.command()
def ingest(log_level: LogLevel = "INFO") -> None:
    """Store what the nodes publish: several ingest processes may run at once (each with
    its own CLOUD_INGEST_CLIENT_ID) on an MQTT 5 shared subscription."""
    _logging(log_level)
    settings = _settings()
    missing = [name for name in ("database_url", "broker_url") if getattr(settings, name) is None]
    if missing:
        # A separate ingest process only makes sense beside a shared database and broker;
        # the all-in-one setup is `serve` without them.
        for name in missing:
            typer.echo(f"error: CLOUD_{name.upper()} is not set", err=True)
        raise typer.Exit(2)
    worker = _ingest_worker(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
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

    with _embedded(_settings()) as (settings, embedded):
        worker = (
            _ingest_worker(settings) if (with_ingest is None and embedded) or with_ingest else None
        )
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
                create_app(settings),
                host=settings.host,
                port=settings.port,
                log_level=log_level.lower(),
            )
        finally:
            if worker is not None and thread is not None:
                worker.stop()
                thread.join(30)
