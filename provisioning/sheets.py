"""The technician's spreadsheets, as CSV: the boxes to provision and their cameras. A file is
read whole and every bad row is reported (file, line, field) before anything is touched."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from firmware_configs.cameras import Stream
from protocols.enums import Tier
from protocols.identifiers import CAMERA_ID_PATTERN, ORG_CODE_PATTERN
from provisioning.errors import SheetErrors

Code = Annotated[str, Field(pattern=ORG_CODE_PATTERN)]


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # A blank cell is a column left out: its default applies (an ONVIF camera's empty
        # channel is channel 1), and a required one is reported missing.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data


class BoxRow(Row):
    """One box: the village or town centre it serves and its number there (01, 02, ...)."""

    unit_code: Code = Field(description="The village (or town) whose centre the box serves.")
    index: int = Field(default=1, ge=1, le=99)
    tier: Tier = Tier.VILLAGE
    profile: str | None = Field(
        default=None, description="A node profile (default: village_box or town_box)."
    )


class CameraSpecRow(Row):
    """One camera of a box, as the technician writes it down on site."""

    unit_code: Code = Field(description="With `index`: which box the camera belongs to.")
    index: int = Field(default=1, ge=1, le=99)
    camera_id: Annotated[str, Field(pattern=CAMERA_ID_PATTERN)]
    vendor: str = Field(min_length=1, max_length=32, examples=["hikvision", "dahua"])
    host: str = Field(min_length=1, max_length=253, examples=["192.168.1.64"])
    channel: int = Field(default=1, ge=1, le=256)
    stream: Stream | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    path: str | None = Field(default=None, max_length=512)
    grid_code: Code = Field(description="The grid the camera watches (its cases go there).")
    name: str | None = Field(default=None, max_length=128)
    username: str | None = Field(default=None, max_length=128)
    password: SecretStr | None = Field(default=None, max_length=128)
    rules: str | None = Field(default=None, description="A rule preset (zone preset).")
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)


R = TypeVar("R", bound=Row)


@dataclass(frozen=True)
class Line(Generic[R]):
    number: int
    row: R


def _message(error: Any) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "row"
    return f"{field}: {str(error['msg']).removeprefix('Value error, ')}"


def read_sheet(text: str, model: type[R], file_name: str) -> list[Line[R]]:
    """Every row as `model`, or SheetErrors listing every bad one."""
    lines, problems = read_sheet_leniently(text, model, file_name)
    if problems:
        raise SheetErrors(problems)
    return lines


def read_sheet_leniently(
    text: str, model: type[R], file_name: str
) -> tuple[list[Line[R]], list[str]]:
    """The good rows, and a problem for each bad one (so checks across rows still run)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))  # Excel writes a BOM
    header = set(reader.fieldnames or ())
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    problems = []
    if missing := required - header:
        problems.append(f"{file_name} line 1: missing columns {', '.join(sorted(missing))}")
    if unknown := header - set(model.model_fields):
        problems.append(f"{file_name} line 1: unknown columns {', '.join(sorted(unknown))}")
    if problems:
        return [], problems
    lines: list[Line[R]] = []
    for number, raw in enumerate(reader, start=2):
        if not any((v or "").strip() for v in raw.values()):
            continue  # a blank line
        try:
            lines.append(Line(number, model.model_validate(raw)))
        except ValidationError as exc:
            problems += [f"{file_name} line {number}: {_message(e)}" for e in exc.errors()]
    return lines, problems


def duplicates(keys: Iterable[tuple[int, Any]], what: str, file_name: str) -> list[str]:
    """A problem for each line that repeats a key seen on an earlier line."""
    seen: dict[Any, int] = {}
    problems = []
    for number, key in keys:
        if key in seen:
            problems.append(f"{file_name} line {number}: {what} repeats line {seen[key]}")
        else:
            seen[key] = number
    return problems


BoxKey = tuple[str, int]
Kind = Literal["boxes", "cameras"]
