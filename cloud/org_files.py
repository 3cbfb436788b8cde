"""The org tree and its people as files: units, departments and staff as CSV, geometry as
GeoJSON. Reading is pure and refuses a bad file with the file, line and field named."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloud.access import ROLE_LEVELS, Role
from cloud.errors import InvalidFile
from cloud.tiers import PARENT_LEVEL, Level, level_rank
from protocols.config import STREAM_URL_PATTERN, URL_CREDENTIALS
from protocols.enums import Tier
from protocols.identifiers import CAMERA_ID_PATTERN, NODE_ID_PATTERN, ORG_CODE_PATTERN

Code = Annotated[str, Field(pattern=ORG_CODE_PATTERN)]
Duty = Literal[
    "",
    "grid_chief",  # 网格长
    "grid_worker",  # 专职/兼职网格员 (employment says which)
    "duty_staff",  # village or town duty staff
    "operator",  # a centre's operator
    "officer",  # a department's officer
    "technician",
    "auditor",
    "app",
]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class UnitRow(Row):
    code: Code
    parent_code: Code | None = None
    level: Level
    name: Text
    category: Annotated[str, Field(max_length=40)] = ""

    @field_validator("parent_code", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return value or None


class DepartmentRow(Row):
    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{1,47}$")]
    name: Text
    unit_code: Code


class StaffRow(Row):
    username: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{2,63}$")]
    display_name: Text
    role: Role
    unit_code: Code
    department_code: str | None = None
    duty: Duty = Field(default="", description="What the person does in their unit.")
    employment: Literal["full_time", "part_time"] = "full_time"
    phone: Annotated[str, Field(pattern=r"^[0-9+ -]{0,20}$")] = ""

    @field_validator("department_code", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return value or None


class NodeRow(Row):
    """An edge node and the unit it serves (its box stands in that village or town)."""

    node_id: Annotated[str, Field(pattern=NODE_ID_PATTERN)]
    unit_code: Code
    tier: Tier
    name: Annotated[str, Field(max_length=128)] | None = None
    balena_uuid: Annotated[str, Field(pattern=r"^[0-9a-f]{7,62}$")] | None = None

    @field_validator("name", "balena_uuid", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return value or None


class CameraRow(Row):
    """Which unit a camera watches: its grid, or the town or county for roads and markets;
    what it is called, its stream (never with credentials) and where it stands."""

    node_id: Annotated[str, Field(pattern=NODE_ID_PATTERN)]
    camera_id: Annotated[str, Field(pattern=CAMERA_ID_PATTERN)]
    unit_code: Code
    name: Annotated[str, Field(max_length=128)] | None = None
    stream_url: Annotated[str, Field(max_length=1024, pattern=STREAM_URL_PATTERN)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None

    @field_validator("name", "stream_url", "lon", "lat", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("stream_url")
    @classmethod
    def _no_credentials(cls, url: str | None) -> str | None:
        if url is not None and URL_CREDENTIALS.match(url):
            raise ValueError("credentials in the URL: put them in the node's config instead")
        return url


UNIT_COLUMNS = tuple(UnitRow.model_fields)
CAMERA_COLUMNS = tuple(CameraRow.model_fields)
NODE_COLUMNS = tuple(NodeRow.model_fields)
DEPARTMENT_COLUMNS = tuple(DepartmentRow.model_fields)
STAFF_COLUMNS = tuple(StaffRow.model_fields)

R = TypeVar("R", bound=Row)


def read_rows(text: str, model: type[R], file_name: str) -> list[R]:
    """Each CSV row as `model`; the first bad row raises InvalidFile naming line and field."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))  # Excel writes a BOM
    expected = set(model.model_fields)
    header = set(reader.fieldnames or ())
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    if missing := required - header:
        raise InvalidFile(f"{file_name} line 1: missing columns {', '.join(sorted(missing))}")
    if unknown := header - expected:
        raise InvalidFile(f"{file_name} line 1: unknown columns {', '.join(sorted(unknown))}")
    rows = []
    for record in reader:
        line = reader.line_num
        if None in record:
            raise InvalidFile(f"{file_name} line {line}: more fields than columns")
        try:
            rows.append(model.model_validate({k: v for k, v in record.items() if v != ""}))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or "row"
            raise InvalidFile(f"{file_name} line {line}: {field}: {error['msg']}") from exc
    return rows


@dataclass(frozen=True)
class KnownUnit:
    code: str
    level: Level
    parent_code: str | None = None


