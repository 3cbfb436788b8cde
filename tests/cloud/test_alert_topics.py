"""Alerts on the broker's alert topics, on a real Mosquitto configured by `broker sync` from
the org tree: an app account reads its jurisdiction's alerts and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from cloud.app import create_app
from cloud.broker_acl import AppAccountRow
from cloud.org_files import read_rows
from cloud.settings import CloudSettings
from gridwatch.cli import app as gridwatch
from protocols import decode
from protocols.alerts import Alert
from protocols.passwords import hash_password
from protocols.topics import alerts_filter
from tests.cloud.county_fixtures import OTHER_NODE, VILLAGE_NODE, County, county_database
from tests.factories import make_detection_event
from tests.support.county import COUNTY, OTHER_TOWN, TOWN
from tests.support.mosquitto import CountyBroker, county_broker
from tests.support.mqtt import MqttProbe

SERVICE_PASSWORD = "cloud-secret"
APPS = {"app.town-106": "town-secret", "app.town-100": "other-secret"}


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("topics"))


def apps_file(directory: Path) -> Path:
    apps = directory / "apps.csv"
    apps.write_text(f"username,unit_code\napp.town-106,{TOWN}\napp.town-100,{OTHER_TOWN}\n")
    return apps


@pytest.fixture(scope="module")
def secured(county: County, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountyBroker]:
    directory = tmp_path_factory.mktemp("apps")
    apps = apps_file(directory)
    extra = directory / "app-passwords"  # as made with mosquitto_passwd
    extra.write_text("".join(f"{u}:{hash_password(p)}\n" for u, p in APPS.items()))
    broker = county_broker(
        directory / "broker",
        county.url,
        SERVICE_PASSWORD,
        apps=read_rows(apps.read_text(), AppAccountRow, apps.name),
        extra_passwords=extra,
    )
    broker.start()
    yield broker
    broker.stop()


def app_probe(broker: CountyBroker, username: str) -> MqttProbe:
    return MqttProbe(broker.port, username=username, password=APPS[username], client_id=username)


def test_an_app_account_reads_only_its_jurisdictions_alerts(
    county: County, secured: CountyBroker
) -> None:
    town, other = app_probe(secured, "app.town-106"), app_probe(secured, "app.town-100")
    town.connect()
    other.connect()
    try:
        assert not town.subscribe(alerts_filter(COUNTY, TOWN)).is_failure
        assert not other.subscribe(alerts_filter(COUNTY, OTHER_TOWN)).is_failure
        # The other town's case first: if the ACL let it through, it would arrive first.
        county.write(
            [make_detection_event(node_id=OTHER_NODE, camera_id="cam01", seq=1)], datetime.now(UTC)
        )
        county.write(
            [make_detection_event(node_id=VILLAGE_NODE, camera_id="cam01", seq=1)],
            datetime.now(UTC),
        )
        settings = CloudSettings(
            database_url=county.url,
            broker_url=secured.url,
            broker_username="api.1",
            broker_password=SecretStr(SERVICE_PASSWORD),
            snapshot_dir=county.snapshots,
            case_timer_interval_s=600,
        )
        with TestClient(create_app(settings)):  # its relay publishes as the `api.1` account
            mine = town.expect(timeout_s=30)
            theirs = other.expect(timeout_s=30)
        alert = decode(Alert, mine.payload)
        assert mine.topic.startswith(f"gw/v1/alerts/511725/{TOWN}/")
        assert (alert.org.town, alert.node_id, alert.msg_type.value) == (
            TOWN,
            VILLAGE_NODE,
            "alert",
        )
        assert decode(Alert, theirs.payload).org.town == OTHER_TOWN
        assert town.drain() == []
        assert other.drain() == []
        # Asking for the other town, or everything, is refused when asked.
        assert town.subscribe(alerts_filter(COUNTY, OTHER_TOWN)).value == 0x87
        assert town.subscribe("gw/v1/alerts/#").value == 0x87
    finally:
        town.close()
        other.close()


def test_the_rules_confine_nodes_and_apps(county: County, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        gridwatch,
        ["cloud", "broker", "acl", "--apps", str(apps_file(tmp_path))],
        env={"CLOUD_DATABASE_URL": county.url},
    )
    assert result.exit_code == 0, result.output
    rules = json.loads(result.output)
    assert rules["clients"]["app.town-106"] == ["app/app.town-106"]
    assert rules["clients"]["ingest.1"] == ["service/ingest"]
    assert rules["roles"]["app/app.town-106"] == [
        {"acltype": "publishClientReceive", "topic": f"gw/v1/alerts/511725/{TOWN}/#"},
        {"acltype": "subscribePattern", "topic": f"gw/v1/alerts/511725/{TOWN}/#"},
    ]
    assert {"acltype": "subscribePattern", "topic": "$share/ingest/gw/v1/nodes/+/events"} in (
        rules["roles"]["service/ingest"]
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("username,unit_code\nqx-node-01,511725106\n")
    result = CliRunner().invoke(
        gridwatch,
        ["cloud", "broker", "acl", "--apps", str(bad)],
        env={"CLOUD_DATABASE_URL": county.url},
    )
    assert result.exit_code == 2
    assert "bad.csv line 2: username" in result.output
