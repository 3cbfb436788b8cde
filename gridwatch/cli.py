"""The `gridwatch` command. Subcommands are loaded on first use, so `gridwatch edge` on a
box never imports FastAPI and `gridwatch cloud` never imports onnxruntime."""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

# name -> (module holding a typer app called `app`, extra that installs it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str | None, str]] = {
    "protocols": ("protocols.cli", None, "The wire contract: JSON Schemas, AsyncAPI, README."),
    "edge": ("edge.cli", "edge", "The edge agent and the technician's detection tools."),
    "cloud": ("cloud.cli", "cloud", "The cloud service: API, ingest, migrations."),
    "provision": ("provisioning.cli", "provision", "Register, secure and configure edge nodes."),
    "alerts": ("cloud.alerts.cli", "cloud", "Follow alerts as a grid app does: live, resumed."),
    "demo": ("cloud.demo.run", "all", "The whole county on one machine: service, boxes, screen."),
    "simulate": (
        "cloud.demo.simulate",
        "cloud",
        "A county's worth of boxes, for capacity planning.",
    ),
}


class LazyGroup(TyperGroup):
    """Imports a subcommand's package only when that subcommand runs."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *SUBCOMMANDS]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # The help listing needs only names and one-line helps: do not import anything.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in SUBCOMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, extra, help_text = SUBCOMMANDS[cmd_name]
        if self._listing:
            return TyperCommand(name=cmd_name, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"; install it with: pip install 'gridwatch[{extra}]'" if extra else ""
            raise typer.BadParameter(
                f"gridwatch {cmd_name} is not installed here ({exc}){hint}"
            ) from exc
        command = typer.main.get_command(module.app)
        command.name = cmd_name
        return command


app = typer.Typer(
    cls=LazyGroup,
    help="gridwatch: county video analytics and grid management, from edge box to county centre.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gridwatch {version('gridwatch')}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """gridwatch: county video analytics and grid management, from edge box to county centre."""


def main() -> None:
    app()
