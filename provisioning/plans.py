"""From the sheets and the org tree to one plan per box: its node id, its fleet name and
tags, its registration and its whole NodeConfig (a node profile plus its cameras). Every
problem of every box is found here, before anything is registered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from firmware_configs.cameras import stream_url
from firmware_configs.errors import FirmwareConfigError
from firmware_configs.nodes import NodeProfile, load_node_profile
from firmware_configs.rules import load_rule_set
from protocols.config import CameraConfig, NodeConfig
from protocols.enums import Tier
from provisioning.errors import SheetErrors
from provisioning.sheets import BoxRow, CameraSpecRow, Line, duplicates

DEFAULT_PROFILE = {Tier.VILLAGE: "village_box", Tier.TOWN: "town_box", Tier.COUNTY: "town_box"}


@dataclass(frozen=True)
class Unit:
    code: str
    parent_code: str | None
    level: str
    name: str


@dataclass(frozen=True)
class OrgTree:
    units: dict[str, Unit]

    @classmethod
    def from_api(cls, rows: list[dict[str, Any]]) -> OrgTree:
        return cls(
            {r["code"]: Unit(r["code"], r.get("parent_code"), r["level"], r["name"]) for r in rows}
        )

    def ancestor(self, code: str, level: str) -> str | None:
        unit = self.units.get(code)
        while unit is not None:
            if unit.level == level:
                return unit.code
            unit = self.units.get(unit.parent_code or "")
        return None


@dataclass
class BoxPlan:
    node_id: str
    device_name: str
    unit_code: str
    tier: Tier
    profile: str
    county: str
    town: str
    village: str | None
    config: NodeConfig
    cameras: list[CameraSpecRow] = field(default_factory=list)

    @property
    def tags(self) -> dict[str, str]:
        """Device tags: metadata a fleet view can filter on, changed without a restart."""
        tags = {
            "node_id": self.node_id,
            "tier": self.tier.value,
            "county": self.county,
            "town": self.town,
            "grids": ",".join(sorted({c.grid_code for c in self.cameras})),
        }
        if self.village:
            tags["village"] = self.village
        return tags

    def registration(self, balena_uuid: str | None = None) -> dict[str, Any]:
        """The body of the service's PUT /fleet/nodes/{node_id}."""
        return {
            "unit_code": self.unit_code,
            "tier": self.tier.value,
            "name": self.device_name,
            "balena_uuid": balena_uuid,
            "cameras": [
                {
                    "camera_id": c.camera_id,
                    "unit_code": c.grid_code,
                    "name": c.name,
                    "stream_url": camera.url,
                    "lon": c.lon,
                    "lat": c.lat,
                }
                for c, camera in zip(self.cameras, self.config.cameras, strict=True)
            ],
        }

    def desired_config(self) -> dict[str, Any]:
        """The body of PUT /nodes/{node_id}/config (the service numbers the version)."""
        return self.config.model_dump(mode="json", exclude={"node_id", "version", "issued_at"})


def node_id_for(unit_code: str, index: int) -> str:
    return f"gw-{unit_code}-{index:02d}"


def device_name_for(town: str, village: str | None, index: int) -> str:
    """`<town code>-<village part of its code>-<nn>`: readable in a fleet list, sorted by
    place, and the same every time the sheet is run."""
    place = village[len(town) :] if village and village.startswith(town) else (village or "000")
    return f"{town}-{place}-{index:02d}"


def _camera(
    spec: CameraSpecRow, profile: NodeProfile, file_name: str, number: int
) -> tuple[CameraConfig | None, list[str]]:
    where = f"{file_name} line {number}"
    try:
        url = stream_url(
            spec.vendor,
            spec.host,
            channel=spec.channel,
            stream=spec.stream or profile.cameras.stream,
            port=spec.port,
            path=spec.path or "",
        )
        rules = load_rule_set(spec.rules or profile.cameras.rules)
    except FirmwareConfigError as exc:
        return None, [f"{where}: {exc}"]
    try:
        return CameraConfig(
            camera_id=spec.camera_id,
            name=spec.name or spec.camera_id,
            url=url,
            username=spec.username,
            password=spec.password,
            grid_code=spec.grid_code,
            detect_fps=profile.cameras.detect_fps,
            offline_grace_s=profile.cameras.offline_grace_s,
            rules=rules.rules,
            masks=rules.masks,
        ), []
    except ValidationError as exc:
        return None, [
            f"{where}: {e['loc'][0] if e['loc'] else 'camera'}: {e['msg']}" for e in exc.errors()
        ]


