"""The cloud's MQTT 5 clients (ingest, the API's command sender): one place that applies the
broker URL, the account and TLS from the settings."""

from __future__ import annotations

from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud.settings import CloudSettings


def mqtt_client(
    settings: CloudSettings, client_id: str, *, manual_ack: bool = False
) -> mqtt.Client:
    client = mqtt.Client(
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
