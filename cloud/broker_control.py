"""The dynamic-security plugin's control topic, as its admin: what `mosquitto_ctrl dynsec`
sends, from Python. One request at a time; the plugin answers each on the response topic
with one entry per command, in order."""

from __future__ import annotations

import json
import queue
import threading
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.broker_dynsec import CONTROL_TOPIC, BrokerState, Command, read_state
from cloud.errors import BrokerUnavailable

RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
# Commands per request: a request must stay under the broker's max_packet_size.
BATCH = 200


class BrokerControlError(BrokerUnavailable):
    """The plugin did not answer, or refused a command (the message names it)."""


class BrokerControl:
    """`with BrokerControl(...) as control:` connects as the admin (client id = username, as
    the plugin binds it), subscribes to the answers, and disconnects at the end."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str,
        password: str,
        tls: bool = False,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=ca_file)
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self._refusal: str | None = None
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # paho callbacks: record and signal
    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, reason: Any, p: Any = None) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
        self._connected.set()

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, reasons: Any, p: Any) -> None:
        if reasons[0].is_failure:
            self._refusal = f"subscription to the answers: {reasons[0]}"
        self._subscribed.set()

    def _on_message(self, c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        self._answers.put(json.loads(message.payload))

    def __enter__(self) -> BrokerControl:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise BrokerControlError(f"cannot reach the broker {where}: {exc}") from exc
        self.client.loop_start()
        try:
            if not self._connected.wait(self.timeout_s):
                raise BrokerControlError(f"no CONNACK from {self.host}:{self.port}")
            if self._refusal is None:
                self.client.subscribe(RESPONSE_TOPIC, qos=1)
                if not self._subscribed.wait(self.timeout_s):
                    raise BrokerControlError("no SUBACK for the control answers")
            if self._refusal is not None:
                raise BrokerControlError(f"the broker refused its admin: {self._refusal}")
        except BrokerControlError:
            self.client.loop_stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def call(self, commands: list[Command]) -> list[dict[str, Any]]:
        """Send the commands in requests of BATCH; the answers, one per command. A refused
        command raises, naming it (those before it in its request took effect)."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(commands), BATCH):
            batch = commands[start : start + BATCH]
            info = self.client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
            try:
                answer = self._answers.get(timeout=self.timeout_s)
            except queue.Empty:
                raise BrokerControlError(f"no answer on {RESPONSE_TOPIC}") from None
            info.wait_for_publish(self.timeout_s)
            responses: list[dict[str, Any]] = answer.get("responses", [])
            failed = [
                f"{cmd['command']} {cmd.get('username') or cmd.get('rolename') or ''}: "
                f"{response['error']}"
                for cmd, response in zip(batch, responses, strict=False)
                if "error" in response
            ]
            if failed or len(responses) != len(batch):
                raise BrokerControlError("the plugin refused: " + "; ".join(failed or ["?"]))
            answers += responses
        return answers

    def state(self) -> BrokerState:
        """Every client and role, and the default access."""
        clients, roles, access = self.call(
            [
                {"command": "listClients", "verbose": True, "count": -1, "offset": 0},
                {"command": "listRoles", "verbose": True, "count": -1, "offset": 0},
                {"command": "getDefaultACLAccess"},
            ]
        )
        return read_state(clients["data"], roles["data"], access["data"])
