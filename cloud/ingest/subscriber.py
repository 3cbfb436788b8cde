"""Ingest's MQTT 5 subscriber: a persistent session on the broker, QoS 1 messages in,
acknowledgements out when the caller says, and nothing else.

With paho, ingest spent 107–110 µs of CPU per event on a 2-core box, and about half of it in
paho's receive path (a Properties object rebuilt for every PUBLISH, a message object, a
select and three recv calls per packet, a wake-up and a send per acknowledgement): more
than validating and storing the event. The packets here are read and written by `mqtt5`,
the sans-I/O MQTT 5 codec in Rust (about 1 µs a PUBLISH); this module holds the connection:
TLS, CONNECT with a session that outlives the process, SUBSCRIBE, keep-alive, reconnecting,
and one write of every acknowledgement of a batch. Ingest now spends 18–22 µs an event
draining a backlog, about 6 of them here (a third of its samples, in this thread).

One thread does all socket I/O (an SSL object must not be read and written by two threads
at once); `ack` queues the acknowledgements and `publish` the receipts (cloud.ingest.
receipts, QoS 1 within the broker's Receive Maximum), and both wake it.

A connection counts as up only once the broker granted every subscription: a refused one
(SUBACK 0x80 or above, e.g. an account without the ingest role) is logged, the subscriber
is not ready, and it tries again with growing waits. The keep-alive is the broker's when
its CONNACK names one; a link that died silently is noticed by the kernel even while
reading is paused (see `_connect`)."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import mqtt5
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from cloud.metrics import INGEST_RECEIPTS, INGEST_RETAINED_CLEARED, INGEST_SUBSCRIBED
from cloud.mqtt import FailureLog, broker_address
from cloud.settings import CloudSettings
from protocols.topics import Channel, all_nodes_filter, may_be_retained

logger = logging.getLogger(__name__)

_P = TypeVar("_P", bound=mqtt5.Packet)

CONNECT_TIMEOUT_S = 10.0
READ_SIZE = 256 * 1024
IDLE_AFTER_LOSS_S = 1.0  # a session taken over again and again reconnects once a second
# Receipts waiting for room in the broker's Receive Maximum: beyond this many the oldest
# go (their boxes send those events again, and they are receipted then).
MAX_WAITING_PUBLISHES = 100_000
NO_MATCHING_SUBSCRIBERS = 0x10


# Not frozen: a frozen dataclass's __init__ calls object.__setattr__ for each field, about
# 10k instructions a message here; hashable and comparable all the same.
@dataclass(slots=True, unsafe_hash=True)
class Received:
    """One message as it arrived: `connection` tells which connection its packet id
    belongs to (an acknowledgement on another connection could name another message);
    `duplicate` is the broker's DUP flag: delivered before, and not acknowledged then."""

    packet_id: int
    qos: int
    topic: str
    payload: bytes
    received_at: datetime
    connection: int = 0
    duplicate: bool = False
    # Bytes of MQTT 5 properties that came with it (user properties, correlation data,
    # response topic, content type): nothing here reads them, but they cost the broker
    # and ingest all the same (a box's share counts them).
    extra_bytes: int = 0


def _property_bytes(packet: mqtt5.PublishPacket) -> int:
    if not (
        packet.user_properties
        or packet.correlation_data
        or packet.response_topic
        or packet.content_type
    ):
        return 0  # the common case, in one test
    size = len(packet.correlation_data or b"") + len(packet.response_topic or "")
    size += len(packet.content_type or "")
    if packet.user_properties:
        size += sum(len(k) + len(v) for k, v in packet.user_properties)
    return size


class ConnectionLost(Exception):
    """The connection ended; `reason` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SubscriptionRefused(ConnectionLost):
    """The broker refused a subscription: the connection is dropped and tried again."""


class FrameReader:
    """Bytes from the socket → whole MQTT packets, decoded. A packet split across reads
    waits for its rest; a malformed one ends the connection (the broker then redelivers
    what was not acknowledged)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[mqtt5.Packet]:
        self._buffer += data
        packets: list[mqtt5.Packet] = []
        view = memoryview(self._buffer)
        position, end = 0, len(view)
        try:
            while True:
                size = _packet_size(view, position, end)
                if size is None or position + size > end:
                    break
                try:
                    packet, used = mqtt5.read(view[position : position + size])
                except (ValueError, IndexError) as exc:
                    raise ConnectionLost(f"malformed packet from the broker: {exc}") from exc
                if used != size:
                    raise ConnectionLost("malformed packet from the broker: length mismatch")
                packets.append(packet)
                position += size
        finally:
            view.release()
        del self._buffer[:position]
        return packets


