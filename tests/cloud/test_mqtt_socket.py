"""The cloud's read-ahead socket under paho, on a real socket pair: what paho asks for in
small pieces comes from one read, in order, and nothing is held back or invented."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from cloud.mqtt import BufferedSocket


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
