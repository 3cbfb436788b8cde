"""`gridwatch provision`: the field technician's tool.

    gridwatch provision bulk boxes.csv --cameras cameras.csv --result result.csv
    gridwatch provision node --unit 511725106201 --cameras cameras.csv
    gridwatch provision bundle boxes.csv --cameras cameras.csv --out /media/usb   (no link)
    gridwatch provision push /media/usb/gw-511725106201-01                        (link back)
    gridwatch provision retire gw-511725106201-01
    gridwatch provision replace --unit 511725106201 --cameras cameras.csv

Settings come from PROVISION_* variables (see provisioning/settings.py).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from protocols.enums import Tier
from provisioning.errors import ProvisionError, SheetErrors
from provisioning.flow import (
    Outcome,
    Provisioner,
    Registrar,
    ResultWriter,
    Standalone,
    bundle_offline,
    done_before,
    push_pending,
    summary,
)
from provisioning.plans import BoxPlan, OrgTree, make_plans
from provisioning.service import CountyService
from provisioning.settings import ProvisionSettings
from provisioning.sheets import BoxRow, CameraSpecRow, Line, read_sheet_leniently

app = typer.Typer(help="Register, secure and configure edge nodes.", no_args_is_help=True)
console = Console(stderr=True)
out = Console()

CsvFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]
CamerasOption = Annotated[
    Path | None,
    typer.Option("--cameras", exists=True, dir_okay=False, readable=True, help="Camera sheet."),
]
UsernameOption = Annotated[
    str | None, typer.Option(help="Sign in to the county service as this user (asks the password).")
]
NodeIdArgument = Annotated[str, typer.Argument(help="The node id, gw-<unit>-<nn>.")]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    """Register, secure and configure edge nodes."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _settings() -> ProvisionSettings:
    try:
        return ProvisionSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "PROVISION_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise _fail(f"{field}: {first['msg']}") from exc


def _signed_in(settings: ProvisionSettings, username: str | None) -> CountyService:
    """The county service as the technician (ProvisionError says why not)."""
    if username is not None:
        password = typer.prompt(f"password of {username}", hide_input=True)
        return CountyService.sign_in(settings, username, password)
    return CountyService(settings)


def _service(settings: ProvisionSettings, username: str | None) -> CountyService:
    try:
        return _signed_in(settings, username)
    except ProvisionError as exc:
        raise _fail(str(exc)) from exc


def _where_passwords_go(settings: ProvisionSettings, bundle: Path | None, flag: str) -> None:
    """A standalone box's password is made here and shown nowhere but its bundle: without
    one it would be issued and lost, and the box could never connect."""
    if settings.backend == "standalone" and bundle is None:
        raise _fail(
            f"a standalone box gets its broker password only in its bundle: add {flag} DIR "
            "(or PROVISION_BACKEND=balena, which puts it in the device's variables)"
        )


def _registrar(settings: ProvisionSettings) -> Registrar:
    if settings.backend == "standalone":
        return Standalone()
    from provisioning.balena_fleet import BalenaFleet

    try:
        return BalenaFleet(settings)
    except ProvisionError as exc:
        raise _fail(str(exc)) from exc


def _org(settings: ProvisionSettings, service: CountyService | None) -> OrgTree:
    """The org tree from the service, kept for the next offline run; offline, the kept one."""
    cache = settings.state_dir / "org-units.json"
    if service is not None:
        try:
            rows = service.units()
        except ProvisionError as exc:
            raise _fail(str(exc)) from exc
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(rows, ensure_ascii=False))
        return OrgTree.from_api(rows)
    if not cache.exists():
        raise _fail("no org tree kept yet: run any command once with a link to the service")
    return OrgTree.from_api(json.loads(cache.read_text()))


def _report(problems: list[str]) -> typer.Exit:
    for problem in problems:
        console.print(f"[red]{problem}[/red]", markup=True, highlight=False, soft_wrap=True)
    console.print(
        f"{len(problems)} problems; nothing was registered", highlight=False, soft_wrap=True
    )
    return typer.Exit(2)


