"""`gridwatch edge` subcommands."""

from __future__ import annotations

import typer

app = typer.Typer(help="The edge agent and the technician's detection tools.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """The edge agent and the technician's detection tools."""
