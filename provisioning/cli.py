"""`gridwatch provision` subcommands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Register, secure and configure edge nodes.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Register, secure and configure edge nodes."""