def _plans(
    boxes: tuple[list[Line[BoxRow]], list[str]],
    cameras: Path | None,
    org: OrgTree,
    boxes_file: str,
    *,
    only_these_boxes: bool = False,
) -> list[BoxPlan]:
    """Plans, or every problem of both sheets (each bad row, and what is wrong across rows)
    printed and exit 2. `only_these_boxes`: the camera sheet may list other boxes too (one
    box provisioned from a town's sheet)."""
    box_lines, problems = boxes
    camera_lines: list[Line[CameraSpecRow]] = []
    if cameras is not None:
        camera_lines, camera_problems = read_sheet_leniently(
            cameras.read_text(encoding="utf-8"), CameraSpecRow, cameras.name
        )
        problems = problems + camera_problems
    if only_these_boxes:
        wanted = {(b.row.unit_code, b.row.index) for b in box_lines}
        camera_lines = [c for c in camera_lines if (c.row.unit_code, c.row.index) in wanted]
    try:
        plans = make_plans(
            box_lines,
            camera_lines,
            org,
            boxes_file=boxes_file,
            cameras_file=cameras.name if cameras else "cameras.csv",
        )
    except SheetErrors as exc:
        problems = problems + exc.problems
        plans = []
    if problems:
        raise _report(problems)
    return plans


def _read_boxes(path: Path) -> tuple[list[Line[BoxRow]], list[str]]:
    return read_sheet_leniently(path.read_text(encoding="utf-8"), BoxRow, path.name)


