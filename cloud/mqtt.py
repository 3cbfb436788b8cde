"""The cloud's MQTT 5 clients (ingest, the API's command sender): one place that applies the
broker URL, the account and TLS from the settings, and reads the socket ahead."""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


class BufferedSocket:
    """A socket read ahead, in the shape paho's loop uses (its `SocketLike`). paho reads
    each packet with three or four recv calls (the type byte, each length byte, the rest):
    draining a backlog, a system call per header byte, about 7% of ingest's CPU.

    One recv here fills a buffer that serves the next packets; `pending` tells paho's loop
    that bytes wait here, so it reads on without select, as it does for TLS's own buffer."""

    READ_AHEAD = 256 * 1024

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = memoryview(b"")

    def recv(self, size: int) -> bytes:
        if not self._buffer:
            data = self._sock.recv(max(size, self.READ_AHEAD))
            if len(data) <= size:
                return data  # type: ignore[no-any-return]
            self._buffer = memoryview(data)
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk.tobytes()

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return len(self._buffer) + (inner() if inner else 0)

    def send(self, data: bytes | bytearray) -> int:
        return self._sock.send(data)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()  # type: ignore[no-any-return]

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class CloudMqttClient(mqtt.Client):
    """paho's client, on a BufferedSocket, saying why a connection fails (paho only
    retries, silently). `_create_socket` is where paho itself wraps the socket (TLS,
    WebSocket); paho is pinned below 3 for it."""

    _last_failure: str | None = None
    READ_BURST = 1000  # packets read per wake-up at most: writes and keep-alive get turns

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho reads one packet per turn of its loop, a select call each (11% of a drain's
        time); read on while bytes wait in the read-ahead buffer."""
        rc = super().loop_read(max_packets)
        for _ in range(self.READ_BURST):
            sock = self.socket()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket):
                break
            if not sock.pending():
                break
            rc = super().loop_read(max_packets)
        return rc

    def _create_socket(self) -> Any:
        try:
            sock = super()._create_socket()
        except ssl.SSLCertVerificationError as exc:
            self._failed(
                logging.ERROR,
                f"TLS: the broker's certificate is not trusted ({exc.verify_message}); check "
                f"CLOUD_BROKER_CA_FILE and the broker's host name {self.host!r}",
            )
            raise
        except ssl.SSLError as exc:
            self._failed(logging.ERROR, f"TLS handshake with {self.host}:{self.port} failed: {exc}")
            raise
        except OSError as exc:
            self._failed(logging.WARNING, f"cannot reach the broker {self.host}:{self.port}: {exc}")
            raise
        self._last_failure = None
        return BufferedSocket(sock)

    def _failed(self, level: int, reason: str) -> None:
        """Log a failed attempt once per reason: paho retries every few seconds."""
        if reason != self._last_failure:
            logger.log(
                level, "broker connection failed client_id=%s: %s", self._client_id.decode(), reason
            )
        self._last_failure = reason


def mqtt_client(
    settings: CloudSettings, client_id: str, *, manual_ack: bool = False
) -> mqtt.Client:
    client = CloudMqttClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
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
    url = urlsplit(settings.broker_url or "mqtt://127.0.0.1:1883")
    tls = url.scheme == "mqtts"
    return url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883), tls
