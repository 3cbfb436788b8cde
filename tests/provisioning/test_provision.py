"""`gridwatch provision` end to end: the real county service (its own process, PostgreSQL),
a real Mosquitto whose password and ACL files come from the registry, a real edge agent for
the offline bundle, and — because balenaCloud cannot be reached here — balena-sdk 17.3.0
talking to a faithful local double of balena's API (tests/support/balena_double.py)."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from protocols.passwords import verify_password
from provisioning.balena_fleet import BalenaFleet
from provisioning.cli import app
from provisioning.errors import ProvisionError
from provisioning.settings import ProvisionSettings
from tests.cloud.county_fixtures import County, county_database
from tests.support.agent import AgentProcess
from tests.support.balena_double import BalenaApiDouble, BalenaDouble
from tests.support.cloud import IngestProcess, ServeProcess, count
from tests.support.county import (
    GRID,
    GRID_2,
    GRID_3,
    OTHER_GRID,
    TEST_JWT_SECRET,
    TOWN,
    VILLAGE,
    VILLAGE_2,
)
from tests.support.mosquitto import CountyBroker
from tests.support.mosquitto import county_broker as registry_broker
from tests.support.ports import wait_until

FLEET = "qu-county/village-boxes"
CLOUD_PASSWORD = "the service's broker password"
BOXES = [
    ("unit_code", "index", "tier", "profile"),
    (VILLAGE, 1, "village", ""),
    (VILLAGE, 2, "village", ""),
    (VILLAGE_2, 1, "village", ""),
]
CAMERAS = [
    (
        "unit_code",
        "index",
        "camera_id",
        "vendor",
        "host",
        "channel",
        "grid_code",
        "name",
        "username",
        "password",
        "rules",
    ),
    (
        VILLAGE,
        1,
        "cam01",
        "hikvision",
        "192.168.1.64",
        1,
        GRID,
        "村委会门口",
        "admin",
        "cam-secret",
        "",
    ),
    (
        VILLAGE,
        1,
        "cam02",
        "dahua",
        "192.168.1.65",
        1,
        GRID_2,
        "河堤",
        "admin",
        "cam-secret",
        "river_bank_night",
    ),
    (VILLAGE, 2, "cam01", "uniview", "192.168.1.66", 2, GRID, "", "", "", ""),
    (VILLAGE_2, 1, "cam01", "hikvision", "192.168.2.64", 1, GRID_3, "龙滩村口", "", "", ""),
]


def write_csv(path: Path, rows: list[tuple[Any, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("provision"))


@pytest.fixture(scope="module")
def county_broker(
    county: County, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CountyBroker]:
    broker = registry_broker(tmp_path_factory.mktemp("county-broker"), county.url, CLOUD_PASSWORD)
    broker.start()
    yield broker
    broker.stop()


def sync(county: County, broker: CountyBroker) -> None:
    """`gridwatch cloud broker sync`, once; waits for the broker's reload when it wrote."""
    broker.sync()