def _one_box(
    unit: str, index: int, tier: Tier, profile: str | None
) -> tuple[list[Line[BoxRow]], list[str]]:
    try:
        return [Line(0, BoxRow(unit_code=unit, index=index, tier=tier, profile=profile))], []
    except ValidationError as exc:
        raise _fail(f"--{exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc


def _show(outcomes: list[Outcome]) -> None:
    table = Table(title="provisioned")
    for column in ("node", "name", "status", "balena uuid", "config", "detail"):
        table.add_column(column)
    for o in outcomes:
        colour = {"done": "green", "bundled": "cyan"}.get(o.status, "red")
        table.add_row(
            o.node_id,
            o.device_name,
            f"[{colour}]{o.status}[/{colour}]",
            o.balena_uuid,
            str(o.config_version),
            o.error or o.bundle,
        )
    out.print(table)


def _run(
    plans: list[BoxPlan],
    work: Provisioner,
    result: Path | None,
    parallel: int,
) -> list[Outcome]:
    skip = done_before(result) if result else set()
    todo = [p for p in plans if p.node_id not in skip]
    if skip:
        console.print(f"{len(plans) - len(todo)} boxes done in an earlier run: skipped")
    writer = ResultWriter(result) if result else None
    outcomes: list[Outcome] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("provisioning", total=len(todo))
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for outcome in pool.map(work.provision, todo):
                outcomes.append(outcome)
                if writer:
                    writer.write(outcome)
                progress.advance(task)
    if writer:
        writer.close()
    return outcomes


@app.command()
def bulk(
    boxes: CsvFile,
    cameras: CamerasOption = None,
    result: Annotated[
        Path, typer.Option(help="Outcome per box; a run continues where this one stopped.")
    ] = Path("provision-result.csv"),
    parallel: Annotated[int, typer.Option(min=1, max=16, help="Boxes at a time.")] = 4,
    bundles: Annotated[
        Path | None, typer.Option(help="Also write each box's bundle (standalone boxes).")
    ] = None,
    username: UsernameOption = None,
) -> None:
    """Provision every box of a sheet: the whole sheet is checked first (every bad row
    named), then each box is registered, given its account and config; boxes done in an
    earlier run with the same result file are skipped."""
    settings = _settings()
    lines = _read_boxes(boxes)
    if lines[0]:  # a sheet of no boxes only fetches the org tree, for working offline later
        _where_passwords_go(settings, bundles, "--bundles")
    service = _service(settings, username)
    plans = _plans(lines, cameras, _org(settings, service), boxes.name)
    work = Provisioner(settings, service, _registrar(settings), bundles)
    outcomes = _run(plans, work, result, parallel)
    _show(outcomes)
    counts = summary(outcomes)
    console.print(f"result: {result} — {counts}")
    if counts.get("failed"):
        raise typer.Exit(1)


@app.command()
def node(
    unit: Annotated[str, typer.Option(help="The village or town code the box serves.")],
    cameras: CamerasOption = None,
    index: Annotated[int, typer.Option(help="The box's number at that centre.")] = 1,
    tier: Annotated[Tier, typer.Option()] = Tier.VILLAGE,
    profile: Annotated[str | None, typer.Option(help="Node profile.")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Also write the box's bundle here.")] = None,
    username: UsernameOption = None,
) -> None:
    """Provision one box (its cameras: the rows of the camera sheet for this unit and index)."""
    settings = _settings()
    _where_passwords_go(settings, bundle, "--bundle")
    service = _service(settings, username)
    plans = _plans(
        _one_box(unit, index, tier, profile),
        cameras,
        _org(settings, service),
        "--unit",
        only_these_boxes=True,
    )
    outcomes = _run(plans, Provisioner(settings, service, _registrar(settings), bundle), None, 1)
    _show(outcomes)
    if outcomes[0].status != "done":
        raise typer.Exit(1)


@app.command()
def bundle(
    boxes: CsvFile,
    out_dir: Annotated[Path, typer.Option("--out", help="The USB stick or SD card.")],
    cameras: CamerasOption = None,
) -> None:
    """No link on site: write each box's bundle (its variables, password, first config,
    the county CA) for the agent to read at first boot; `push` tells the county later."""
    settings = _settings()
    plans = _plans(_read_boxes(boxes), cameras, _org(settings, None), boxes.name)
    outcomes = [bundle_offline(settings, plan, out_dir) for plan in plans]
    _show(outcomes)


@app.command()
def push(
    bundles: Annotated[list[Path], typer.Argument(exists=True, file_okay=False)],
    username: UsernameOption = None,
) -> None:
    """The link is back: register what offline bundles hold (registration, password hash,
    config). Bundles already pushed are skipped."""
    settings = _settings()
    service = _service(settings, username)
    outcomes = []
    for directory in bundles:
        if not (directory / "registration.json").exists():
            console.print(f"{directory}: nothing pending")
            continue
        outcomes.append(push_pending(service, directory))
        commissioning = directory / "commissioning.json"
        if commissioning.exists() and outcomes[-1].status == "done":
            try:
                service.commissioning(outcomes[-1].node_id, json.loads(commissioning.read_text()))
                commissioning.unlink()
            except ProvisionError as exc:
                console.print(f"{directory}: commissioning record not sent: {exc}")
    _show(outcomes)
    if any(o.status != "done" for o in outcomes):
        raise typer.Exit(1)


@app.command()
def retire(
    node_id: NodeIdArgument,
    username: UsernameOption = None,
) -> None:
    """Retire a box: out of the fleet (and off balena), its broker account revoked, its
    history kept."""
    settings = _settings()
    service = _service(settings, username)
    registrar = _registrar(settings)
    try:
        node = service.node(node_id)
        if node is None:
            raise ProvisionError(f"node {node_id} is not registered (or not yours)")
        service.retire(node_id)
        removed = registrar.remove(node["name"]) if node.get("name") else False
    except ProvisionError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"retired {node_id}" + (" and removed from the fleet" if removed else ""))


@app.command()
def replace(
    unit: Annotated[str, typer.Option(help="The village or town code the box serves.")],
    cameras: CamerasOption = None,
    index: Annotated[int, typer.Option()] = 1,
    tier: Annotated[Tier, typer.Option()] = Tier.VILLAGE,
    profile: Annotated[str | None, typer.Option()] = None,
    bundle: Annotated[Path | None, typer.Option(help="Also write the box's bundle here.")] = None,
    username: UsernameOption = None,
) -> None:
    """A broken box swapped for a new one: the old device leaves the fleet, the new one
    takes the same node id, cameras and config, with a new broker account (the old box's
    password stops working)."""
    settings = _settings()
    service = _service(settings, username)
    registrar = _registrar(settings)
    plans = _plans(
        _one_box(unit, index, tier, profile),
        cameras,
        _org(settings, service),
        "--unit",
        only_these_boxes=True,
    )
    try:
        removed = registrar.remove(plans[0].device_name)
    except ProvisionError as exc:
        raise _fail(str(exc)) from exc
    if removed:
        console.print(f"old device {plans[0].device_name} removed from the fleet")
    outcomes = _run(plans, Provisioner(settings, service, registrar, bundle), None, 1)
    _show(outcomes)
    if outcomes[0].status != "done":
        raise typer.Exit(1)


@app.command()
def check(
    bundle: Annotated[
        Path, typer.Option(exists=True, file_okay=False, help="The box's bundle folder.")
    ],
    model_dir: Annotated[Path, typer.Option(help="Where the box keeps its models.")] = Path(
        "/var/lib/gridwatch/models"
    ),
    data_dir: Annotated[Path, typer.Option(help="Where the box keeps its outbox.")] = Path(
        "/var/lib/gridwatch"
    ),
    record: Annotated[
        bool, typer.Option(help="Send the results to the county as the commissioning record.")
    ] = True,
    username: UsernameOption = None,
) -> None:
    """Check a box on site, from the box or the technician's laptop: every camera (opens,
    frames, resolution, fps, codec; or why not), the broker with the box's credentials, the
    clock, the disk, the model file. The results go to the county as the box's
    commissioning record (kept in the bundle for `push` when there is no link)."""
    from datetime import UTC, datetime

    from provisioning.preflight import run_checks

    settings = _settings()
    try:
        node_id, results = run_checks(bundle, model_dir=model_dir, data_dir=data_dir)
    except ProvisionError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title=f"checks of {node_id}")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for result in results:
        verdict = "[green]ok[/green]" if result.passed else "[red]FAILED[/red]"
        table.add_row(result.name, verdict, result.detail)
    out.print(table)
    body = {
        "checked_at": datetime.now(UTC).isoformat(),
        "checks": [r.as_dict() for r in results],
    }
    if record:
        try:
            _signed_in(settings, username).commissioning(node_id, body)
            console.print("recorded with the county service")
            # An earlier check kept for `push` is superseded by this one.
            (bundle / "commissioning.json").unlink(missing_ok=True)
        except ProvisionError as exc:
            # Why it is not recorded (no link, not signed in, refused), and that it is kept.
            (bundle / "commissioning.json").write_text(json.dumps(body, ensure_ascii=False))
            console.print(f"not recorded with the county: {exc}")
            console.print("kept in the bundle: `push` it from where the county is reachable")
    if not all(r.passed for r in results):
        raise typer.Exit(1)


