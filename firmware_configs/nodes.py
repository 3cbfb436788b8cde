"""Node profiles: what a village box and a town box run, apart from their cameras. The
provisioning tool renders a node's whole NodeConfig from a profile and a camera list."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from firmware_configs.cameras import Stream
from firmware_configs.files import load_named, yaml_names
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
    return load_named(name_or_path, NODES_DIR, NodeProfile, "node profile")


def node_profile_names() -> list[str]:
    return yaml_names(NODES_DIR)
