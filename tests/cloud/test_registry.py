"""Provisioning's side of the service: a node and its cameras registered through the API, its
broker account issued, rotated and revoked, and the broker's password file and
dynamic-security plugin kept in step with the registry — checked against a real Mosquitto."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.reasoncodes import ReasonCode
from typer.testing import CliRunner

from cloud.app import create_app
from cloud.broker import stop_stale
from edge.link import Link
from edge.settings import EdgeSettings
from gridwatch.cli import app as gridwatch
from protocols import encode
from protocols.passwords import hash_password, verify_password
from protocols.topics import config_desired_topic, events_topic
from tests.cloud.county_fixtures import County, app_settings, county_database, signed_in
from tests.factories import make_detection_event, make_node_config
from tests.support.county import GRID, GRID_2, OTHER_GRID, TOWN, VILLAGE
from tests.support.mosquitto import (
    ADMIN_PASSWORD,
    BrokerOptions,
    CountyBroker,
    MosquittoBroker,
    county_broker,
    county_files,
)
from tests.support.mqtt import MqttProbe
from tests.support.ports import wait_until
from tests.support.processes import GridwatchProcess

NOT_AUTHORIZED = 0x87
NEW_NODE = "qx-shuangfeng-02"
NEIGHBOUR = "qx-shuangfeng-03"
CLOUD_PASSWORD = "the service's broker password"


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def client(county: County, broker: MosquittoBroker) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings(county, broker.url))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def registry_broker(
    county: County, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CountyBroker]:
    """The county's broker, configured by `broker sync` alone (its `--init` before it
    starts, then sync on the plugin's control topic)."""
    broker = county_broker(tmp_path_factory.mktemp("county-broker"), county.url, CLOUD_PASSWORD)
    broker.start()
    yield broker
    broker.stop()


def sync(county: County, broker: CountyBroker) -> bool:
    return broker.sync()


def registration(unit: str = VILLAGE, **overrides: Any) -> dict[str, Any]:
    return {
        "unit_code": unit,
        "tier": "village",
        "name": "511725106-201-02",
        "balena_uuid": "0123456789abcdef0123456789abcdef",
        "cameras": [
            {
                "camera_id": "cam01",
                "unit_code": GRID,
                "name": "村委会门口",
                "stream_url": "rtsp://192.168.1.64:554/Streaming/Channels/102",
                "lon": 106.97,
                "lat": 30.84,
            },
            {"camera_id": "cam02", "unit_code": GRID_2},
        ],
        **overrides,
    }


def test_a_technician_registers_a_box_within_the_town_and_nowhere_else(
    county: County, client: TestClient
) -> None:
    tech = signed_in(client, county, "tech")
    first = client.put(f"/api/v1/fleet/nodes/{NEW_NODE}", json=registration(), headers=tech)
    assert first.status_code == 200, first.text
    assert first.json()["cameras"] == 2
    # Again, with one camera less: idempotent, and the list is the box's whole list.
    body = registration(cameras=registration()["cameras"][:1])
    again = client.put(f"/api/v1/fleet/nodes/{NEW_NODE}", json=body, headers=tech)
    assert again.status_code == 200
    with psycopg.connect(county.url) as conn:
        cameras = conn.execute(
            "SELECT camera_id, unit_code, stream_url FROM cameras WHERE node_id = %s",
            (NEW_NODE,),
        ).fetchall()
        audited = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'node.register' AND target_id = %s",
            (NEW_NODE,),
        ).fetchone()
    assert cameras == [("cam01", GRID, "rtsp://192.168.1.64:554/Streaming/Channels/102")]
    assert audited == (2,)

    outside = registration(cameras=[{"camera_id": "cam01", "unit_code": OTHER_GRID}])
    refused = client.put(f"/api/v1/fleet/nodes/{NEIGHBOUR}", json=outside, headers=tech)
    assert refused.status_code == 404  # another town's grid is not the technician's to use
    secret = registration(
        cameras=[{"camera_id": "cam01", "unit_code": GRID, "stream_url": "rtsp://a:b@10.0.0.2/"}]
    )
    bad = client.put(f"/api/v1/fleet/nodes/{NEIGHBOUR}", json=secret, headers=tech)
    assert bad.status_code == 422
    assert "credentials" in bad.text
    unknown = client.put(
        f"/api/v1/fleet/nodes/{NEIGHBOUR}", json=registration(unit=TOWN + "999"), headers=tech
    )
    assert unknown.status_code in (400, 404)
    worker = signed_in(client, county, "worker")
    assert (
        client.put(f"/api/v1/fleet/nodes/{NEIGHBOUR}", json=registration(), headers=worker)
    ).status_code == 403


