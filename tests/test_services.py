"""The test services themselves: a real private Mosquitto (plain, passwords + the
dynamic-security plugin, TLS) and a real PostgreSQL. No mocks of either."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from cloud.broker_acl import grants
from cloud.broker_dynsec import render_config
from protocols import NodeState, decode, encode
from protocols.acl import node_acl
from protocols.enums import NodeStatus, StateReason
from protocols.passwords import hash_password
from protocols.topics import (
    config_desired_topic,
    events_topic,
    node_filter,
    state_topic,
)
from tests.conftest import REPO, BrokerFactory
from tests.factories import make_detection_event, make_node_config, make_node_state
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.mqtt import MqttProbe
from tests.support.ports import free_port
from tests.support.postgres import fresh_database, postgres_server
from tests.support.processes import wait_for_line

NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def secured_broker(
    broker_factory: BrokerFactory, tmp_path_factory: pytest.TempPathFactory
) -> MosquittoBroker:
    """Passwords in a password file, rules in the dynamic-security plugin, as the county's."""
    dynsec = tmp_path_factory.mktemp("dynsec") / "dynsec.json"
    access = grants(["node-a", "node-b"], ["ingest.1", "api.1"], [], [], ingest_group="ingest")
    dynsec.write_text(render_config(access, "sync.admin", hash_password("admin-secret")))
    return broker_factory(
        BrokerOptions(
            users={
                "node-a": "secret-a",
                "node-b": "secret-b",
                "ingest.1": "secret-cloud",
                "api.1": "secret-cloud",
            },
            dynsec_file=dynsec,
        )
    )


def service(broker: MosquittoBroker, username: str) -> MqttProbe:
    return MqttProbe(broker.port, username=username, password="secret-cloud", client_id=username)


def test_message_goes_through_the_real_broker(broker: MosquittoBroker) -> None:
    sub = MqttProbe(broker.port).connect()
    pub = MqttProbe(broker.port).connect()
    try:
        assert not sub.subscribe(events_topic("node-1")).is_failure
        event = make_detection_event(node_id="node-1")
        pub.publish(events_topic("node-1"), encode(event))
        received = sub.expect(events_topic("node-1"))
        assert decode(type(event), received.payload) == event
    finally:
        sub.close()
        pub.close()


def test_retained_state_reaches_a_later_subscriber(broker: MosquittoBroker) -> None:
    state = make_node_state(node_id="node-retained")
    pub = MqttProbe(broker.port).connect()
    pub.publish(state_topic("node-retained"), encode(state), retain=True)
    pub.close()
    late = MqttProbe(broker.port).connect()
    try:
        late.subscribe(state_topic("node-retained"))
        received = late.expect(state_topic("node-retained"))
        assert received.retain
        assert decode(NodeState, received.payload) == state
    finally:
        late.close()


def test_last_will_is_published_when_a_node_process_is_killed(broker: MosquittoBroker) -> None:
    node_id = "node-killed"
    watcher = MqttProbe(broker.port).connect()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.will_node", str(broker.port), node_id],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_line(process, "ready")
        watcher.subscribe(state_topic(node_id))
        online = decode(NodeState, watcher.expect(state_topic(node_id)).payload)
        assert online.status is NodeStatus.ONLINE
        process.kill()  # SIGKILL: no DISCONNECT packet, so the broker sends the will
        offline = decode(NodeState, watcher.expect(state_topic(node_id), timeout_s=10).payload)
        assert offline.status is NodeStatus.OFFLINE
        assert offline.reason is StateReason.CONNECTION_LOST
    finally:
        process.kill()
        process.wait()
        watcher.close()
    # The will was retained: a screen that connects later still sees the node offline.
    late = MqttProbe(broker.port).connect()
    try:
        late.subscribe(state_topic(node_id))
        assert (
            decode(NodeState, late.expect(state_topic(node_id)).payload).status
            is NodeStatus.OFFLINE
        )
    finally:
        late.close()


def test_wrong_password_is_refused(secured_broker: MosquittoBroker) -> None:
    probe = MqttProbe(secured_broker.port, username="node-a", password="wrong")
    with pytest.raises(ConnectionRefusedError, match=r"Bad user name or password|Not authorized"):
        probe.connect()
    probe.client.loop_stop()


def test_acl_denies_publishing_into_another_nodes_subtree(
    secured_broker: MosquittoBroker,
) -> None:
    cloud = service(secured_broker, "ingest.1").connect()
    node_a = MqttProbe(
        secured_broker.port, username="node-a", password="secret-a", client_id="node-a"
    ).connect()
    try:
        assert not cloud.subscribe("$share/ingest/gw/v1/nodes/+/events").is_failure
        forged = make_detection_event(node_id="node-b")
        reason = node_a.publish(events_topic("node-b"), encode(forged))
        assert isinstance(reason, ReasonCode)
        assert reason.value == NOT_AUTHORIZED
        # The node's own events still flow; they arrive after the forged one would have.
        own = make_detection_event(node_id="node-a")
        assert not node_a.publish(events_topic("node-a"), encode(own)).is_failure
        received = cloud.expect()
        assert received.topic == events_topic("node-a")
        assert cloud.drain() == []
    finally:
        node_a.close()
        cloud.close()


