"""`gridwatch cloud` subcommands."""

from __future__ import annotations

import typer

app = typer.Typer(help="The cloud service: API, ingest, migrations.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """The cloud service: API, ingest, migrations."""
