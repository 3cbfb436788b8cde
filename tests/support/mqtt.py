"""A real paho client for tests: subscribe, then `expect` messages with a timeout."""

from __future__ import annotations

import queue
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttProbe:
    """An MQTT 5 client connected to a broker on loopback; records what it receives."""

    def __init__(
        self,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        ca_cert: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        persistent: bool = False,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_cert is not None:
            self.client.tls_set(
                ca_certs=ca_cert, certfile=certfile, keyfile=keyfile, cert_reqs=ssl.CERT_REQUIRED
            )
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos=qos, retain=retain)
        self.persistent = persistent  # keep the session (and queued QoS 1) across restarts
        self.messages: queue.Queue[Received] = queue.Queue()
        self._connected = threading.Event()
        self.connect_reason: ReasonCode | None = None
        self.disconnects: list[ReasonCode] = []  # why the broker ended a connection
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._pubacks: dict[int, ReasonCode] = {}
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.port = port

    # paho callbacks: record and signal, nothing else
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.connect_reason = reason
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.disconnects.append(reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        with self._acked:
            self._subacks[mid] = reasons
            self._acked.notify_all()

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        with self._acked:
            self._pubacks[mid] = reason
            self._acked.notify_all()

    def connect(self, timeout_s: float = 5.0) -> MqttProbe:
        props = None
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(
            "127.0.0.1", self.port, keepalive=30, clean_start=not self.persistent, properties=props
        )
        self.client.loop_start()
        if not self._connected.wait(timeout_s):
            raise TimeoutError(f"no CONNACK from 127.0.0.1:{self.port} in {timeout_s} s")
        if self.connect_reason is not None and self.connect_reason.is_failure:
            raise ConnectionRefusedError(f"broker refused the connection: {self.connect_reason}")
        return self

    def _wait_ack(self, store: dict[int, Any], mid: int, timeout_s: float, what: str) -> Any:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in store, timeout_s):
                raise TimeoutError(f"no {what} for mid {mid} in {timeout_s} s")
            return store.pop(mid)

    def subscribe(self, topic_filter: str, qos: int = 1, timeout_s: float = 5.0) -> ReasonCode:
        result, mid = self.client.subscribe(topic_filter, qos=qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        reasons: list[ReasonCode] = self._wait_ack(self._subacks, mid, timeout_s, "SUBACK")
        return reasons[0]

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout_s: float = 5.0
    ) -> ReasonCode | None:
        """Publish and, for QoS 1, wait for the PUBACK and return its reason code."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return None
        reason: ReasonCode = self._wait_ack(self._pubacks, info.mid, timeout_s, "PUBACK")
        return reason

    def expect(self, topic: str | None = None, timeout_s: float = 5.0) -> Received:
        """The next message (on `topic`, when given; others received meanwhile are kept)."""
        skipped: list[Received] = []
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
                if topic is None or message.topic == topic:
                    return message
                skipped.append(message)
        except queue.Empty:
            raise TimeoutError(f"no message on {topic or 'any topic'} in {timeout_s} s") from None
        finally:
            for message in skipped:
                self.messages.put(message)

    def drain(self) -> list[Received]:
        """Everything received and not yet expected."""
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
