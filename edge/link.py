"""The node's MQTT 5 connection (paho-mqtt 2, callback API v2): persistent session, the
retained offline last will, retained online state on every connect, slow retries when the
broker refuses the credentials. Callbacks only record and signal."""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.settings import EdgeSettings
from protocols import NodeState, encode
from protocols.base import utc_now
from protocols.enums import NodeStatus, StateReason
from protocols.topics import state_topic

logger = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
# CONNACK reason codes that mean "your credentials": retrying fast will not help.
_AUTH_FAILURES = {
    "Bad user name or password",
    "Not authorized",
    "Banned",
    "Client identifier not valid",
    "Bad authentication method",
}
RETRY_FAST = (1, 60)  # seconds: reconnect backoff after a lost link
MAX_INFLIGHT = 50  # paho rescans its window on every ack: above ~100 throughput halves


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes


class Link:
    def __init__(
        self,
        settings: EdgeSettings,
        *,
        boot_id: Any,
        on_published: Callable[[int, int], None],
        subscriptions: list[str],
    ) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.boot_id = boot_id
        self.subscriptions = subscriptions
        self.on_published = on_published
        self.incoming: queue.Queue[Incoming] = queue.Queue(maxsize=1000)
        self.connected = threading.Event()
        self.connect_failed = threading.Event()  # paho swallows why: see diagnose()
        self.last_refusal: str | None = None
        self.using_next_password = False
        self.connects = 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.node_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(
            settings.username or self.node_id,
            settings.password.get_secret_value() if settings.password else None,
        )
        if settings.uses_tls:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,  # and paho checks the host name
            )
        will = NodeState(
            node_id=self.node_id,
            status=NodeStatus.OFFLINE,
            reason=StateReason.CONNECTION_LOST,
            sent_at=utc_now(),
            agent_version=AGENT_VERSION,
            boot_id=boot_id,
        )
        client.will_set(state_topic(self.node_id), encode(will), qos=1, retain=True)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.reconnect_delay_set(*RETRY_FAST)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        # Persistent session: the broker keeps our subscriptions (config, commands) and
        # queues QoS 1 messages for us while the link is down.
        self.client.connect_async(
            self.settings.broker_host,
            self.settings.broker_port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Say offline (clean shutdown) while connected, then disconnect."""
        if self.connected.is_set():
            offline = self._state(NodeStatus.OFFLINE, StateReason.CLEAN_SHUTDOWN)
            info = self.client.publish(state_topic(self.node_id), offline, qos=1, retain=True)
            # The link may go away meanwhile: the will says offline anyway.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int | None:
        """Hand a message to paho; its mid, or None when not connected (try later)."""
        if not self.connected.is_set():
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    def _state(self, status: NodeStatus, reason: StateReason) -> bytes:
        return encode(
            NodeState(
                node_id=self.node_id,
                status=status,
                reason=reason,
                sent_at=utc_now(),
                agent_version=AGENT_VERSION,
                boot_id=self.boot_id,
            )
        )

    # ---- paho callbacks (network thread): record and signal only ------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            text = str(reason)
            if text != self.last_refusal:
                level = logging.ERROR if text in _AUTH_FAILURES else logging.WARNING
                logger.log(
                    level,
                    "broker refused the connection node_id=%s reason=%s%s",
                    self.node_id,
                    text,
                    "; retrying slowly" if text in _AUTH_FAILURES else "",
                )
            self.last_refusal = text
            if text in _AUTH_FAILURES and self._take_next_password():
                return  # the next attempt, soon, uses the rotation's next password
            if text in _AUTH_FAILURES:
                client.reconnect_delay_set(
                    self.settings.auth_retry_min_s,
                    max(self.settings.auth_retry_min_s, self.settings.auth_retry_max_s),
                )
            return
        self.last_refusal = None
        self.connects += 1
        client.reconnect_delay_set(*RETRY_FAST)
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # paho leaves Nagle on: small QoS 1 messages would wait up to 40 ms each.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.publish(
            state_topic(self.node_id),
            self._state(NodeStatus.ONLINE, StateReason.CONNECTED),
            qos=1,
            retain=True,
        )
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        logger.info(
            "connected to the broker node_id=%s session_present=%s",
            self.node_id,
            getattr(flags, "session_present", None),
        )
        self.connected.set()

    def _take_next_password(self) -> bool:
        """A credential rotation: the service activated the next password, so the current one
        is refused now. Switch once; the box keeps the next one until its variables change."""
        next_password = self.settings.password_next
        if next_password is None or self.using_next_password:
            return False
        self.using_next_password = True
        self.client.username_pw_set(
            self.settings.username or self.node_id, next_password.get_secret_value()
        )
        logger.warning("broker refused the password; switching to the next one (rotation)")
        return True

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.connect_failed.set()

    def diagnose(self, timeout_s: float = 5.0) -> str:
        """Why the broker cannot be reached, in an operator's terms (paho only retries)."""
        host, port = self.settings.broker_host, self.settings.broker_port
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            return f"cannot reach {host}:{port}: {exc.strerror or exc}"
        with sock:
            if not self.settings.uses_tls:
                return f"{host}:{port} accepts TCP but the MQTT connection failed"
            context = ssl.create_default_context(
                cafile=str(self.settings.ca_file) if self.settings.ca_file else None
            )
            if self.settings.cert_file:
                context.load_cert_chain(
                    str(self.settings.cert_file),
                    str(self.settings.key_file) if self.settings.key_file else None,
                )
            try:
                context.wrap_socket(sock, server_hostname=host).close()
            except ssl.SSLCertVerificationError as exc:
                return (
                    f"TLS: the broker's certificate is not trusted ({exc.verify_message}); "
                    f"check EDGE_CA_FILE and the broker's host name {host!r}"
                )
            except (ssl.SSLError, OSError) as exc:
                return f"TLS handshake with {host}:{port} failed: {exc}"
        return f"{host}:{port} completes TLS but the MQTT connection failed"

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if self.connected.is_set():
            logger.warning("broker link lost node_id=%s reason=%s", self.node_id, reason)
        self.connected.clear()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.on_published(mid, int(reason.value))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.incoming.put_nowait(Incoming(msg.topic, bytes(msg.payload)))
        except queue.Full:
            logger.warning("incoming queue full; dropped a message on %s", msg.topic)