@pytest.fixture(scope="module")
def service(
    county: County, county_broker: CountyBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """The API and ingest, each a process with its own broker account, as in a county."""
    ingest = IngestProcess(
        tmp_path_factory.mktemp("ingest"),
        county.url,
        county_broker.port,
        "ingest.1",
        CLOUD_BROKER_USERNAME="ingest.1",
        CLOUD_BROKER_PASSWORD=CLOUD_PASSWORD,
    ).start()
    process = ServeProcess(
        tmp_path_factory.mktemp("serve"),
        county.url,
        county_broker.url,
        ingest=False,
        CLOUD_JWT_SECRET=TEST_JWT_SECRET,
        CLOUD_BROKER_USERNAME="api.1",
        CLOUD_BROKER_PASSWORD=CLOUD_PASSWORD,
    ).start_listening()
    ingest.wait_subscribed()
    yield process
    process.stop()
    ingest.stop()


@pytest.fixture
def balena() -> Iterator[BalenaApiDouble]:
    double = BalenaDouble()
    double.add_fleet(FLEET)
    with BalenaApiDouble(double) as api:
        yield api


def env_for(
    service: ServeProcess,
    county: County,
    balena: BalenaApiDouble | None,
    state: Path,
    **more: str,
) -> dict[str, str]:
    env = {
        "PROVISION_CLOUD_URL": f"http://127.0.0.1:{service.port}",
        "PROVISION_CLOUD_TOKEN": service.sign_in("tech", county.passwords["tech"]),
        "PROVISION_BROKER_URL": "mqtts://broker.county.example:8883",
        "PROVISION_STATE_DIR": str(state),
        "PROVISION_TECHNICIAN": "tech",
        "PROVISION_BACKEND": "standalone",
    }
    if balena is not None:
        env |= {
            "PROVISION_BACKEND": "balena",
            "PROVISION_BALENA_API_URL": balena.url,
            "PROVISION_BALENA_TOKEN": balena.double.user_token,
            "PROVISION_BALENA_FLEET": FLEET,
        }
    return env | more


def run(env: dict[str, str], *args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def registered(county: County) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(county.url) as conn:
        rows = conn.execute(
            "SELECT n.node_id, n.name, n.balena_uuid, (c.node_id IS NOT NULL), "
            "(SELECT max(version) FROM node_configs k WHERE k.node_id = n.node_id) "
            "FROM nodes n LEFT JOIN node_credentials c USING (node_id) "
            "WHERE n.node_id LIKE 'gw-%' AND n.retired_at IS NULL"
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_every_bad_row_is_named_before_anything_is_touched(
    county: County, service: ServeProcess, balena: BalenaApiDouble, tmp_path: Path
) -> None:
    boxes = write_csv(
        tmp_path / "boxes.csv",
        [
            BOXES[0],
            (VILLAGE, 0, "village", ""),
            (GRID, 1, "village", ""),
            ("5117259999", 1, "village", ""),
            (VILLAGE, 1, "village", "no_such_profile"),
            (VILLAGE_2, 1, "town", ""),
        ],
    )
    bad_boxes = run(env_for(service, county, balena, tmp_path), "bulk", boxes)
    assert bad_boxes.exit_code == 2
    assert "boxes.csv line 2: index:" in bad_boxes.output
    bad = write_csv(
        tmp_path / "boxes2.csv",
        [
            BOXES[0],
            (GRID, 1, "village", ""),
            ("5117259999", 1, "village", ""),
            (VILLAGE, 1, "village", "no_such_profile"),
            (VILLAGE_2, 1, "town", ""),
            (VILLAGE, 1, "village", ""),
        ],
    )
    cameras = write_csv(
        tmp_path / "cameras.csv",
        [
            CAMERAS[0],
            (VILLAGE, 1, "cam01", "acme", "10.0.0.1", 1, GRID, "", "", "", ""),
            (VILLAGE, 1, "cam02", "hikvision", "10.0.0.2", 1, OTHER_GRID, "", "", "", ""),
            (VILLAGE, 1, "cam03", "hikvision", "bad host/x", 1, GRID, "", "", "", ""),
            (VILLAGE, 1, "cam04", "hikvision", "10.0.0.4", 1, GRID, "", "", "", "no_such_rules"),
            (VILLAGE, 1, "cam05", "hikvision", "10.0.0.5", 999, GRID, "", "", "", ""),
        ],
    )
    result = run(env_for(service, county, balena, tmp_path), "bulk", bad, "--cameras", cameras)
    assert result.exit_code == 2
    for expected in (
        f"boxes2.csv line 2: tier: a village box serves a village, but {GRID} is a grid",
        "boxes2.csv line 3: unit_code: unknown unit 5117259999",
        "boxes2.csv line 4: profile: node profile 'no_such_profile' not found",
        f"boxes2.csv line 5: tier: a town box serves a town, but {VILLAGE_2} is a village",
        "cameras.csv line 2: unknown camera vendor 'acme'",
        f"cameras.csv line 3: grid_code: {OTHER_GRID} is not a unit of town {TOWN}",
        "cameras.csv line 4: host 'bad host/x' is not a host name",
        "cameras.csv line 5:",
        "cameras.csv line 6: channel:",
    ):
        assert expected in result.output, (expected, result.output)
    assert balena.double.requests == []
    assert registered(county) == {}


def test_bulk_registers_every_box_within_the_rate_limit_and_a_rerun_makes_nothing_twice(
    county: County, service: ServeProcess, balena: BalenaApiDouble, tmp_path: Path
) -> None:
    boxes = write_csv(tmp_path / "boxes.csv", BOXES)
    cameras = write_csv(tmp_path / "cameras.csv", CAMERAS)
    # The second box's registration fails (balena has a bad moment, beyond our retries).
    registrations = []

    def second_fails(method: str, path: str, body: Any) -> int | None:
        if path == "/device/register":
            registrations.append(body["uuid"])
            return 503 if len(registrations) in (2, 3) else None
        return None

    balena.double.refuse = second_fails
    env = env_for(service, county, balena, tmp_path / "state", PROVISION_ATTEMPTS="2")
    result_file = tmp_path / "result.csv"
    first = run(
        env, "bulk", boxes, "--cameras", cameras, "--result", result_file, "--parallel", "1"
    )
    assert first.exit_code == 1, first.output
    with result_file.open() as handle:
        statuses = [(r["node_id"], r["status"]) for r in csv.DictReader(handle)]
    assert [s for _, s in statuses] == ["done", "failed", "done"]
    assert "HTTP 503" in first.output or "503" in result_file.read_text()

    balena.double.refuse = None
    balena.double.limit, balena.double.window_s = 12, 2.0  # tight: 429s will come
    env.pop("PROVISION_ATTEMPTS")
    second = run(env, "bulk", boxes, "--cameras", cameras, "--result", result_file)
    assert second.exit_code == 0, second.output
    assert "2 boxes done in an earlier run: skipped" in second.output
    devices = balena.double.devices()
    names = sorted(d["device_name"] for d in devices)
    assert names == ["511725106-201-01", "511725106-201-02", "511725106-202-01"]
    assert sum(1 for r in balena.double.requests if r.status == 429) > 0  # the limit was hit
    # One named, expiring provisioning key for the technician, not one per box.
    [key] = balena.double.tables["api_key"]
    assert key["name"].startswith("gridwatch-tech-")
    assert key["expiry_date"]

    tags = {(t["device"], t["tag_key"]): t["value"] for t in balena.double.tables["device_tag"]}
    env_vars = {
        (v["device"], v["name"]): v["value"]
        for v in balena.double.tables["device_environment_variable"]
    }
    first_box = next(d for d in devices if d["device_name"] == "511725106-201-01")
    assert tags[(first_box["id"], "node_id")] == f"gw-{VILLAGE}-01"
    assert tags[(first_box["id"], "grids")] == f"{GRID},{GRID_2}"
    assert env_vars[(first_box["id"], "EDGE_NODE_ID")] == f"gw-{VILLAGE}-01"
    assert len(env_vars[(first_box["id"], "EDGE_PASSWORD")]) == 32
    # What all boxes share is set once on the fleet, not on every device.
    assert {name for _, name in env_vars} == {"EDGE_NODE_ID", "EDGE_PASSWORD"}
    fleet_vars = {
        v["name"]: v["value"] for v in balena.double.tables["application_environment_variable"]
    }
    assert fleet_vars == {
        "EDGE_BROKER_URL": "mqtts://broker.county.example:8883",
        "EDGE_CLOUD_URL": f"http://127.0.0.1:{service.port}",
    }

    nodes = registered(county)
    assert set(nodes) == {f"gw-{VILLAGE}-01", f"gw-{VILLAGE}-02", f"gw-{VILLAGE_2}-01"}
    for node_id, (name, uuid, has_account, version) in nodes.items():
        device = next(d for d in devices if d["device_name"] == name)
        assert (uuid, has_account, version) == (device["uuid"], True, 1), node_id
    assert count(county.url, "SELECT count(*) FROM cameras WHERE node_id LIKE 'gw-%'") == 4

    # A third run: everything done, nothing asked of balena.
    before = len(balena.double.requests)
    third = run(env, "bulk", boxes, "--cameras", cameras, "--result", result_file)
    assert third.exit_code == 0
    assert len(balena.double.requests) == before


def test_a_refused_token_is_said_clearly(
    county: County, service: ServeProcess, balena: BalenaApiDouble, tmp_path: Path
) -> None:
    env = env_for(service, county, balena, tmp_path, PROVISION_CLOUD_TOKEN="expired-token")
    boxes = write_csv(tmp_path / "boxes.csv", BOXES[:2])
    result = run(env, "bulk", boxes, "--result", tmp_path / "r.csv")
    assert result.exit_code == 2
    assert "reading the org tree: 401" in result.output
    assert balena.double.requests == []


def test_balena_refusals_are_said_clearly(
    county: County, service: ServeProcess, balena: BalenaApiDouble, tmp_path: Path
) -> None:
    settings = ProvisionSettings(
        backend="balena",
        balena_api_url=balena.url,
        balena_token=SecretStr("not-a-key"),
        balena_fleet=FLEET,
        state_dir=tmp_path,
        attempts=1,
    )
    fleet = BalenaFleet(settings)
    with pytest.raises(ProvisionError, match="HTTP 401"):
        fleet.fleet_row()
    fleet = BalenaFleet(
        settings.model_copy(update={"balena_token": SecretStr(balena.double.user_token)})
    )
    existing = balena.double.insert(
        "device",
        {
            "uuid": "b" * 32,
            "device_name": "twin",
            "belongs_to__application": fleet.fleet_row()["id"],
        },
    )
    with pytest.raises(ProvisionError, match=r"device uuid b+ exists already .*must be unique"):
        fleet._register(existing["uuid"], fleet.fleet_row(), fleet.provisioning_key())
    balena.double.insert(
        "device",
        {
            "uuid": "c" * 32,
            "device_name": "twin",
            "belongs_to__application": fleet.fleet_row()["id"],
        },
    )
    with pytest.raises(ProvisionError, match="2 devices are named twin"):
        fleet.find("twin")


def test_an_offline_box_boots_from_its_bundle_and_joins_once_pushed(
    county: County, service: ServeProcess, county_broker: CountyBroker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    online_env = env_for(service, county, None, state, PROVISION_BROKER_URL=county_broker.url)
    # Once with a link (the org tree is kept), then on site without one.
    assert (
        run(
            online_env,
            "bulk",
            write_csv(tmp_path / "none.csv", [BOXES[0]]),
            "--result",
            tmp_path / "r.csv",
        ).exit_code
        == 0
    )
    # On site the service cannot be asked anything: a token it would refuse proves that
    # `bundle` needs nothing from it (the URL stays right: the box must find its county).
    offline_env = {**online_env, "PROVISION_CLOUD_TOKEN": "not-a-token"}
    boxes = write_csv(tmp_path / "boxes.csv", [BOXES[0], (VILLAGE_2, 2, "village", "motion_box")])
    cameras = write_csv(
        tmp_path / "cameras.csv",
        [CAMERAS[0], (VILLAGE_2, 2, "cam01", "hikvision", "127.0.0.1", 1, GRID_3, "", "", "", "")],
    )
    card = tmp_path / "card"
    made = run(offline_env, "bundle", boxes, "--cameras", cameras, "--out", card)
    assert made.exit_code == 0, made.output
    node_id = f"gw-{VILLAGE_2}-02"
    bundle = card / node_id
    assert sorted(p.name for p in bundle.iterdir()) == [
        "config.json",
        "gridwatch.env",
        "registration.json",
    ]
    assert node_id not in registered(county)

    # The box boots with the card: it knows who it is, but the broker does not know it yet.
    agent = AgentProcess(
        tmp_path / "agent",
        node_id,
        county_broker.port,
        EDGE_BUNDLE_DIR=str(bundle),
        EDGE_AUTH_RETRY_MIN_S="1",
        EDGE_AUTH_RETRY_MAX_S="2",
    )
    for name in ("EDGE_NODE_ID", "EDGE_BROKER_URL"):
        agent.env.pop(name, None)
    agent.start()
    try:
        wait_until(
            lambda: "Bad user name or password" in agent.log() or "Not authorized" in agent.log(),
            30,
            "the broker refusing an unknown box",
        )
        # The technician is back in range: push, and the broker learns the box's account.
        pushed = run(online_env, "push", bundle)
        assert pushed.exit_code == 0, pushed.output
        assert not (bundle / "registration.json").exists()
        sync(county, county_broker)
        assert registered(county)[node_id][2:] == (True, 1)

        def online() -> bool:
            with psycopg.connect(county.url) as conn:
                row = conn.execute(
                    "SELECT status FROM node_state WHERE node_id = %s", (node_id,)
                ).fetchone()
            return row == ("online",)

        wait_until(online, 60, "the box online through the broker and ingest")

        # Checked before signing in: the record is kept, and the technician told why.
        unsigned = {k: v for k, v in online_env.items() if k != "PROVISION_CLOUD_TOKEN"}
        flags = ("--bundle", bundle, "--model-dir", tmp_path, "--data-dir", tmp_path)
        unrecorded = " ".join(run(unsigned, "check", *flags).output.split())
        assert "set PROVISION_CLOUD_TOKEN (an API token) or sign in with --username" in unrecorded
        assert "kept in the bundle" in unrecorded
        assert (bundle / "commissioning.json").exists()
        refused = " ".join(run(offline_env, "check", *flags).output.split())
        assert "401" in refused
        assert "no link" not in refused

        # The on-site checks, from the bundle: its camera is not there, the rest is fine.
        checked = run(
            online_env, "check", "--bundle", bundle, "--model-dir", tmp_path, "--data-dir", tmp_path
        )
        assert checked.exit_code == 1, checked.output
        with psycopg.connect(county.url) as conn:
            [(passed, checks)] = conn.execute(
                "SELECT passed, checks FROM commissioning WHERE node_id = %s", (node_id,)
            ).fetchall()
        verdicts = {c["name"].split(" ")[0]: (c["passed"], c["detail"]) for c in checks}
        assert passed is False
        assert verdicts["camera"] == (False, verdicts["camera"][1])
        assert verdicts["camera"][1].startswith("unreachable")
        assert verdicts["broker"][0] is True
        assert verdicts["clock"][0] is True, verdicts["clock"]
        assert verdicts["model"] == (True, "none needed (motion backend)")
    finally:
        agent.stop()
    again = run(online_env, "push", bundle)
    assert "nothing pending" in " ".join(again.output.split())  # as wrapped to the terminal


def test_retire_and_replace_a_box(
    county: County, service: ServeProcess, balena: BalenaApiDouble, tmp_path: Path
) -> None:
    env = env_for(service, county, balena, tmp_path / "state")
    cameras = write_csv(tmp_path / "cameras.csv", CAMERAS)
    first = run(env, "node", "--unit", VILLAGE, "--index", "1", "--cameras", cameras)
    assert first.exit_code == 0, first.output
    node_id = f"gw-{VILLAGE}-01"
    old_uuid = registered(county)[node_id][1]

    replaced = run(env, "replace", "--unit", VILLAGE, "--index", "1", "--cameras", cameras)
    assert replaced.exit_code == 0, replaced.output
    [device] = [d for d in balena.double.devices() if d["device_name"] == "511725106-201-01"]
    assert device["uuid"] != old_uuid
    assert registered(county)[node_id][1] == device["uuid"]

    retired = run(env, "retire", node_id)
    assert retired.exit_code == 0, retired.output
    assert "removed from the fleet" in retired.output
    assert node_id not in registered(county)
    assert [d for d in balena.double.devices() if d["device_name"] == "511725106-201-01"] == []
    assert run(env, "retire", node_id).exit_code == 2


def test_rotation_reaches_a_box_in_service_through_its_variables(
    county: County, service: ServeProcess, balena: BalenaApiDouble, tmp_path: Path
) -> None:
    env = env_for(service, county, balena, tmp_path / "state")
    cameras = write_csv(tmp_path / "cameras.csv", CAMERAS)
    assert run(env, "node", "--unit", VILLAGE, "--index", "2", "--cameras", cameras).exit_code == 0
    node_id = f"gw-{VILLAGE}-02"

    def box_variables() -> dict[str, str]:
        return {v["name"]: v["value"] for v in balena.double.tables["device_environment_variable"]}

    old = box_variables()["EDGE_PASSWORD"]
    # The first write of the new password is held up on its way past the tool's timeout
    # (4 s), until what follows it has landed or 7.5 s have passed: longer than a retry
    # overtaking it takes (4 s and 1-2 s of backoff), shorter than the tool waits for it.
    held: list[str] = []

    def first_patch_held(method: str, path: str, query: dict[str, str], body: Any) -> None:
        if method == "PATCH" and path.endswith("device_environment_variable") and not held:
            held.append(query.get("$filter", ""))
            with contextlib.suppress(TimeoutError):  # nothing overtook it
                wait_until(
                    lambda: any(r.method == "DELETE" for r in balena.double.requests),
                    7.5,
                    "a later step to overtake the held request",
                )

    balena.double.hold = first_patch_held
    env["PROVISION_CALL_TIMEOUT_S"] = "4"
    rotated = run(env, "rotate", node_id)
    assert rotated.exit_code == 0, rotated.output
    # Whatever is still on its way lands before the fleet is looked at.
    wait_until(lambda: balena.double.in_flight == 0, 10.0, "balena's requests to end")
    new = box_variables()["EDGE_PASSWORD"]
    assert new != old
    assert "EDGE_PASSWORD_NEXT" not in box_variables()
    # The next password reached the box before the old one stopped working.
    steps = [
        (r.method, (r.body or {}).get("name"), r.query.get("$filter", ""))
        for r in balena.double.requests
        if r.path.startswith("/v7/device_environment_variable") and r.method != "GET"
    ]
    assert ("POST", "EDGE_PASSWORD_NEXT", "") in steps
    [held_filter] = held
    assert "EDGE_PASSWORD'" in held_filter
    assert steps[-1][0] == "DELETE"
    assert "EDGE_PASSWORD_NEXT" in steps[-1][2]
    with psycopg.connect(county.url) as conn:
        row = conn.execute(
            "SELECT password_hash, pending_hash FROM node_credentials WHERE node_id = %s",
            (node_id,),
        ).fetchone()
    assert row is not None
    assert verify_password(new, row[0])
    assert row[1] is None

    standalone = env_for(service, county, None, tmp_path / "state")
    refused = run(standalone, "rotate", node_id)
    assert refused.exit_code == 2
    assert "PROVISION_BACKEND=balena" in refused.output


def test_a_standalone_box_is_not_provisioned_without_a_bundle_for_its_password(
    county: County, service: ServeProcess, tmp_path: Path
) -> None:
    """Its password exists only in its bundle: without one it would be issued and lost."""
    env = env_for(service, county, None, tmp_path / "state")
    cameras = write_csv(tmp_path / "cameras.csv", CAMERAS)
    refused = run(env, "node", "--unit", VILLAGE, "--index", "3", "--cameras", cameras)
    assert refused.exit_code == 2
    assert "--bundle DIR" in " ".join(refused.output.split())
    assert f"gw-{VILLAGE}-03" not in registered(county)
    boxes = write_csv(tmp_path / "boxes.csv", [("unit_code", "index"), (VILLAGE, "3")])
    assert run(env, "bulk", boxes, "--cameras", cameras).exit_code == 2