def check_tree(
    rows: list[UnitRow], existing: Mapping[str, KnownUnit], file_name: str = "units.csv"
) -> None:
    """The rules every tree keeps, so jurisdiction stays a prefix test: one parent of the
    level above, a code that extends the parent's, one code length among siblings."""
    units = dict(existing)
    sibling_length: dict[str, int] = {}
    for unit in existing.values():
        if unit.parent_code is not None:
            sibling_length.setdefault(unit.parent_code, len(unit.code))
    seen: set[str] = set()
    # Parents before children whatever the file's order; within a level, the file's order
    # (the first of siblings sets their code length).
    ordered = sorted(
        enumerate(rows, start=2), key=lambda item: (level_rank(item[1].level), item[0])
    )

    for line, row in ordered:
        where = f"{file_name} line {line}"
        if row.code in seen:
            raise InvalidFile(f"{where}: code: {row.code} appears twice")
        seen.add(row.code)
        if row.level is Level.COUNTY:
            if row.parent_code is not None:
                raise InvalidFile(f"{where}: parent_code: a county has no parent")
        else:
            if row.parent_code is None:
                raise InvalidFile(f"{where}: parent_code: a {row.level} needs its parent")
            parent = units.get(row.parent_code)
            if parent is None:
                raise InvalidFile(f"{where}: parent_code: unknown unit {row.parent_code}")
            if parent.level is not PARENT_LEVEL[row.level]:
                raise InvalidFile(
                    f"{where}: parent_code: a {row.level} belongs to a "
                    f"{PARENT_LEVEL[row.level]}, {row.parent_code} is a {parent.level}"
                )
            if not row.code.startswith(row.parent_code) or row.code == row.parent_code:
                raise InvalidFile(f"{where}: code: {row.code} must extend {row.parent_code}")
            length = sibling_length.setdefault(row.parent_code, len(row.code))
            if len(row.code) != length:
                raise InvalidFile(
                    f"{where}: code: units under {row.parent_code} have {length}-character "
                    f"codes, {row.code} has {len(row.code)}"
                )
        previous = existing.get(row.code)
        if previous is not None and previous.level is not row.level:
            raise InvalidFile(f"{where}: level: {row.code} is already a {previous.level}")
        units[row.code] = KnownUnit(row.code, row.level, row.parent_code)


def check_staff(
    rows: list[StaffRow],
    units: Mapping[str, KnownUnit],
    departments: Iterable[str],
    file_name: str = "staff.csv",
) -> None:
    known_departments = set(departments)
    for line, row in enumerate(rows, start=2):
        where = f"{file_name} line {line}"
        unit = units.get(row.unit_code)
        if unit is None:
            raise InvalidFile(f"{where}: unit_code: unknown unit {row.unit_code}")
        if unit.level not in ROLE_LEVELS[row.role]:
            levels = ", ".join(sorted(ROLE_LEVELS[row.role]))
            raise InvalidFile(
                f"{where}: unit_code: a {row.role} works at a {levels}, "
                f"{row.unit_code} is a {unit.level}"
            )
        if (row.role is Role.DEPARTMENT_OFFICER) != (row.department_code is not None):
            raise InvalidFile(
                f"{where}: department_code: required for department officers, and only for them"
            )
        if row.department_code is not None and row.department_code not in known_departments:
            raise InvalidFile(f"{where}: department_code: unknown department {row.department_code}")


def read_geometries(text: str, file_name: str = "units.geojson") -> dict[str, dict[str, Any]]:
    """code → GeoJSON geometry, from a FeatureCollection whose features carry `code`."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidFile(f"{file_name}: not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise InvalidFile(f"{file_name}: must be a GeoJSON FeatureCollection")
    geometries = {}
    for index, feature in enumerate(document.get("features") or []):
        where = f"{file_name} features[{index}]"
        code = (feature.get("properties") or {}).get("code")
        geometry = feature.get("geometry")
        if not isinstance(code, str) or not code:
            raise InvalidFile(f"{where}: properties.code is missing")
        if not isinstance(geometry, dict) or geometry.get("type") not in GEOMETRY_TYPES:
            raise InvalidFile(f"{where}: geometry must be a {' or '.join(GEOMETRY_TYPES)}")
        if not isinstance(geometry.get("coordinates"), list):
            raise InvalidFile(f"{where}: geometry.coordinates is missing")
        geometries[code] = geometry
    return geometries


GEOMETRY_TYPES = ("Polygon", "MultiPolygon", "Point")


def write_rows(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return out.getvalue()


def write_geometries(units: Iterable[Mapping[str, Any]]) -> bytes:
    features = [
        {
            "type": "Feature",
            "geometry": unit["geometry"],
            "properties": {k: unit[k] for k in ("code", "parent_code", "level", "name")},
        }
        for unit in units
        if unit.get("geometry")
    ]
    return orjson.dumps({"type": "FeatureCollection", "features": features})