def make_plans(
    boxes: list[Line[BoxRow]],
    cameras: list[Line[CameraSpecRow]],
    org: OrgTree,
    *,
    boxes_file: str = "boxes.csv",
    cameras_file: str = "cameras.csv",
    timezone: str = "Asia/Shanghai",
) -> list[BoxPlan]:
    """One plan per box, or SheetErrors with every problem of both files."""
    problems = duplicates(
        ((b.number, (b.row.unit_code, b.row.index)) for b in boxes), "the box", boxes_file
    )
    problems += duplicates(
        ((c.number, (c.row.unit_code, c.row.index, c.row.camera_id)) for c in cameras),
        "the camera id",
        cameras_file,
    )
    by_box: dict[tuple[str, int], list[Line[CameraSpecRow]]] = {}
    for line in cameras:
        by_box.setdefault((line.row.unit_code, line.row.index), []).append(line)
    known = {(b.row.unit_code, b.row.index) for b in boxes}
    for key, lines in by_box.items():
        if key not in known:
            problems += [
                f"{cameras_file} line {line.number}: no box {key[0]} #{key[1]} in {boxes_file}"
                for line in lines
            ]
    plans = []
    for box in boxes:
        row, where = box.row, f"{boxes_file} line {box.number}"
        unit = org.units.get(row.unit_code)
        if unit is None:
            problems.append(f"{where}: unit_code: unknown unit {row.unit_code} (or not yours)")
            continue
        if unit.level != row.tier.value:
            problems.append(
                f"{where}: tier: a {row.tier.value} box serves a {row.tier.value}, "
                f"but {row.unit_code} is a {unit.level}"
            )
            continue
        try:
            profile = load_node_profile(row.profile or DEFAULT_PROFILE[row.tier])
        except FirmwareConfigError as exc:
            problems.append(f"{where}: profile: {exc}")
            continue
        county = org.ancestor(row.unit_code, "county") or row.unit_code
        town = org.ancestor(row.unit_code, "town") or row.unit_code
        village = org.ancestor(row.unit_code, "village")
        specs = by_box.get((row.unit_code, row.index), [])
        configs = []
        for line in specs:
            # A box watches its own town: its grids, or the town itself (roads, markets).
            if (
                line.row.grid_code not in org.units
                or org.ancestor(line.row.grid_code, "town") != town
            ):
                problems.append(
                    f"{cameras_file} line {line.number}: grid_code: {line.row.grid_code} is not "
                    f"a unit of town {town}"
                )
                continue
            camera, errors = _camera(line.row, profile, cameras_file, line.number)
            problems += errors
            if camera is not None:
                configs.append(camera)
        node_id = node_id_for(row.unit_code, row.index)
        try:
            config = NodeConfig(
                node_id=node_id,
                version=1,
                issued_at=datetime.now(UTC),
                tier=row.tier,
                timezone=timezone,
                model=profile.model,
                publish=profile.publish,
                cameras=configs,
            )
        except ValidationError as exc:
            problems += [f"{where}: config: {e['msg']}" for e in exc.errors()]
            continue
        plans.append(
            BoxPlan(
                node_id=node_id,
                device_name=device_name_for(town, village, row.index),
                unit_code=row.unit_code,
                tier=row.tier,
                profile=row.profile or DEFAULT_PROFILE[row.tier],
                county=county,
                town=town,
                village=village,
                config=config,
                cameras=[line.row for line in specs],
            )
        )
    if problems:
        raise SheetErrors(problems)
    return plans
