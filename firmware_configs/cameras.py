"""Camera stream URLs by vendor, as data: a technician gives vendor, address and channel."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firmware_configs.errors import FirmwareConfigError

VENDORS_FILE = Path(__file__).resolve().parent / "cameras" / "vendors.yaml"

Stream = Literal["main", "sub"]


class CameraTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    port: int = Field(ge=1, le=65535)
    main: str = Field(pattern=r"^(rtsps?://|file:///)")
    sub: str = Field(pattern=r"^(rtsps?://|file:///)")


def load_camera_templates(path: Path = VENDORS_FILE) -> dict[str, CameraTemplate]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return {name: CameraTemplate.model_validate(spec) for name, spec in data.items()}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise FirmwareConfigError(f"{path.name}: cannot read camera templates: {exc}") from exc
    except ValidationError as exc:
        raise FirmwareConfigError(
            f"{path.name}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
        ) from exc


def stream_url(
    vendor: str,
    host: str,
    *,
    channel: int = 1,
    stream: Stream = "sub",
    port: int | None = None,
    path: str = "",
) -> str:
    """The RTSP URL of a vendor's main or sub stream; sub streams are what boxes analyse."""
    templates = load_camera_templates()
    if vendor not in templates:
        raise FirmwareConfigError(
            f"unknown camera vendor {vendor!r} (known: {', '.join(sorted(templates))})"
        )
    if not 1 <= channel <= 256:
        raise FirmwareConfigError(f"channel {channel} out of range 1..256")
    if not host or any(c in host for c in "/@?#: "):
        raise FirmwareConfigError(f"host {host!r} is not a host name or IPv4 address")
    template = templates[vendor]
    url: str = getattr(template, stream)
    return url.format(host=host, port=port or template.port, channel=channel, path=path.lstrip("/"))
