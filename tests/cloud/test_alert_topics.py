"""Alerts on the broker's alert topics, on a real Mosquitto whose ACL file is generated from
the org tree: an app account reads its jurisdiction's alerts and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from cloud.app import create_app
from cloud.settings import CloudSettings
from gridwatch.cli import app as gridwatch
from protocols import decode
from protocols.alerts import Alert
from tests.cloud.county_fixtures import OTHER_NODE, VILLAGE_NODE, County, county_database
from tests.conftest import BrokerFactory
from tests.factories import make_detection_event
from tests.support.county import OTHER_TOWN, TOWN
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.mqtt import MqttProbe

PASSWORDS = {"cloud": "cloud-secret", "app.town-106": "town-secret", "app.town-100": "other-secret"}


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("topics"))


def generated_acl(county: County, directory: Path) -> str:
    apps = directory / "apps.csv"
    apps.write_text(f"username,unit_code\napp.town-106,{TOWN}\napp.town-100,{OTHER_TOWN}\n")
    result = CliRunner().invoke(
        gridwatch,
        ["cloud", "broker", "acl", "--apps", str(apps)],
        env={"CLOUD_DATABASE_URL": county.url},
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def secured(
    county: County, broker_factory: BrokerFactory, tmp_path_factory: pytest.TempPathFactory
) -> MosquittoBroker:
    acl = generated_acl(county, tmp_path_factory.mktemp("acl"))
    return broker_factory(BrokerOptions(users=PASSWORDS, acl=acl))


def test_an_app_account_reads_only_its_jurisdictions_alerts(
    county: County, secured: MosquittoBroker
) -> None:
    town = MqttProbe(secured.port, username="app.town-106", password=PASSWORDS["app.town-106"])
    other = MqttProbe(secured.port, username="app.town-100", password=PASSWORDS["app.town-100"])
    town.connect()
    other.connect()
    try:
        assert not town.subscribe("gw/v1/alerts/#").is_failure
        assert not other.subscribe("gw/v1/alerts/#").is_failure
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
            broker_username="cloud",
            broker_password=SecretStr(PASSWORDS["cloud"]),
            snapshot_dir=county.snapshots,
            case_timer_interval_s=600,
        )
        with TestClient(create_app(settings)):  # its relay publishes as the `cloud` account
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
        # Asking for the other town by name changes nothing: the broker refuses or stays mute.
        refused = town.subscribe(f"gw/v1/alerts/511725/{OTHER_TOWN}/#")
        assert refused.is_failure or town.drain() == []
    finally:
        town.close()
        other.close()


def test_the_acl_confines_nodes_and_apps(county: County, tmp_path: Path) -> None:
    acl = generated_acl(county, tmp_path)
    assert "user cloud\n" in acl
    assert f"user app.town-106\ntopic read gw/v1/alerts/511725/{TOWN}/+/+/+\n" in acl
    assert "pattern write gw/v1/nodes/%u/events" in acl
    bad = tmp_path / "bad.csv"
    bad.write_text("username,unit_code\nqx-node-01,511725106\n")
    result = CliRunner().invoke(
        gridwatch,
        ["cloud", "broker", "acl", "--apps", str(bad)],
        env={"CLOUD_DATABASE_URL": county.url},
    )
    assert result.exit_code == 2
    assert "bad.csv line 2: username" in result.output
