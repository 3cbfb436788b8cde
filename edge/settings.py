"""Process settings of the edge agent, from the environment (balena device variables)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocols.identifiers import NodeId


class EdgeSettings(BaseSettings):
    """EDGE_* variables. On balena, device variables set by the provisioning tool."""

    model_config = SettingsConfigDict(env_prefix="EDGE_", env_nested_delimiter="__", extra="ignore")

    node_id: NodeId = Field(description="The node's id: its MQTT client id and username.")
    broker_url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="mqtt://host:port, or mqtts://host:port for TLS.",
    )
    username: str | None = Field(default=None, description="Defaults to the node id.")
    password: SecretStr | None = None
    password_next: SecretStr | None = Field(
        default=None,
        description="A rotation's next password: used when the broker refuses the current one.",
    )
    ca_file: Path | None = Field(default=None, description="CA that signed the broker.")
    cert_file: Path | None = Field(default=None, description="Client certificate (TLS).")
    key_file: Path | None = None
    cloud_url: str | None = Field(default=None, description="The county service, for logs.")
    config_file: Path | None = Field(
        default=None, description="First-boot NodeConfig (JSON) until the cloud sends one."
    )
    data_dir: Path = Field(
        default=Path("/var/lib/gridwatch"), description="Outbox, last good config, model cache."
    )
    model_dir: Path | None = None
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9108, description="Prometheus /metrics port; 0 turns it off."
    )
    keepalive_s: Annotated[int, Field(ge=5, le=600)] = 30
    auth_retry_min_s: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=60, description="After the broker refused the credentials: retry slowly."
    )
    auth_retry_max_s: Annotated[int, Field(ge=1, le=86_400)] = 300
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 86_400
    workers: Annotated[int, Field(ge=1, le=64)] | None = None
    shutdown_flush_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    receipt_timeout_s: Annotated[float, Field(ge=0.5, le=3600)] = Field(
        default=60.0,
        description="An event the broker took and no county receipt has named this long "
        "after is sent again (then after doubling waits, up to an hour).",
    )

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be mqtt://host[:port] or mqtts://host[:port]")
        return value

    @property
    def broker_host(self) -> str:
        return urlsplit(self.broker_url).hostname or ""

    @property
    def broker_port(self) -> int:
        parts = urlsplit(self.broker_url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.broker_url).scheme == "mqtts"

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "config.json"

    @property
    def models_path(self) -> Path:
        return self.model_dir or self.data_dir / "models"


# Where a provisioning bundle is found at first boot (the boot partition on balenaOS, or a
# USB stick mounted there); EDGE_BUNDLE_DIR moves it.
BUNDLE_DIR = Path("/mnt/boot/gridwatch")
BUNDLE_ENV_FILE = "gridwatch.env"


def load_settings() -> EdgeSettings:
    """EDGE_* variables, over the bundle's variables when a bundle is there. Paths in the
    bundle (config, CA) are relative to it, wherever the card is mounted."""
    bundle = Path(os.environ.get("EDGE_BUNDLE_DIR", BUNDLE_DIR))
    env_file = bundle / BUNDLE_ENV_FILE
    if not env_file.is_file():
        return EdgeSettings()  # type: ignore[call-arg]
    settings = EdgeSettings(_env_file=env_file)  # type: ignore[call-arg]
    relative = {
        name: bundle / value
        for name in ("config_file", "ca_file", "cert_file", "key_file")
        if (value := getattr(settings, name)) is not None and not value.is_absolute()
    }
    return settings.model_copy(update=relative)
