"""Reading a named YAML description (a model or node profile) into its model, with errors
that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from firmware_configs.errors import FirmwareConfigError

M = TypeVar("M", bound=BaseModel)


def yaml_names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_named(name_or_path: str | Path, directory: Path, model: type[M], what: str) -> M:
    """`directory/<name>.yaml` for a bare name, else the path itself."""
    path = Path(name_or_path)
    if not path.suffix:
        path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(yaml_names(directory))
        raise FirmwareConfigError(f"{what} {name_or_path!r} not found (known: {known})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FirmwareConfigError(f"{path}: cannot read YAML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "profile"
        raise FirmwareConfigError(f"{path.name}: {field}: {first['msg']}") from exc
