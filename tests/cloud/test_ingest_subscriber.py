"""Ingest's MQTT 5 subscriber against a real Mosquitto: packets whole however the bytes
arrive, nothing acknowledged until asked, what was not acknowledged delivered again on the
persistent session, acknowledgements never sent on a connection they do not belong to,
keep-alive while idle or paused, at the broker's pace, and a dead link noticed even then."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import mqtt5
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.ingest.subscriber import ConnectionLost, FrameReader, Received, Subscriber
from cloud.settings import CloudSettings
from tests.conftest import REPO, BrokerFactory
from tests.support.mosquitto import BrokerOptions, MosquittoBroker
from tests.support.mqtt import MqttProbe
from tests.support.ports import free_port, wait_until

TOPIC = "gw/v1/nodes/qx-sub/events"


def stream(count: int) -> tuple[bytes, list[mqtt5.Packet]]:
    packets: list[mqtt5.Packet] = []
    for i in range(count):
        packets.append(
            mqtt5.PublishPacket(
                TOPIC, b"x" * (i * 37 % 300), qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=i + 1
            )
        )
        if i % 5 == 0:
            packets.append(mqtt5.PingRespPacket())
    return b"".join(p.write() for p in packets), packets


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40))
def test_packets_come_out_whole_and_in_order_however_the_bytes_are_cut(cuts: list[int]) -> None:
    data, packets = stream(25)
    reader = FrameReader()
    out: list[mqtt5.Packet] = []
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        out += reader.feed(data[start:cut])
        start = cut
    assert [p.write() for p in out] == [p.write() for p in packets]


def test_a_packet_fed_a_byte_at_a_time_and_a_malformed_one() -> None:
    packet = mqtt5.PublishPacket(TOPIC, b"y" * 200, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=7)
    data = packet.write()
    reader = FrameReader()
    out: list[mqtt5.Packet] = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
        assert len(out) == (1 if i == len(data) - 1 else 0)
    assert isinstance(out[0], mqtt5.PublishPacket)
    assert out[0].payload == b"y" * 200

    # A remaining length that does not fit its contents, then one longer than four bytes.
    with pytest.raises(ConnectionLost, match="malformed packet"):
        FrameReader().feed(bytes([0x32, 3, 0, 9, 1]))
    with pytest.raises(ConnectionLost, match="over 4 bytes"):
        FrameReader().feed(bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Received] = []

    def __call__(self, message: Received) -> None:
        self.messages.append(message)

    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]


@pytest.fixture
def durable_broker(broker_factory: BrokerFactory) -> MosquittoBroker:
    return broker_factory(BrokerOptions(persistence=True))


def subscriber(port: int, inbox: Inbox, keepalive_s: int = 30, **account: str) -> Subscriber:
    settings = CloudSettings(broker_url=f"mqtt://127.0.0.1:{port}", **account)
    return Subscriber(
        settings,
        "ingest-sub-test",
        [f"$share/ingest/{TOPIC}"],
        on_message=inbox,
        receive_max=100,
        session_expiry_s=600,
        keepalive_s=keepalive_s,
    )


@pytest.fixture
def publisher(durable_broker: MosquittoBroker) -> Iterator[MqttProbe]:
    probe = MqttProbe(durable_broker.port).connect()
    yield probe
    probe.close()


def subscribed(sub: Subscriber) -> Subscriber:
    sub.start()
    wait_until(sub.connected.is_set, 10, "the subscriber connected")
    return sub


def publish(publisher: MqttProbe, payloads: list[bytes]) -> None:
    for payload in payloads:
        publisher.publish(TOPIC, payload, qos=1)


def test_what_is_not_acknowledged_comes_again_on_the_session_and_what_is_does_not(
    durable_broker: MosquittoBroker, publisher: MqttProbe
) -> None:
    first = Inbox()
    sub = subscribed(subscriber(durable_broker.port, first))
    # The SUBACK may come after the connection is up: wait until a message gets through.
    publish(publisher, [b"probe"])
    wait_until(lambda: first.payloads() == [b"probe"], 10, "the subscription to work")
    payloads = [f"event {i}".encode() for i in range(40)]
    publish(publisher, payloads)
    wait_until(lambda: len(first.messages) == 41, 10, "40 messages")
    assert first.payloads() == [b"probe", *payloads]
    assert sub.ack(first.messages[:21]) == 21  # the probe and events 0-19 are stored
    sub.stop()

    again = Inbox()
    sub = subscribed(subscriber(durable_broker.port, again))
    wait_until(lambda: len(again.messages) >= 20, 10, "the unacknowledged 20 again")
    assert again.payloads() == payloads[20:]
    assert sub.ack(again.messages) == 20
    sub.stop()

    third = Inbox()
    sub = subscribed(subscriber(durable_broker.port, third))
    publish(publisher, [b"after"])
    wait_until(lambda: third.payloads() == [b"after"], 10, "only the new message")
    sub.ack(third.messages)
    sub.stop()


def test_an_ack_is_never_sent_on_a_connection_its_message_did_not_come_on(
    durable_broker: MosquittoBroker, publisher: MqttProbe
) -> None:
    inbox = Inbox()
    sub = subscribed(subscriber(durable_broker.port, inbox))
    publish(publisher, [b"before"])
    wait_until(lambda: inbox.payloads() == [b"before"], 10, "the first message")
    old = inbox.messages[0]
    durable_broker.restart()  # the connection ends; the session stays (persistence)
    wait_until(lambda: sub.connected.is_set() and len(inbox.messages) == 2, 20, "the redelivery")
    redelivered = inbox.messages[1]
    assert redelivered.payload == b"before"
    assert redelivered.connection == old.connection + 1
    # The packet id of the first copy may name another message on this connection.
    assert sub.ack([old]) == 0
    assert sub.ack([redelivered]) == 1
    sub.stop()


def test_keep_alive_while_idle_and_while_paused(
    durable_broker: MosquittoBroker, publisher: MqttProbe
) -> None:
    inbox = Inbox()
    sub = subscribed(subscriber(durable_broker.port, inbox, keepalive_s=1))
    publish(publisher, [b"probe"])
    wait_until(lambda: len(inbox.messages) == 1, 10, "the subscription to work")
    sub.ack(inbox.messages)
    connection = inbox.messages[0].connection
    answered = sub.pings_answered
    wait_until(lambda: sub.pings_answered >= answered + 2, 10, "pings answered while idle")
    sub.pause()
    sent = sub.pings_sent
    # Two pings later the I/O thread has surely seen the pause (a read under way when it
    # came may still deliver what it holds).
    wait_until(lambda: sub.pings_sent >= sent + 2, 10, "the pause taking effect")
    publish(publisher, [b"held"])

    # Pings go on while nothing is read: four at a 1 s keep-alive span 1.5 s and more,
    # after which the broker would have closed a silent connection.
    wait_until(lambda: sub.pings_sent >= sent + 4, 10, "pings sent while paused")
    assert inbox.payloads() == [b"probe"]
    sub.resume()
    wait_until(lambda: len(inbox.messages) == 2, 10, "the held message after resume")
    assert inbox.messages[1].payload == b"held"
    assert inbox.messages[1].connection == connection  # one connection throughout
    # The answers to the pings sent while paused were waiting behind the message.
    wait_until(lambda: sub.pings_answered >= answered + 6, 10, "the pings' answers")

    sub.ack(inbox.messages[1:])
    sub.stop()


def test_a_refused_account_is_said_once_and_never_connects(
    broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_factory(BrokerOptions(users={"ingest": "right-password"}))
    sub = subscriber(
        broker.port, Inbox(), broker_username="ingest", broker_password="wrong-password"
    )
    caplog.set_level("WARNING", logger="cloud.ingest.subscriber")

    def refusal() -> str:
        lines = [r.getMessage() for r in caplog.records]
        return next((line for line in lines if "refused the connection" in line), "")

    sub.start()
    wait_until(lambda: refusal() != "", 20, "the refusal in the log")
    assert "NOT_AUTHORIZED" in refusal() or "BAD_USER_NAME_OR_PASSWORD" in refusal()
    assert "wrong-password" not in caplog.text  # the secret is never logged
    assert not sub.connected.is_set()
    sub.stop()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_stop_while_the_broker_is_away_ends_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    """Promptly (the wait between attempts is cut short) and without a traceback."""
    sub = subscriber(free_port(), Inbox())  # nothing listens on that port

    caplog.set_level("WARNING", logger="cloud.ingest.subscriber")
    sub.start()
    wait_until(lambda: "cannot reach the broker" in caplog.text, 10, "the first failed attempt")
    assert sub.running
    sub.stop()
    assert not sub.running


def test_the_brokers_keep_alive_is_honoured(broker_factory: BrokerFactory) -> None:
    """A broker allowing at most 10 s (Mosquitto's least) names it in CONNACK; keeping our
    own 30 s, the subscriber would be silent 15 s, and closed at 15 s."""
    broker = broker_factory(BrokerOptions(extra=["max_keepalive 10"]))
    sub = subscribed(subscriber(broker.port, Inbox(), keepalive_s=30))
    answered = sub.pings_answered
    wait_until(lambda: sub.pings_answered >= answered + 3, 30, "three pings answered")
    # One connection throughout: the broker never closed it for silence.
    assert broker.log().count("as ingest-sub-test") == 1, broker.log()
    assert sub.keepalive_in_use_s == 10
    sub.stop()


def test_a_dead_link_is_noticed_while_paused(tmp_path: Path) -> None:
    """Paused, the subscriber does not read, so a ping's answer is never seen; a cut link
    must still end the connection (the kernel's TCP_USER_TIMEOUT on our pings). Run in a
    network namespace of its own, whose loopback the helper takes down."""
    done = subprocess.run(
        ["unshare", "-rn", sys.executable, "-m", "tests.support.dead_link", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("noticed:"), done.stdout + done.stderr


def test_a_message_in_the_same_read_as_the_suback_is_delivered() -> None:
    """A broker may send a message right behind its SUBACK, in one TCP segment; it must
    not be lost while the subscriber waits for the SUBACK. Mosquitto cannot be made to do
    so on cue, so a scripted broker on loopback sends exactly those bytes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    done = threading.Event()

    def next_packet(conn: socket.socket, reader: FrameReader) -> mqtt5.Packet:
        packets: list[mqtt5.Packet] = []
        while not packets:
            packets = reader.feed(conn.recv(65536))
        return packets[0]

    def scripted_broker() -> None:
        conn, _ = server.accept()
        with conn:
            reader = FrameReader()
            assert isinstance(next_packet(conn, reader), mqtt5.ConnectPacket)
            conn.sendall(mqtt5.ConnAckPacket().write())
            subscribe = next_packet(conn, reader)
            assert isinstance(subscribe, mqtt5.SubscribePacket)
            granted = [mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]
            conn.sendall(
                mqtt5.SubAckPacket(subscribe.packet_id, granted).write()
                + mqtt5.PublishPacket(
                    TOPIC, b"right behind", qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1
                ).write()
            )
            done.wait(10)

    thread = threading.Thread(target=scripted_broker, daemon=True)
    thread.start()
    inbox = Inbox()
    sub = subscriber(port, inbox)
    sub.start()
    try:
        wait_until(lambda: inbox.payloads() == [b"right behind"], 10, "the message")
    finally:
        done.set()
        sub.stop()
        server.close()


def test_what_rides_in_a_publishs_properties_is_counted(
    durable_broker: MosquittoBroker, publisher: MqttProbe
) -> None:
    """User properties, correlation data, a response topic and a content type cost the
    broker and ingest as much as a payload: a box's share counts them (60 KB of each rode
    free on tiny events)."""
    inbox = Inbox()
    sub = subscribed(subscriber(durable_broker.port, inbox))
    try:
        publish(publisher, [b"probe"])
        wait_until(lambda: inbox.payloads() == [b"probe"], 10, "the subscription to work")
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("k", "v" * 60_000)]
        props.CorrelationData = b"c" * 60_000
        props.ResponseTopic = "r" * 60_000
        props.ContentType = "t" * 1_000
        publisher.client.publish(TOPIC, b"{}", qos=1, properties=props).wait_for_publish(10)
        wait_until(lambda: len(inbox.messages) == 2, 10, "the padded message")
        assert inbox.messages[1].extra_bytes >= 181_000
    finally:
        sub.stop()