def test_acl_denies_reading_another_nodes_config(secured_broker: MosquittoBroker) -> None:
    node_a = MqttProbe(
        secured_broker.port, username="node-a", password="secret-a", client_id="node-a"
    ).connect()
    cloud = service(secured_broker, "api.1").connect()
    try:
        # Refused when asked for (an acl_file would grant it and filter at delivery).
        assert node_a.subscribe(config_desired_topic("node-b")).value == NOT_AUTHORIZED
        assert node_a.subscribe(node_filter("node-b")).value == NOT_AUTHORIZED
        assert not node_a.subscribe(config_desired_topic("node-a")).is_failure
        cloud.publish(config_desired_topic("node-b"), encode(make_node_config(node_id="node-b")))
        own = make_node_config(node_id="node-a")
        cloud.publish(config_desired_topic("node-a"), encode(own))
        # Published after node-b's: once it is here, node-b's would have been too.
        assert node_a.expect().topic == config_desired_topic("node-a")
        assert node_a.drain() == []
    finally:
        cloud.close()
        node_a.close()


def test_node_reads_its_own_desired_config(secured_broker: MosquittoBroker) -> None:
    cloud = service(secured_broker, "api.1").connect()
    config = make_node_config(node_id="node-a")
    assert not cloud.publish(config_desired_topic("node-a"), encode(config), retain=True).is_failure
    cloud.close()
    node_a = MqttProbe(
        secured_broker.port, username="node-a", password="secret-a", client_id="node-a"
    ).connect()
    try:
        node_a.subscribe(config_desired_topic("node-a"))
        received = node_a.expect(config_desired_topic("node-a"))
        assert received.retain
        assert received.payload == encode(config)
    finally:
        node_a.close()


def test_tls_with_hostname_verification(broker_factory: BrokerFactory) -> None:
    tls_broker = broker_factory(BrokerOptions(tls=True))
    assert tls_broker.ca is not None
    assert tls_broker.tls_port is not None
    probe = MqttProbe(tls_broker.tls_port, ca_cert=str(tls_broker.ca.pair.cert)).connect()
    try:
        probe.subscribe("gw/v1/nodes/tls-node/events")
        event = make_detection_event(node_id="tls-node")
        probe.publish(events_topic("tls-node"), encode(event))
        assert probe.expect(events_topic("tls-node")).payload == encode(event)
    finally:
        probe.close()


def test_tls_refuses_a_broker_signed_by_another_ca(
    broker_factory: BrokerFactory,
    tmp_path: Path,
) -> None:
    from tests.support.tls import TestCA

    tls_broker = broker_factory(BrokerOptions(tls=True))
    assert tls_broker.tls_port is not None
    stranger = TestCA(tmp_path, name="another CA")
    probe = MqttProbe(tls_broker.tls_port, ca_cert=str(stranger.pair.cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        probe.connect()


def test_client_certificate_identifies_the_node(
    broker_factory: BrokerFactory,
    tmp_path: Path,
) -> None:
    tls_broker = broker_factory(
        BrokerOptions(
            tls=True,
            require_certificate=True,
            acl="\n".join(f"pattern {a.value} {t}" for a, t in node_acl()) + "\n",
        )
    )
    assert tls_broker.ca is not None
    assert tls_broker.tls_port is not None
    cert = tls_broker.ca.issue("node-cert", "node-c", server=False)
    probe = MqttProbe(
        tls_broker.tls_port,
        ca_cert=str(tls_broker.ca.pair.cert),
        certfile=str(cert.cert),
        keyfile=str(cert.key),
    ).connect()
    try:
        own = make_detection_event(node_id="node-c")
        assert not probe.publish(events_topic("node-c"), encode(own)).is_failure
        foreign = make_detection_event(node_id="node-d")
        reason = probe.publish(events_topic("node-d"), encode(foreign))
        assert reason is not None
        assert reason.value == NOT_AUTHORIZED
    finally:
        probe.close()


def test_fresh_database_starts_empty_and_is_dropped(postgres_admin_url: str) -> None:
    with fresh_database(postgres_admin_url) as url:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT current_database(), count(*) FROM "
                "information_schema.tables WHERE table_schema = 'public'"
            ).fetchone()
        assert row is not None
        name, tables = row
        assert name.startswith("gridwatch_test_")
        assert tables == 0
    with psycopg.connect(postgres_admin_url) as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
        )


def test_database_is_writable_and_readable(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TABLE fixture_probe (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO fixture_probe VALUES (1, '双峰村')")
        conn.commit()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT note FROM fixture_probe WHERE id = 1").fetchone() == ("双峰村",)


def test_private_postgres_starts_when_no_server_is_reachable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with (
        postgres_server(tmp_path, local_url=nobody) as admin_url,
        fresh_database(admin_url) as url,
        psycopg.connect(url) as conn,
    ):
        assert admin_url != nobody
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert row is not None
        assert row[0] >= 150000