@app.command()
def rotate(
    node_id: NodeIdArgument,
    username: UsernameOption = None,
) -> None:
    """A new broker password for a box in service, without a visit (balena fleets): the
    next password goes to the box beside the current one, the county activates it (the old
    one is refused from the broker's next sync, and the box falls back to the next one when
    it reconnects), then the box's variables keep only the new one."""
    from provisioning.balena_fleet import BalenaFleet

    settings = _settings()
    if settings.backend != "balena":
        raise _fail(
            "rotation delivers the new password through the fleet's device variables: set "
            "PROVISION_BACKEND=balena (a standalone box gets a new bundle: `replace`)"
        )
    service = _service(settings, username)
    fleet = _registrar(settings)
    assert isinstance(fleet, BalenaFleet)
    try:
        node = service.node(node_id)
        if node is None or not node.get("name"):
            raise ProvisionError(f"node {node_id} is not registered (or not yours)")
        password = service.issue_credentials(node_id, rotate=True)
        fleet.set_env(node["name"], {"EDGE_PASSWORD_NEXT": password})
        service.activate_credentials(node_id)
        fleet.set_env(node["name"], {"EDGE_PASSWORD": password})
        fleet.remove_env(node["name"], ["EDGE_PASSWORD_NEXT"])
    except ProvisionError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"{node_id}: new broker password delivered and activated")
