"""`gridwatch cloud` subcommands: migrate, ingest, serve."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer

app = typer.Typer(help="The cloud service: API, ingest, migrations.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """The cloud service: API, ingest, migrations."""


def _settings():  # type: ignore[no-untyped-def]
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


LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING.")]


@app.command()
def migrate(log_level: LogLevel = "INFO") -> None:
    """Bring the database to the current schema (idempotent)."""
    _logging(log_level)
    from cloud.database import connect
    from cloud.db.schema import prepare_database

    settings = _settings()
    with connect(settings) as conn:
        timescale = prepare_database(conn, settings)
    typer.echo(f"database ready ({'TimescaleDB' if timescale else 'plain PostgreSQL'})")


@app.command()
def ingest(log_level: LogLevel = "INFO") -> None:
    """Store what the nodes publish: several ingest processes may run at once (each with
    its own CLOUD_INGEST_CLIENT_ID) on an MQTT 5 shared subscription."""
    _logging(log_level)
    from cloud.database import connect
    from cloud.db.schema import prepare_database
    from cloud.ingest.worker import IngestWorker

    settings = _settings()
    with connect(settings) as conn:
        timescale = prepare_database(conn, settings)
    worker = IngestWorker(settings, connect=lambda: connect(settings), timescale=timescale)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.run()


@app.command()
def serve(log_level: LogLevel = "INFO") -> None:
    """The HTTP API (and, later, the operations screen)."""
    _logging(log_level)
    import uvicorn

    from cloud.app import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=log_level.lower()
    )
