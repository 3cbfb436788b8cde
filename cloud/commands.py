"""Commands from the service to nodes (QoS 1): the API's own MQTT client.

A node's session is persistent, so a command to a node that is offline waits at the
broker until it returns (or until the request's `expires_at`, after which the node
answers with an error). The node's answer comes back through ingest, like every report.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import paho.mqtt.client as mqtt
from uuid6 import uuid7

from cloud.errors import BrokerUnavailable
from cloud.mqtt import broker_address, mqtt_client
from cloud.settings import CloudSettings
from protocols import CommandRequest, encode
from protocols.enums import CommandName
from protocols.topics import command_topic

logger = logging.getLogger(__name__)

COMMAND_LIFETIME = timedelta(minutes=10)


def make_command(node_id: str, command: CommandName, **args: Any) -> CommandRequest:
    issued = datetime.now(UTC)
    return CommandRequest(
        request_id=uuid7(),
        node_id=node_id,
        command=command.value,
        args=args,
        issued_at=issued,
        expires_at=issued + COMMAND_LIFETIME,
    )


class CommandSender:
    def __init__(self, settings: CloudSettings) -> None:
        # Its own id per process: several API instances publish side by side.
        self.client = mqtt_client(settings, f"gridwatch-api-{uuid7().hex[-12:]}")
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
        if not reason.is_failure:
            self.connected.set()
            logger.info("command sender connected to %s:%s", self.host, self.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        self.connected.clear()

    def send(self, request: CommandRequest, timeout_s: float = 5.0) -> UUID:
        """Publish and wait for the broker's PUBACK; BrokerUnavailable when it does not come."""
        if not self.connected.wait(timeout_s):
            raise BrokerUnavailable(f"broker {self.host}:{self.port} not reachable")
        info = self.client.publish(
            command_topic(request.node_id, request.request_id), encode(request), qos=1
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"broker refused the command: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise BrokerUnavailable(f"no acknowledgement from the broker in {timeout_s:g} s")
        logger.info(
            "command sent request_id=%s node_id=%s command=%s",
            request.request_id,
            request.node_id,
            request.command,
        )
        return request.request_id
