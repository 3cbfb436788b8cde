"""Rule sets: the rules and masks of one camera as a YAML file, and the presets shipped here.

A technician tunes a rule set on a real camera with `gridwatch edge detect --rules FILE`,
then the same rules go into the node's config.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from firmware_configs.errors import FirmwareConfigError
from protocols.config import Rule
from protocols.geometry import Polygon

RULES_DIR = Path(__file__).resolve().parent / "rules"


class RuleSet(BaseModel):
    """The `rules` and `masks` of one camera, as in the node config's CameraConfig."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", max_length=500)
    rules: list[Rule] = Field(default_factory=list, max_length=32)
    masks: list[Polygon] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> RuleSet:
        ids = [rule.rule_id for rule in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError(f"rule ids repeat: {sorted(ids)}")
        return self


def load_rule_set(name_or_path: str | Path) -> RuleSet:
    """A rule set by preset name (rules/<name>.yaml) or path; errors name file and field."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = RULES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(rule_set_names())
            raise FirmwareConfigError(f"rule preset {name_or_path!r} not found (known: {known})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise FirmwareConfigError(f"{path}: cannot read rules: {exc}") from exc
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "rules"
        message = first["msg"].removeprefix("Value error, ")
        raise FirmwareConfigError(f"{path.name}: {field}: {message}") from exc


def rule_set_names() -> list[str]:
    return sorted(p.stem for p in RULES_DIR.glob("*.yaml"))