def test_broker_accounts_follow_the_registry(
    county: County, client: TestClient, registry_broker: CountyBroker
) -> None:
    tech = signed_in(client, county, "tech")
    assert client.put(
        f"/api/v1/fleet/nodes/{NEIGHBOUR}", json=registration(name="n3"), headers=tech
    ).is_success
    issued = {}
    for node_id in (NEW_NODE, NEIGHBOUR):
        response = client.post(f"/api/v1/nodes/{node_id}/credentials", headers=tech)
        assert response.status_code == 201, response.text
        issued[node_id] = response.json()["password"]
    assert sync(county, registry_broker)
    assert not sync(county, registry_broker)  # nothing changed: nothing rewritten or reloaded
    text = registry_broker.config.password_file.read_text()  # type: ignore[union-attr]
    assert issued[NEW_NODE] not in text  # hashes only

    port = registry_broker.port
    ingest = MqttProbe(port, username="ingest.1", password=CLOUD_PASSWORD, client_id="ingest.1")
    api = MqttProbe(port, username="api.1", password=CLOUD_PASSWORD, client_id="api.1")
    node = MqttProbe(port, username=NEW_NODE, password=issued[NEW_NODE], client_id=NEW_NODE)
    for probe in (ingest, api, node):
        probe.connect()
    try:
        assert not ingest.subscribe("$share/ingest/gw/v1/nodes/+/events").is_failure
        # Into the neighbour's subtree: refused; its own: delivered.
        forged = node.publish(
            events_topic(NEIGHBOUR), encode(make_detection_event(node_id=NEIGHBOUR))
        )
        assert isinstance(forged, ReasonCode)
        assert forged.value == NOT_AUTHORIZED
        assert not node.publish(
            events_topic(NEW_NODE), encode(make_detection_event(node_id=NEW_NODE))
        ).is_failure
        assert ingest.expect().topic == events_topic(NEW_NODE)
        # The neighbour's config: refused when asked for; its own: delivered.
        assert node.subscribe(config_desired_topic(NEIGHBOUR)).value == NOT_AUTHORIZED
        assert not node.subscribe(config_desired_topic(NEW_NODE)).is_failure
        api.publish(config_desired_topic(NEIGHBOUR), encode(make_node_config(node_id=NEIGHBOUR)))
        api.publish(config_desired_topic(NEW_NODE), encode(make_node_config(node_id=NEW_NODE)))
        assert node.expect().topic == config_desired_topic(NEW_NODE)
        assert node.drain() == []
    finally:
        for probe in (node, api, ingest):
            probe.close()
    with pytest.raises(ConnectionRefusedError):
        MqttProbe(port, username=NEW_NODE, password="guessed", client_id=NEW_NODE).connect()


