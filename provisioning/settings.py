"""The provisioning tool's settings (PROVISION_* variables, or flags of the same names)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _state_home() -> Path:
    return Path.home() / ".local" / "state" / "gridwatch" / "provision"


class ProvisionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROVISION_", extra="ignore")

    cloud_url: str = Field(
        default="http://127.0.0.1:8080", description="The county service the boxes report to."
    )
    cloud_token: SecretStr | None = Field(
        default=None, description="The technician's API token (or sign in with --username)."
    )
    broker_url: str = Field(
        default="mqtts://127.0.0.1:8883",
        description="Where boxes connect: mqtts://host:port (TLS) in a county.",
    )
    ca_file: Path | None = Field(default=None, description="The county CA the broker uses.")
    backend: Literal["balena", "standalone"] = "standalone"
    balena_api_url: str = Field(
        default="https://api.balena-cloud.com/",
        description="balenaCloud's API, or an openBalena's https://api.<domain>/.",
    )
    balena_token: SecretStr | None = Field(default=None, description="A named user API key.")
    balena_fleet: str | None = Field(default=None, description="The fleet slug, org/name.")
    balena_requests_per_minute: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=120, description="Kept below balena's rate limit on our side."
    )
    balena_key_days: Annotated[int, Field(ge=1, le=90)] = Field(
        default=7, description="Lifetime of the technician's named provisioning key."
    )
    technician: str = Field(default_factory=getpass.getuser)
    state_dir: Path = Field(default_factory=_state_home)
    call_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0, description="Longest wait for one call to balena or the service."
    )
    attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        default=6, description="Tries of a call that failed for a passing reason (429, 5xx)."
    )

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must be mqtt://host:port or mqtts://host:port")
        return value

    @field_validator("cloud_url", "balena_api_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value
