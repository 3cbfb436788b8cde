"""The cloud's read-ahead socket under paho, on a real socket pair: what paho asks for in
small pieces comes from one read, in order, and nothing is held back or invented."""

from __future__ import annotations

import fcntl
import socket
import sys
import termios
import threading
from collections.abc import Iterator

import pytest

from cloud.mqtt import BufferedSocket, mqtt_client
from cloud.settings import CloudSettings
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import wait_until


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)  # as paho sets it after connecting
    yield BufferedSocket(ours), peer
    ours.close()
    peer.close()


def test_packets_read_piecewise_come_from_one_read_in_order(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    # Three PUBLISH packets as paho reads them: type byte, length byte, then the rest.
    packets = [bytes([0x32, len(body)]) + body for body in (b"a" * 40, b"b" * 100, b"c" * 7)]
    peer.sendall(b"".join(packets))
    assert buffered.pending() == 0  # nothing read yet: paho waits on select

    received = []
    for packet in packets:
        kind, length = buffered.recv(1), buffered.recv(1)
        received.append(kind + length + buffered.recv(length[0]))
        if packet is packets[0]:
            # The first small read took everything that had arrived.
            assert buffered.pending() == sum(map(len, packets)) - len(packet)
    assert received == packets
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):
        buffered.recv(1)  # nothing more: the socket's own answer, not an empty read


def test_a_packet_split_across_reads_and_a_closed_peer(
    pair: tuple[BufferedSocket, socket.socket],
) -> None:
    buffered, peer = pair
    peer.sendall(b"\x32\x0a01234")
    assert buffered.recv(1) == b"\x32"
    assert buffered.recv(1) == b"\x0a"
    assert buffered.recv(10) == b"01234"  # a short read, as a socket gives one
    peer.sendall(b"56789")
    assert buffered.recv(5) == b"56789"
    peer.close()
    assert buffered.recv(1) == b""  # end of stream reaches paho as it would unbuffered


def test_one_read_turn_delivers_every_whole_packet_that_arrived(broker: MosquittoBroker) -> None:
    """paho reads one packet per turn of its loop (a select call each); the cloud's client
    reads on while whole packets wait in its buffer."""
    settings = CloudSettings(broker_url=f"mqtt://127.0.0.1:{broker.port}")
    received: list[bytes] = []
    subscribed = threading.Event()
    subscriber = mqtt_client(settings, "read-burst")
    subscriber.on_message = lambda client, userdata, message: received.append(message.payload)
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe("burst/t", qos=1)
    wait_until(lambda: subscriber.loop(0.05) == 0 and subscribed.is_set(), 10, "subscribed")

    publisher = mqtt_client(settings, "read-burst-pub")
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    payloads = [f"message {i}".encode() * 20 for i in range(50)]
    for payload in payloads:
        publisher.publish("burst/t", payload, qos=1).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()

    # A QoS 1 PUBLISH of "burst/t" with no properties: 15 bytes besides its payload.
    expected = sum(15 + len(p) for p in payloads)
    sock = subscriber.socket()
    assert sock is not None
    wait_until(lambda: _unread(sock.fileno()) >= expected, 10, "all 50 messages to arrive")
    assert _unread(sock.fileno()) == expected
    subscriber.loop_read()  # one turn
    assert received == payloads
    subscriber.disconnect()


def _unread(fd: int) -> int:
    """Bytes the kernel holds for the socket, not yet read."""
    count = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return int.from_bytes(count, sys.byteorder)