def test_a_rotation_lets_a_box_in_service_switch_without_a_visit(
    county: County, client: TestClient, registry_broker: CountyBroker, tmp_path: Path
) -> None:
    tech = signed_in(client, county, "tech")
    current = client.post(f"/api/v1/nodes/{NEW_NODE}/credentials", headers=tech).json()
    sync(county, registry_broker)
    rotation = client.post(f"/api/v1/nodes/{NEW_NODE}/credentials?rotate=true", headers=tech)
    assert rotation.status_code == 201
    assert rotation.json()["pending"] is True
    next_password = rotation.json()["password"]
    # Delivered to the box (its variables) beside the current one; nothing changes yet.
    assert not sync(county, registry_broker)

    settings = EdgeSettings(
        node_id=NEW_NODE,
        broker_url=f"mqtt://127.0.0.1:{registry_broker.port}",
        password=current["password"],
        password_next=next_password,
        data_dir=tmp_path,
        metrics_port=0,
    )  # type: ignore[call-arg]
    assert client.post(f"/api/v1/nodes/{NEW_NODE}/credentials/activate", headers=tech).is_success
    assert sync(county, registry_broker)
    # The box starts (or reconnects) with its old password first: refused, then the next.
    link = Link(settings, boot_id=None, on_published=lambda mid, rc: None, subscriptions=[])
    link.client.reconnect_delay_set(0.1, 0.5)
    link.start()
    try:
        assert link.connected.wait(20), link.last_refusal
        assert link.using_next_password
    finally:
        link.stop()
    with pytest.raises(ConnectionRefusedError):
        MqttProbe(
            registry_broker.port,
            username=NEW_NODE,
            password=current["password"],
            client_id=NEW_NODE,
        ).connect()
    again = client.post(f"/api/v1/nodes/{NEW_NODE}/credentials/activate", headers=tech)
    assert again.status_code == 409


def test_a_retired_box_loses_its_account_and_keeps_its_history(
    county: County, client: TestClient, registry_broker: CountyBroker
) -> None:
    tech = signed_in(client, county, "tech")
    password = client.post(f"/api/v1/nodes/{NEIGHBOUR}/credentials", headers=tech).json()[
        "password"
    ]
    sync(county, registry_broker)
    box = MqttProbe(
        registry_broker.port, username=NEIGHBOUR, password=password, client_id=NEIGHBOUR
    ).connect()
    assert client.delete(f"/api/v1/fleet/nodes/{NEIGHBOUR}", headers=tech).status_code == 204
    assert sync(county, registry_broker)
    wait_until(lambda: box.disconnects != [], 10, "the retired box disconnected")
    box.client.loop_stop()  # paho would try again, refused each time
    with pytest.raises(ConnectionRefusedError):
        MqttProbe(
            registry_broker.port, username=NEIGHBOUR, password=password, client_id=NEIGHBOUR
        ).connect()
    # The next round deletes the account the first one disabled.
    assert sync(county, registry_broker)
    assert NEIGHBOUR not in registry_broker.files.password_file.read_text()
    nodes = client.get("/api/v1/fleet/nodes", headers=tech).json()
    assert NEIGHBOUR not in [n["node_id"] for n in nodes]
    assert client.post(f"/api/v1/nodes/{NEIGHBOUR}/credentials", headers=tech).status_code == 404
    # A replacement box takes the same id: registered again, a new account.
    assert client.put(
        f"/api/v1/fleet/nodes/{NEIGHBOUR}", json=registration(name="n3-new"), headers=tech
    ).is_success
    assert client.post(f"/api/v1/nodes/{NEIGHBOUR}/credentials", headers=tech).status_code == 201


def test_commissioning_checks_are_kept_with_their_verdict(
    county: County, client: TestClient
) -> None:
    tech = signed_in(client, county, "tech")
    body = {
        "checked_at": "2026-11-25T08:00:00Z",
        "checks": [
            {"name": "camera cam01", "passed": True, "detail": "1920x1080 h264 25 fps"},
            {"name": "camera cam02", "passed": False, "detail": "auth failed"},
        ],
    }
    response = client.post(f"/api/v1/nodes/{NEW_NODE}/commissioning", json=body, headers=tech)
    assert response.status_code == 201, response.text
    assert response.json()["passed"] is False
    listed = client.get(f"/api/v1/nodes/{NEW_NODE}/commissioning", headers=tech).json()
    assert [c["detail"] for c in listed[0]["checks"]] == ["1920x1080 h264 25 fps", "auth failed"]


def test_hashes_are_mosquittos_own() -> None:
    hashed = hash_password("a password")
    assert hashed.startswith("$7$101$")
    assert verify_password("a password", hashed)
    assert not verify_password("another", hashed)


