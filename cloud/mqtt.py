"""The cloud's MQTT settings in one place (broker URL, account, TLS) and the paho client
the service publishes with (commands, alerts). Ingest has its own subscriber
(cloud/ingest/subscriber.py)."""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


class FailureLog:
    """Log a failed connection attempt once per reason: clients retry every few seconds,
    and the same line each time would bury everything else."""

    def __init__(self, log: logging.Logger, prefix: str) -> None:
        self._log = log
        self._prefix = prefix
        self._last: str | None = None

    def log(self, level: int, reason: str) -> None:
        if reason != self._last:
            self._log.log(level, "%s: %s", self._prefix, reason)
        self._last = reason

    def clear(self) -> None:
        """Connected: the next failure is news again."""
        self._last = None

    def unreachable(self, error: OSError, host: str, port: int) -> None:
        """An attempt to reach the broker failed in the socket or in TLS: say which."""
        if isinstance(error, ssl.SSLCertVerificationError):
            self.log(
                logging.ERROR,
                f"TLS: the broker's certificate is not trusted ({error.verify_message}); "
                f"check CLOUD_BROKER_CA_FILE and the broker's host name {host!r}",
            )
        elif isinstance(error, ssl.SSLError):
            self.log(logging.ERROR, f"TLS handshake with {host}:{port} failed: {error}")
        else:
            self.log(logging.WARNING, f"cannot reach the broker {host}:{port}: {error}")


class CloudMqttClient(mqtt.Client):
    """paho's client, saying why a connection fails (paho only retries, silently).
    `_create_socket` is where paho itself opens the socket (TLS, WebSocket); paho is
    pinned below 3 for it."""

    _failures: FailureLog | None = None

    def _create_socket(self) -> Any:
        if self._failures is None:
            self._failures = FailureLog(
                logger, f"broker connection failed client_id={self._client_id.decode()}"
            )
        try:
            sock = super()._create_socket()
        except OSError as exc:  # TLS errors included
            self._failures.unreachable(exc, self.host, self.port)
            raise
        self._failures.clear()
        return sock


def mqtt_client(settings: CloudSettings, client_id: str) -> mqtt.Client:
    client = CloudMqttClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if settings.broker_username:
        password = settings.broker_password
        client.username_pw_set(
            settings.broker_username, password.get_secret_value() if password else None
        )
    if broker_address(settings)[2]:
        client.tls_set(ca_certs=str(settings.broker_ca_file) if settings.broker_ca_file else None)
    client.max_inflight_messages_set(20)
    client.reconnect_delay_set(1, 30)
    return client


def broker_address(settings: CloudSettings) -> tuple[str, int, bool]:
    """(host, port, tls) of the configured broker."""
    return address_of(settings.broker_url)


def address_of(broker_url: str | None) -> tuple[str, int, bool]:
    """(host, port, tls) of `mqtt://host:port` or `mqtts://host:port`."""
    url = urlsplit(broker_url or "mqtt://127.0.0.1:1883")
    tls = url.scheme == "mqtts"
    return url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883), tls
