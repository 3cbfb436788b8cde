"""`gridwatch protocols`: write or check the generated contract documents."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="The wire contract: JSON Schemas, AsyncAPI, README.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """The wire contract: JSON Schemas, AsyncAPI, README."""


@app.command("export")
def export_command(
    check: Annotated[bool, typer.Option("--check", help="Only check; exit 1 when stale.")] = False,
) -> None:
    """Regenerate protocols/schemas/*.json, protocols/asyncapi.json and protocols/README.md."""
    from protocols.export import PACKAGE_DIR, generated_files

    stale = []
    for relative, content in generated_files().items():
        path = PACKAGE_DIR / relative
        if path.exists() and path.read_text(encoding="utf-8") == content:
            continue
        stale.append(relative)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        typer.echo(f"{'stale' if check else 'wrote'}: protocols/{relative}", err=check)
    raise typer.Exit(1 if check and stale else 0)