def test_broker_sync_follows_every_credential_change(
    county: County, client: TestClient, tmp_path: Path
) -> None:
    """`gridwatch cloud broker sync --follow` as it runs beside a county broker: a password
    issued through the API works at the broker moments later, with nobody running sync."""
    files = county_files(tmp_path / "broker", CLOUD_PASSWORD)
    broker = CountyBroker(tmp_path / "broker", county.url, files)
    broker.start()
    follower = GridwatchProcess(
        [
            "cloud",
            "broker",
            "sync",
            "--password-file",
            str(files.password_file),
            "--pid-file",
            str(files.pid_file),
            "--restart-command",
            f"{sys.executable} -m tests.support.restart_broker {files.pid_file}",
            "--follow",
        ],
        tmp_path / "sync.log",
        {
            **os.environ,
            "CLOUD_DATABASE_URL": county.url,
            "CLOUD_BROKER_URL": broker.url,
            "CLOUD_BROKER_PASSWORD": CLOUD_PASSWORD,
            "CLOUD_BROKER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        },
    ).start()
    try:
        wait_until(lambda: "following its changes" in follower.log(), 30, "the first sync")
        tech = signed_in(client, county, "tech")
        password = client.post(f"/api/v1/nodes/{NEW_NODE}/credentials", headers=tech).json()[
            "password"
        ]

        def accepted() -> bool:
            try:
                MqttProbe(
                    broker.port, username=NEW_NODE, password=password, client_id=NEW_NODE
                ).connect().close()
            except ConnectionRefusedError:
                return False
            return True

        wait_until(accepted, 30, "the new password accepted by the broker", interval_s=0.2)
        # Restarted, never reloaded: Mosquitto 2.0.11 crashes after a SIGHUP once a box
        # whose session it re-checked comes back.
        assert "Reloading config" not in broker.log()
    finally:
        assert follower.stop() == 0, follower.log()
        broker.stop()
        stop_stale(files.pid_file)  # the broker as the restart command started it


def test_sync_init_gives_a_stopped_broker_all_it_needs_to_start(
    county: County, client: TestClient, tmp_path: Path
) -> None:
    """`broker sync --init`, before the broker's first start: it starts with every account
    bound and confined, nothing left to a first sync."""
    tech = signed_in(client, county, "tech")
    password = client.post(f"/api/v1/nodes/{NEW_NODE}/credentials", headers=tech).json()["password"]
    passwd, dynsec = tmp_path / "passwd", tmp_path / "dynsec.json"
    args = ["cloud", "broker", "sync", "--password-file", str(passwd), "--init", str(dynsec)]
    env = {
        "CLOUD_DATABASE_URL": county.url,
        "CLOUD_BROKER_PASSWORD": CLOUD_PASSWORD,
        "CLOUD_BROKER_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    assert CliRunner().invoke(gridwatch, [*args, "--follow"], env=env).exit_code == 2
    without = CliRunner().invoke(
        gridwatch,
        args,
        env={**env, "CLOUD_BROKER_PASSWORD": None},  # type: ignore[dict-item]
    )
    assert without.exit_code == 2  # the service accounts would be left out silently
    assert "CLOUD_BROKER_PASSWORD not set" in without.output
    bad = CliRunner().invoke(gridwatch, [*args, "--service", "cloud"], env=env)
    assert bad.exit_code == 2
    assert "--service cloud: not ingest.<name> or api.<name>" in bad.output
    result = CliRunner().invoke(gridwatch, args, env=env)
    assert result.exit_code == 0, result.output
    (tmp_path / "broker").mkdir()
    broker = MosquittoBroker(
        tmp_path / "broker", BrokerOptions(password_file=passwd, dynsec_file=dynsec)
    )
    broker.start()
    try:
        box = MqttProbe(broker.port, username=NEW_NODE, password=password, client_id=NEW_NODE)
        box.connect()
        assert box.subscribe(config_desired_topic(NEIGHBOUR)).value == NOT_AUTHORIZED
        box.close()
        with pytest.raises(ConnectionRefusedError):
            MqttProbe(broker.port, username=NEW_NODE, password=password).connect()
    finally:
        broker.stop()
