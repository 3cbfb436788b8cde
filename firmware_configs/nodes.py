"""Node profiles: what a village box and a town box run, apart from their cameras. The
provisioning tool renders a node's whole NodeConfig from a profile and a camera list."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firmware_configs.cameras import Stream
from firmware_configs.errors import FirmwareConfigError
from protocols.config import ModelSpec, PublishSettings
from protocols.enums import Tier

NODES_DIR = Path(__file__).resolve().parent / "nodes"


class CameraDefaults(BaseModel):
    """What every camera of the box gets unless its row says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: Stream = "sub"
    detect_fps: float = Field(default=5.0, gt=0, le=30)
    offline_grace_s: float = Field(default=60.0, ge=0, le=86_400)
    rules: str = Field(default="motion_only", description="A rule preset of rules/.")


class NodeProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", max_length=500)
    tier: Tier
    model: ModelSpec
    publish: PublishSettings
    cameras: CameraDefaults = Field(default_factory=CameraDefaults)


def load_node_profile(name_or_path: str | Path) -> NodeProfile:
    """A profile by name (nodes/<name>.yaml) or by path; errors name the file and field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = NODES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(node_profile_names())
        raise FirmwareConfigError(f"node profile {name_or_path!r} not found (known: {known})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FirmwareConfigError(f"{path}: cannot read YAML: {exc}") from exc
    try:
        return NodeProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "profile"
        raise FirmwareConfigError(f"{path.name}: {field}: {first['msg']}") from exc


def node_profile_names() -> list[str]:
    return sorted(p.stem for p in NODES_DIR.glob("*.yaml"))
