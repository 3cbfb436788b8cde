"""The service's own MQTT publisher (QoS 1): commands to nodes and alerts on the alert
topics. One client per process, its own id, a clean session: what it must not lose is in
the database until the broker acknowledges it."""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from uuid6 import uuid7

from cloud.errors import BrokerUnavailable
from cloud.mqtt import broker_address, mqtt_client
from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


def publisher_client_id(settings: CloudSettings) -> str:
    """The account's name (the county broker binds each account to that client id, so
    each API instance has its own account); without an account, a random one per process."""
    return settings.broker_username or f"gridwatch-api-{uuid7().hex[-12:]}"


class BrokerPublisher:
    def __init__(self, settings: CloudSettings) -> None:
        self.client = mqtt_client(settings, publisher_client_id(settings))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = threading.Event()
        self.host, self.port, _ = broker_address(settings)

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

    def publish(
        self, messages: list[tuple[str, bytes]], timeout_s: float = 5.0, *, retain: bool = False
    ) -> None:
        """Publish all and wait for every PUBACK; BrokerUnavailable when one does not come
        (the caller keeps its record and tries again)."""
        if not self.connected.wait(timeout_s):
            raise BrokerUnavailable(f"broker {self.host}:{self.port} not reachable")
        sent = []
        for topic, payload in messages:
            info = self.client.publish(topic, payload, qos=1, retain=retain)

            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(f"broker refused a message: {mqtt.error_string(info.rc)}")
            sent.append(info)
        for info in sent:
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise BrokerUnavailable(f"no acknowledgement from the broker in {timeout_s:g} s")