def _packet_size(view: memoryview, position: int, end: int) -> int | None:
    """The whole size of the packet starting at `position` (fixed header included), or
    None while its header is incomplete. The remaining length is a variable byte integer
    of at most four bytes."""
    length, multiplier = 0, 1
    for index in range(position + 1, min(position + 5, end)):
        byte = view[index]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return index + 1 - position + length
        multiplier *= 128
    if end - position >= 5:
        raise ConnectionLost("malformed packet from the broker: remaining length over 4 bytes")
    return None


# A connection as CONNACK left it: the socket, its reader, the packets that came with CONNACK.
Connected = tuple[socket.socket, FrameReader, list[mqtt5.Packet]]


class Subscriber:
    """Subscribe `filters` at QoS 1 on a persistent session named `client_id`; each message
    goes to `on_message` in arrival order, from the I/O thread. Nothing is acknowledged
    until `ack` names it: the broker keeps (and redelivers) everything else."""

    def __init__(
        self,
        settings: CloudSettings,
        client_id: str,
        filters: list[str],
        *,
        on_message: Callable[[Received], None],
        receive_max: int,
        session_expiry_s: int,
        keepalive_s: int = 30,
        leaving: bool = False,
    ) -> None:
        self.settings = settings
        # Leaving the group for good: unsubscribe on connect, take what the session still
        # holds, and end the session with the last DISCONNECT (see `gridwatch cloud ingest
        # --retire`).
        self.leaving = leaving
        self.last_message_at = time.monotonic()
        self._retaining: set[str] = set()
        self.client_id = client_id
        self.filters = filters
        self.on_message = on_message
        self.receive_max = receive_max
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.host, self.port, tls = broker_address(settings)
        self._tls = (
            ssl.create_default_context(
                cafile=str(settings.broker_ca_file) if settings.broker_ca_file else None
            )
            if tls
            else None
        )
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # every filter granted on this connection
        self.refusal: str | None = None  # why the broker last refused a subscription
        self.keepalive_in_use_s = float(keepalive_s)  # the broker's, when it names one
        self.pings_sent = 0
        self.pings_answered = 0
        self._stopping = threading.Event()
        self._reading = threading.Event()  # cleared by pause(): the broker keeps the rest
        self._reading.set()
        self._lock = threading.Lock()  # guards the connection number and the outgoing acks
        self._connection = 0
        self._outgoing: list[bytes] = []
        # Our own QoS 1 publishes: waiting, and in flight by packet id (the broker's
        # Receive Maximum bounds those; ids 1 is the SUBSCRIBE's).
        self._to_publish: deque[tuple[str, bytes]] = deque(maxlen=MAX_WAITING_PUBLISHES)
        self._publishing: dict[int, str] = {}
        self._next_packet_id = 2
        self._send_max = 65_535
        self._refusals: set[str] = set()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._failures = FailureLog(logger, f"broker connection failed client_id={client_id}")
        self._thread: threading.Thread | None = None

    # ---- what the caller uses -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Disconnect cleanly (the session and its unacknowledged messages stay on the
        broker) and wait for the I/O thread."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                return  # still connecting (bounded by its timeout): it ends on its own
        self._wake_read.close()
        self._wake_write.close()

    @property
    def ready(self) -> bool:
        """Connected, with every subscription granted."""
        return self.subscribed.is_set()

    @property
    def running(self) -> bool:
        """The I/O thread runs (connected or trying to)."""
        return self._thread is not None and self._thread.is_alive()

    def ack(self, messages: Iterable[Received]) -> int:
        """Acknowledge `messages` (QoS 0 ones need none) in one write; returns how many.
        A message from an earlier connection is not acknowledged here: the broker delivers
        it again on this one, where its copy is stored once and acknowledged."""
        with self._lock:
            current = self._connection
            packets = [
                mqtt5.PubAckPacket(m.packet_id).write()
                for m in messages
                if m.qos == 1 and m.connection == current
            ]
            if packets:
                self._outgoing.append(b"".join(packets))
        if packets:
            self._wake()
        return len(packets)

    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        """Send (topic, payload) messages at QoS 1, in order, as the broker has room; a
        refusal is logged and counted (`gridwatch_ingest_receipts_total`), not retried."""
        if not messages:
            return
        with self._lock:
            self._to_publish.extend(messages)
        self._wake()

    def _publishes(self) -> list[bytes]:
        """PUBLISH packets for what waits, within the broker's Receive Maximum. Under the
        lock."""
        packets = []
        while self._to_publish and len(self._publishing) < self._send_max:
            topic, payload = self._to_publish.popleft()
            packet_id = self._free_packet_id()
            self._publishing[packet_id] = topic
            packets.append(
                mqtt5.PublishPacket(
                    topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=packet_id
                ).write()
            )
        return packets

    def _free_packet_id(self) -> int:
        """The next packet id not in flight (2..65535; `_send_max` keeps some free)."""
        while True:
            packet_id = self._next_packet_id
            self._next_packet_id = 2 if packet_id >= 65_535 else packet_id + 1
            if packet_id not in self._publishing:
                return packet_id

    def _published(self, packet: mqtt5.PubAckPacket) -> None:
        """The broker's answer to one of our publishes."""
        with self._lock:
            topic = self._publishing.pop(packet.packet_id, None)
        if topic is None:
            return
        code = int(packet.reason_code.value)
        if code < 0x80:
            INGEST_RECEIPTS.labels("unheard" if code == NO_MATCHING_SUBSCRIBERS else "sent").inc()
            if self._to_publish:
                self._wake()
            return
        INGEST_RECEIPTS.labels("refused").inc()
        reason = packet.reason_code.name
        if reason not in self._refusals:  # once per reason: one per box would flood the log
            self._refusals.add(reason)
            logger.error(
                "the broker refused ingest's receipt on %s: %s (the account needs write on "
                "%s; boxes send their events again meanwhile)",
                topic,
                reason,
                all_nodes_filter(Channel.RECEIPTS),
            )

    def pause(self) -> None:
        """Stop reading messages (keep-alive goes on): the caller has enough waiting."""
        self._reading.clear()

    def resume(self) -> None:
        if not self._reading.is_set():
            self._reading.set()
            self._wake()

    # ---- the I/O thread -------------------------------------------------------------------

    def _wake(self) -> None:
        # BlockingIOError: woken already (the pipe is full); OSError: closed at stop.
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, reader, early = self._connect_with_retries()
            except (ConnectionLost, OSError):
                return  # stopped while connecting: the last attempt's error is re-raised
            try:
                self._serve(sock, reader, early)
            except (ConnectionLost, OSError) as exc:
                reason = exc.reason if isinstance(exc, ConnectionLost) else str(exc)
                self._failures.log(logging.WARNING, f"connection lost: {reason}")
            except Exception:  # a bug here must not end ingest's only reader silently
                logger.exception("ingest's MQTT connection failed; reconnecting")
            finally:
                self.connected.clear()
                self.subscribed.clear()
                INGEST_SUBSCRIBED.set(0)
                sock.close()
            self._stopping.wait(IDLE_AFTER_LOSS_S)

    def _connect_with_retries(self) -> Connected:
        for attempt in Retrying(
            retry=retry_if_exception_type((OSError, ConnectionLost)),
            wait=wait_exponential_jitter(multiplier=0.5, max=30, jitter=0.5),
            stop=lambda _: self._stopping.is_set(),
            sleep=self._pause,
            before_sleep=self._log_connect_failure,
            reraise=True,
        ):
            with attempt:
                if self._stopping.is_set():
                    raise ConnectionLost("stopped")
                return self._connect()
        raise ConnectionLost("stopped")  # pragma: no cover - Retrying returns or raises

    def _pause(self, seconds: float) -> None:
        """Tenacity's sleep between attempts, cut short by stop()."""
        self._stopping.wait(seconds)

    def _log_connect_failure(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, ConnectionLost):
            self._failures.log(logging.ERROR, error.reason)
        elif isinstance(error, OSError):
            self._failures.unreachable(error, self.host, self.port)

    def _connect(self) -> Connected:
        """TCP (and TLS), CONNECT with the persistent session, CONNACK, SUBSCRIBE. Returns
        the socket, its reader, and the packets that came with CONNACK (a resumed
        session's messages may follow it at once)."""
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            password = self.settings.broker_password
            sock.sendall(
                mqtt5.ConnectPacket(
                    self.client_id,
                    username=self.settings.broker_username,
                    password=password.get_secret_value().encode() if password else None,
                    clean_start=False,
                    keep_alive=self.keepalive_s,
                    session_expiry_interval=self.session_expiry_s,
                    receive_max=self.receive_max,
                ).write()
            )
            reader = FrameReader()
            connack, *early = self._first_packets(sock, reader)
            if not isinstance(connack, mqtt5.ConnAckPacket):
                raise ConnectionLost(f"the broker answered CONNECT with {type(connack).__name__}")
            if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
                raise ConnectionLost(
                    f"the broker refused the connection: {connack.reason_code.name}"
                )
            # MQTT 5: a Server Keep Alive in CONNACK replaces ours (the broker closes a
            # connection silent for 1.5 times it).
            keepalive = connack.server_keep_alive
            self.keepalive_in_use_s = float(keepalive if keepalive else self.keepalive_s)
            # A dead link (a cut cable, a vanished host) acknowledges nothing: the kernel
            # then gives up on our unacknowledged bytes after this long and the next write
            # fails. Pings are sent even while reading is paused (when their answers wait
            # unread behind messages), so a dead link is noticed then too.
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.keepalive_in_use_s * 1500)
            )
            with self._lock:
                self._connection += 1
                self._outgoing.clear()  # acks of the last connection name nothing here
                # Receipts in flight on the last connection are not sent again: their
                # boxes send those events again, and they are receipted then.
                self._publishing.clear()
                self._send_max = min(connack.receive_max or 65_535, 65_000)
            if self.leaving:
                # The broker stops giving this session a share of the stream; what it
                # queued for the session before still comes.
                sock.sendall(mqtt5.UnsubscribePacket(1, list(self.filters)).write())
                early += self._until(sock, reader, mqtt5.UnsubAckPacket)[1]
            else:
                sock.sendall(
                    mqtt5.SubscribePacket(
                        1,
                        [
                            mqtt5.TopicFilter(f, max_qos=mqtt5.QoS.AT_LEAST_ONCE)
                            for f in self.filters
                        ],
                    ).write()
                )
                early += self._until_suback(sock, reader)
        except BaseException:
            sock.close()
            raise
        self._failures.clear()
        self.refusal = None
        logger.info(
            "ingest connected client_id=%s session_present=%s keepalive_s=%g",
            self.client_id,
            connack.session_present,
            self.keepalive_in_use_s,
        )
        logger.info(
            "ingest %s client_id=%s filters=%d",
            "unsubscribed, leaving the group" if self.leaving else "subscribed",
            self.client_id,
            len(self.filters),
        )
        self.connected.set()
        self.subscribed.set()
        INGEST_SUBSCRIBED.set(1)
        return sock, reader, early

    def _until_suback(self, sock: socket.socket, reader: FrameReader) -> list[mqtt5.Packet]:
        """Read until the SUBACK; every other packet read meanwhile (a resumed session's
        messages, before or right after it) is returned in order. A refused filter raises
        SubscriptionRefused, naming every refused one."""
        suback, others = self._until(sock, reader, mqtt5.SubAckPacket)
        refused = [
            f"{topic_filter} ({code.name})"
            for topic_filter, code in zip(self.filters, suback.reason_codes, strict=False)
            if code.value >= 0x80
        ]
        if refused:
            self.refusal = ", ".join(refused)
            raise SubscriptionRefused(f"the broker refused ingest's subscriptions: {self.refusal}")
        return others

    def _until(
        self, sock: socket.socket, reader: FrameReader, kind: type[_P]
    ) -> tuple[_P, list[mqtt5.Packet]]:
        """Read until a packet of `kind`: it, and the others read meanwhile, in order."""
        others: list[mqtt5.Packet] = []
        while True:
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionLost(f"the broker closed the connection before {kind.__name__}")
            packets = reader.feed(data)
            for index, packet in enumerate(packets):
                if isinstance(packet, kind):
                    return packet, others + packets[:index] + packets[index + 1 :]
            others += packets

    def _first_packets(self, sock: socket.socket, reader: FrameReader) -> list[mqtt5.Packet]:
        """CONNACK and whatever came with it."""
        while True:
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionLost("the broker closed the connection before CONNACK")
            packets = reader.feed(data)
            if packets:
                return packets

    def _serve(self, sock: socket.socket, reader: FrameReader, early: list[mqtt5.Packet]) -> None:
        """Read, dispatch, write acknowledgements and pings until the connection ends or
        the subscriber stops."""
        sock.settimeout(CONNECT_TIMEOUT_S)  # a stuck write fails instead of hanging
        connection = self._connection
        for packet in early:
            self._dispatch(packet, connection)
        keepalive = self.keepalive_in_use_s
        last_sent = time.monotonic()
        ping_sent_at: float | None = None
        while not self._stopping.is_set():
            with self._lock:
                outgoing, self._outgoing = self._outgoing, []
                if self._to_publish:
                    outgoing += self._publishes()
            if outgoing:
                sock.sendall(b"".join(outgoing))
                last_sent = time.monotonic()
            now = time.monotonic()
            if ping_sent_at is not None and now - ping_sent_at > keepalive:
                raise ConnectionLost(f"no answer to a ping in {keepalive:.0f} s")
            reading = self._reading.is_set()
            if not reading:
                ping_sent_at = None  # its answer waits unread behind the messages
            if now - last_sent >= keepalive / 2:
                sock.sendall(mqtt5.PingReqPacket().write())
                self.pings_sent += 1
                last_sent = now
                if reading:
                    ping_sent_at = ping_sent_at or now
            waiting = [self._wake_read]
            if reading:
                if isinstance(sock, ssl.SSLSocket) and sock.pending():
                    waiting = []  # bytes already decrypted: no select
                else:
                    waiting.append(sock)
            wake_at = last_sent + keepalive / 2
            if ping_sent_at is not None:
                wake_at = min(wake_at, ping_sent_at + keepalive)
            ready = (
                select.select(waiting, [], [], max(0.0, wake_at - now))[0] if waiting else [sock]
            )
            if self._wake_read in ready:
                self._drain_wake()
            if sock not in ready:
                continue
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionLost("the broker closed the connection")
            for packet in reader.feed(data):
                if self._dispatch(packet, connection):
                    ping_sent_at = None
        self._goodbye(sock)

    def _dispatch(self, packet: mqtt5.Packet, connection: int) -> bool:
        """Handle one packet; True when it answers our ping."""
        if isinstance(packet, mqtt5.PublishPacket):
            self.last_message_at = time.monotonic()
            # The retain flag comes as published (the subscription asks for it).
            if packet.retain:
                if not packet.payload and packet.qos is mqtt5.QoS.AT_MOST_ONCE:
                    return False  # a retained copy being removed: nothing in it to store
                if not may_be_retained(packet.topic):
                    self._clear_retained(packet.topic)
            self.on_message(
                Received(
                    packet.packet_id or 0,
                    packet.qos.value,
                    packet.topic,
                    packet.payload,
                    datetime.now(UTC),
                    connection,
                    packet.duplicate,
                    _property_bytes(packet),
                )
            )
        elif isinstance(packet, mqtt5.PubAckPacket):
            self._published(packet)
        elif isinstance(packet, mqtt5.PingRespPacket):
            self.pings_answered += 1
            return True
        elif isinstance(packet, mqtt5.DisconnectPacket):
            why = f": {packet.reason_str}" if packet.reason_str else ""
            raise ConnectionLost(f"the broker disconnected us: {packet.reason_code.name}{why}")
        else:
            raise ConnectionLost(f"unexpected {type(packet).__name__} from the broker")
        return False

    def _clear_retained(self, topic: str) -> None:
        """Remove a retained copy the protocol has no use for (an empty retained message on
        its topic): a box could otherwise fill the broker's memory with retained
        snapshots. The message itself is stored as any other."""
        with self._lock:
            self._outgoing.append(
                mqtt5.PublishPacket(topic, b"", qos=mqtt5.QoS.AT_MOST_ONCE, retain=True).write()
            )
        INGEST_RETAINED_CLEARED.inc()
        node = topic.split("/", 4)[3] if topic.count("/") >= 4 else topic
        if node not in self._retaining:
            self._retaining.add(node)  # one line per box, however many it sends
            logger.warning("a box publishes retained where nothing is kept: %s", topic)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_read.recv(4096):
                pass

    def _goodbye(self, sock: socket.socket) -> None:
        """Send what is left to acknowledge, then DISCONNECT: normally the session stays;
        when leaving, it ends with this connection (session expiry 0)."""
        with self._lock:
            outgoing, self._outgoing = self._outgoing, []
            outgoing += self._publishes()
        goodbye = (
            mqtt5.DisconnectPacket(session_expiry_interval=0)
            if self.leaving
            else mqtt5.DisconnectPacket()
        )
        with contextlib.suppress(OSError):  # gone already: it keeps the session either way
            sock.sendall(b"".join(outgoing) + goodbye.write())
