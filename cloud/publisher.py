"""The service's own MQTT publisher (QoS 1): desired configs and commands to nodes, alerts on
the alert topics. One client per process, a clean session: what it must not lose is in the
database until the broker acknowledges it, and an acknowledgement counts only when its
reason code says the broker took the message."""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode
from uuid6 import uuid7

from cloud.errors import BrokerRefused, BrokerUnavailable
from cloud.metrics import record_refusal
from cloud.mqtt import broker_address, mqtt_client
from cloud.settings import CloudSettings
from protocols.errors import InvalidTopic
from protocols.topics import NodeTopic, parse_topic

logger = logging.getLogger(__name__)


def publisher_client_id(settings: CloudSettings) -> str:
    """The account's name (the county broker binds each account to that client id, so
    each API instance has its own account); without an account, a random one per process."""
    return settings.broker_username or f"gridwatch-api-{uuid7().hex[-12:]}"


def channel_of(topic: str) -> str:
    """The channel a topic belongs to, for the metric's label."""
    try:
        parsed = parse_topic(topic)
    except InvalidTopic:
        return "other"
    return parsed.channel.value if isinstance(parsed, NodeTopic) else "alerts"


class BrokerPublisher:
    def __init__(self, settings: CloudSettings) -> None:
        self.client = mqtt_client(settings, publisher_client_id(settings))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.host, self.port, _ = broker_address(settings)
        # PUBACK reason codes by mid: paho calls on_publish before it marks the message
        # published, so once wait_for_publish returns, the code is here.
        self._reasons: dict[int, ReasonCode] = {}

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=True)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            logger.warning("broker refused the service's publisher: %s", reason)
            return
        self.connected.set()
        logger.info("publisher connected to %s:%s", self.host, self.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        self.connected.clear()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        self._reasons[mid] = reason

    def publish(
        self, messages: list[tuple[str, bytes]], timeout_s: float = 5.0, *, retain: bool = False
    ) -> None:
        """Publish all and wait for every PUBACK. BrokerUnavailable when one does not come;
        BrokerRefused when the broker answered that it will not take some (reason code 0x80
        or above): those are logged and counted, the others went through. Either way the
        caller keeps its record of what was not taken and tries again later."""
        if not self.connected.wait(timeout_s):
            raise BrokerUnavailable(f"broker {self.host}:{self.port} not reachable")
        sent = []
        for topic, payload in messages:
            info = self.client.publish(topic, payload, qos=1, retain=retain)

            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(f"broker refused a message: {mqtt.error_string(info.rc)}")
            sent.append(info)
        refused: dict[int, str] = {}
        for index, info in enumerate(sent):
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise BrokerUnavailable(f"no acknowledgement from the broker in {timeout_s:g} s")
            code = self._reasons.pop(info.mid, None)
            if code is not None and code.is_failure:
                refused[index] = str(code)
        if refused:
            for index, why in refused.items():
                topic = messages[index][0]
                record_refusal(channel_of(topic), why)
                logger.warning("broker refused a message topic=%s reason=%s", topic, why)
            raise BrokerRefused(
                f"the broker refused {len(refused)} of {len(messages)} messages: "
                + ", ".join(sorted(set(refused.values()))),
                refused,
            )
