"""The edge agent as a real process against a real Mosquitto: nothing lost across a broker
outage or a kill -9, last will, remote config, commands, health, refused credentials."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from uuid import UUID

import orjson
import pytest

from protocols import (
    CommandRequest,
    CommandResponse,
    ConfigReport,
    DetectionEvent,
    NodeHealth,
    NodeState,
    decode,
    encode,
)
from protocols.base import utc_now
from protocols.enums import ConfigStatus, NodeStatus, ReplyStatus, StateReason, StreamStatus
from protocols.receipts import Receipt, seq_ranges
from protocols.topics import (
    command_topic,
    config_desired_topic,
    config_reported_topic,
    events_topic,
    health_topic,
    node_filter,
    receipts_topic,
    response_topic,
    state_topic,
)
from tests.conftest import BrokerFactory
from tests.factories import new_uuid7
from tests.support.agent import AgentProcess, motion_config
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.mqtt import MqttProbe, Received
from tests.support.ports import wait_until


class Cloud:
    """The cloud's side of the broker for one node: everything the node publishes, and a
    receipt for the events it keeps, as the county's ingest sends once they are stored."""

    def __init__(
        self,
        broker: MosquittoBroker,
        node_id: str,
        *,
        persistent: bool = False,
        client_id: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.probe = MqttProbe(broker.port, persistent=persistent, client_id=client_id).connect()
        self.probe.subscribe(node_filter(node_id))
        self.events: dict[UUID, DetectionEvent] = {}
        self.deliveries = 0
        self.other: list[Received] = []

    def pump(self, timeout_s: float = 0.2) -> None:
        """Take what arrived; events are kept by id, as the cloud stores them, and
        receipted."""
        stored: list[int] = []
        try:
            while True:
                message = self.probe.expect(timeout_s=timeout_s)
                if message.topic == events_topic(self.node_id):
                    event = decode(DetectionEvent, message.payload)
                    self.events[event.event_id] = event
                    self.deliveries += 1
                    stored.append(event.seq)
                elif message.topic != receipts_topic(self.node_id):
                    self.other.append(message)
                timeout_s = 0.0
        except TimeoutError:
            pass
        if stored:
            receipt = Receipt(node_id=self.node_id, sent_at=utc_now(), seqs=seq_ranges(stored))
            self.probe.publish(receipts_topic(self.node_id), encode(receipt))

    def wait_events(self, count: int, timeout_s: float) -> None:
        def enough() -> bool:
            self.pump()
            return len(self.events) >= count

        wait_until(enough, timeout_s, f"{count} events from {self.node_id}")

    def expect_on(self, topic: str, timeout_s: float = 15.0) -> Received:
        for message in self.other:
            if message.topic == topic:
                self.other.remove(message)
                return message
        return self.probe.expect(topic, timeout_s=timeout_s)

    def close(self) -> None:
        self.probe.close()


def assert_complete(cloud: Cloud, generated: int) -> None:
    """Every event the node made arrived, each stored once, with no seq gap."""
    cloud.pump()
    seqs = sorted(event.seq for event in cloud.events.values())
    assert len(cloud.events) == generated
    assert seqs == list(range(generated))


@pytest.fixture(scope="module")
def durable_broker(broker_factory: BrokerFactory) -> MosquittoBroker:
    return broker_factory(BrokerOptions(persistence=True))


@pytest.fixture
def node(request: pytest.FixtureRequest) -> str:
    """A node id of the test's own, so tests never see each other's retained messages."""
    return f"qx-{request.node.name[5:25].replace('_', '-')}"


def test_broker_outage_loses_nothing_and_duplicates_nothing(
    durable_broker: MosquittoBroker,
    car_clip: Path,
    tmp_path: Path,
    node: str,
) -> None:
    cloud = Cloud(durable_broker, node, persistent=True, client_id=f"cloud-{node}")
    agent = AgentProcess(
        tmp_path, node, durable_broker.port, config=motion_config(node, car_clip, cameras=3)
    ).start()
    try:
        cloud.wait_events(4, 60)
        durable_broker.stop()  # the rural link drops
        agent_depth_before = agent.outbox_depth()
        wait_until(
            lambda: agent.outbox_depth() > agent_depth_before + 3,
            60,
            "events waiting in the outbox while the broker is away",
        )
        durable_broker.start()  # ... and comes back

        def drained() -> bool:
            cloud.pump()
            return agent.outbox_depth() == 0

        wait_until(drained, 60, "the outbox drained: every event receipted")
        assert agent.stop() == 0
    finally:
        agent.kill()
    generated = agent.events_generated()
    cloud.wait_events(generated, 30)
    assert_complete(cloud, generated)
    cloud.close()


def test_kill_9_mid_stream_loses_nothing_acknowledged(
    broker: MosquittoBroker,
    car_clip: Path,
    tmp_path: Path,
    node: str,
) -> None:
    cloud = Cloud(broker, node)
    config = motion_config(node, car_clip, cameras=3)
    agent = AgentProcess(tmp_path, node, broker.port, config=config).start()
    try:
        cloud.wait_events(4, 60)
        agent.kill()  # mid-publish: a power cut
        agent.start()  # same data directory: the outbox and its seq survive
        cloud.wait_events(len(cloud.events) + 4, 60)
        assert agent.stop() == 0
    finally:
        agent.kill()
    generated = agent.events_generated()
    assert agent.outbox_unsent() == 0
    cloud.wait_events(generated, 30)
    assert_complete(cloud, generated)
    # Restarted agents announce themselves with a new boot id, so restarts are visible.
    states = [decode(NodeState, m.payload) for m in cloud.other if m.topic == state_topic(node)]
    assert len({s.boot_id for s in states if s.status is NodeStatus.ONLINE}) == 2
    cloud.close()


def test_last_will_and_clean_shutdown_states(
    broker: MosquittoBroker,
    car_clip: Path,
    tmp_path: Path,
    node: str,
) -> None:
    cloud = Cloud(broker, node)
    agent = AgentProcess(tmp_path, node, broker.port, config=motion_config(node, car_clip)).start()
    try:
        online = decode(NodeState, cloud.expect_on(state_topic(node)).payload)
        assert online.status is NodeStatus.ONLINE
        agent.kill()
        will = decode(NodeState, cloud.expect_on(state_topic(node), timeout_s=10).payload)
        assert (will.status, will.reason) == (NodeStatus.OFFLINE, StateReason.CONNECTION_LOST)
        agent.start()
        assert (
            decode(NodeState, cloud.expect_on(state_topic(node)).payload).status
            is NodeStatus.ONLINE
        )
        assert agent.stop() == 0
        clean = decode(NodeState, cloud.expect_on(state_topic(node)).payload)
        assert (clean.status, clean.reason) == (NodeStatus.OFFLINE, StateReason.CLEAN_SHUTDOWN)
    finally:
        agent.kill()
    cloud.close()


def test_desired_config_applied_then_a_bad_one_rejected_and_the_node_keeps_running(
    broker: MosquittoBroker,
    car_clip: Path,
    tmp_path: Path,
    node: str,
) -> None:
    cloud = Cloud(broker, node)
    agent = AgentProcess(tmp_path, node, broker.port, config=motion_config(node, car_clip)).start()
    try:
        cloud.expect_on(state_topic(node))
        good = motion_config(node, car_clip, version=2, cameras=2)
        cloud.probe.publish(config_desired_topic(node), orjson.dumps(good), retain=True)
        report = decode(ConfigReport, cloud.expect_on(config_reported_topic(node)).payload)
        assert (report.version, report.status) == (2, ConfigStatus.APPLIED)

        bad = motion_config(node, car_clip, version=3)
        bad["model"] = {"backend": "onnx", "profile": "no_such_model"}
        cloud.probe.publish(config_desired_topic(node), orjson.dumps(bad), retain=True)
        report = decode(ConfigReport, cloud.expect_on(config_reported_topic(node)).payload)
        assert (report.version, report.status) == (3, ConfigStatus.REJECTED)
        assert report.running_version == 2
        assert report.errors[0].field == "model"
        assert "no_such_model" in report.errors[0].message

        broken = motion_config(node, car_clip, version=4)
        broken["cameras"][0]["rules"][0]["zone"] = [[0, 0], [1, 1], [1, 0], [0, 1]]
        cloud.probe.publish(config_desired_topic(node), orjson.dumps(broken), retain=True)
        report = decode(ConfigReport, cloud.expect_on(config_reported_topic(node)).payload)
        assert report.status is ConfigStatus.REJECTED
        assert report.errors[0].field == "cameras.0.rules.0.motion.zone"

        # Still running the last good config: both cameras of version 2 report health.
        def two_cameras_connected() -> bool:
            health = decode(NodeHealth, cloud.expect_on(health_topic(node)).payload)
            return health.config_version == 2 and [c.status for c in health.cameras] == [
                StreamStatus.CONNECTED,
                StreamStatus.CONNECTED,
            ]

        wait_until(two_cameras_connected, 30, "health from the two cameras of version 2")
        assert agent.stop() == 0
        # The last good config is on disk: a restart runs version 2 even before the
        # retained desired config arrives again.
        kept = orjson.loads((agent.data_dir / "config.json").read_bytes())
        assert kept["version"] == 2
    finally:
        agent.kill()
        cloud.probe.publish(config_desired_topic(node), b"", retain=True)
    cloud.close()


def test_commands_are_answered_with_their_request_id(
    broker: MosquittoBroker,
    car_clip: Path,
    tmp_path: Path,
    node: str,
) -> None:
    cloud = Cloud(broker, node)
    agent = AgentProcess(tmp_path, node, broker.port, config=motion_config(node, car_clip)).start()

    def ask(command: str, **args: object) -> CommandResponse:
        request = CommandRequest(
            request_id=new_uuid7(), node_id=node, command=command, args=args, issued_at=utc_now()
        )  # type: ignore[arg-type]
        cloud.probe.publish(command_topic(node, request.request_id), encode(request))
        raw = cloud.expect_on(response_topic(node, request.request_id)).payload
        response = decode(CommandResponse, raw)
        assert response.request_id == request.request_id
        return response

    try:
        health = decode(NodeHealth, cloud.expect_on(health_topic(node), timeout_s=20).payload)
        assert health.cameras[0].status is StreamStatus.CONNECTED
        snapshot = ask("snapshot", camera_id="cam01")
        assert snapshot.status is ReplyStatus.OK
        assert snapshot.data is not None
        jpeg = cloud.expect_on(str(snapshot.data["snapshot_topic"])).payload
        assert jpeg[:3] == b"\xff\xd8\xff"
        assert len(jpeg) == snapshot.data["size_bytes"]

        unknown = ask("self_destruct")
        assert unknown.status is ReplyStatus.ERROR
        assert "unknown command 'self_destruct'" in (unknown.error or "")

        missing = ask("snapshot", camera_id="cam99")
        assert missing.status is ReplyStatus.ERROR
        assert "cam99" in (missing.error or "")

        no_model = ask("recheck_zone", camera_id="cam01", rule_id="lane_motion")
        assert no_model.status is ReplyStatus.ERROR  # a motion-only box has no detector

        identify = ask("identify")
        assert identify.status is ReplyStatus.OK
        assert identify.data is not None
        assert identify.data["node_id"] == node

        with urllib.request.urlopen(
            f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=10
        ) as response:
            metrics = response.read().decode()
        assert 'gridwatch_edge_camera_up{camera_id="cam01"} 1.0' in metrics
        assert "gridwatch_edge_outbox_depth" in metrics
        assert agent.stop() == 0
    finally:
        agent.kill()
    cloud.close()


def test_refused_credentials_are_reported_once_and_retried_slowly(
    broker_factory: BrokerFactory,
    car_clip: Path,
    tmp_path: Path,
) -> None:
    secured = broker_factory(BrokerOptions(users={"qx-locked": "right-password"}))
    agent = AgentProcess(
        tmp_path,
        "qx-locked",
        secured.port,
        config=motion_config("qx-locked", car_clip),
        EDGE_PASSWORD="wrong-password",
    ).start()
    try:
        wait_until(
            lambda: "broker refused the connection" in agent.log(),
            20,
            "the refusal in the agent's log",
        )
        # Mosquitto 2.0 answers a wrong password with "Not authorized" on MQTT 5.
        assert "reason=Not authorized; retrying slowly" in agent.log()
        attempts = secured.log().count("New connection from")
        # A second attempt within 5 s would be hammering the broker.
        with pytest.raises(TimeoutError):
            wait_until(
                lambda: secured.log().count("New connection from") > attempts,
                5,
                "a second connection attempt",
            )
        assert agent.log().count("broker refused the connection") == 1
        assert agent.stop() == 0
    finally:
        agent.kill()


def test_agent_connects_over_tls_and_verifies_the_broker(
    broker_factory: BrokerFactory,
    car_clip: Path,
    tmp_path: Path,
) -> None:
    from tests.support.tls import TestCA

    tls_broker = broker_factory(BrokerOptions(tls=True))
    assert tls_broker.ca is not None
    assert tls_broker.tls_port is not None
    node = "qx-over-tls"
    cloud = Cloud(tls_broker, node)
    agent = AgentProcess(
        tmp_path / "good",
        node,
        tls_broker.port,
        config=motion_config(node, car_clip),
        EDGE_BROKER_URL=f"mqtts://localhost:{tls_broker.tls_port}",
        EDGE_CA_FILE=str(tls_broker.ca.pair.cert),
    ).start()
    try:
        state = decode(NodeState, cloud.expect_on(state_topic(node), timeout_s=20).payload)
        assert state.status is NodeStatus.ONLINE
        assert agent.stop() == 0
    finally:
        agent.kill()
    # A broker whose certificate another CA signed is refused, not trusted.
    (tmp_path / "ca").mkdir()
    stranger = TestCA(tmp_path / "ca", name="some other CA")
    impostor = AgentProcess(
        tmp_path / "bad",
        "qx-tls-refused",
        tls_broker.port,
        config=motion_config("qx-tls-refused", car_clip),
        EDGE_BROKER_URL=f"mqtts://localhost:{tls_broker.tls_port}",
        EDGE_CA_FILE=str(stranger.pair.cert),
    ).start()
    try:
        wait_until(
            lambda: "certificate is not trusted" in impostor.log(),
            20,
            "the certificate refusal in the log",
        )
        assert "connected to the broker" not in impostor.log()
        assert impostor.stop() == 0
    finally:
        impostor.kill()
    cloud.close()
