"""The demo's county: one town of Qu County with two villages and their grids, the people
who work there, and three boxes with their cameras (written as the sheets a county and a
technician would hand over)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

COUNTY = "511725"  # 渠县
TOWN = "511725106"  # 土溪镇
VILLAGE_A = "511725106201"  # 双凤村
VILLAGE_B = "511725106202"  # 龙滩村
GRIDS = {
    "511725106201001": ("双凤村第一网格", VILLAGE_A),
    "511725106201002": ("双凤村第二网格", VILLAGE_A),
    "511725106202001": ("龙滩村第一网格", VILLAGE_B),
    "511725106202002": ("龙滩村第二网格", VILLAGE_B),
}
UNITS = [
    (COUNTY, "", "county", "渠县", ""),
    (TOWN, COUNTY, "town", "土溪镇", "town"),
    (VILLAGE_A, TOWN, "village", "双凤村", "village"),
    (VILLAGE_B, TOWN, "village", "龙滩村", "village"),
    *((code, village, "grid", name, "") for code, (name, village) in GRIDS.items()),
]
STAFF = [
    # username, display name, role, unit, department, duty
    ("admin", "县平台管理员", "county_admin", COUNTY, "", "operator"),
    ("county-op", "县指挥中心值班员", "county_operator", COUNTY, "", "duty_staff"),
    ("town-op", "土溪镇综治中心值班员", "town_operator", TOWN, "", "operator"),
    ("village-op", "双凤村综治站值班员", "village_operator", VILLAGE_A, "", "operator"),
    ("worker", "双凤村第一网格网格员", "grid_worker", "511725106201001", "", "grid_worker"),
    ("tech", "县运维技术员", "field_technician", TOWN, "", "technician"),
    # "The grid blows the whistle, the departments report for duty": an officer for each
    # department a case can be dispatched to.
    ("police", "县公安局值班民警", "department_officer", COUNTY, "police", "officer"),
    ("emergency", "县应急管理局值班员", "department_officer", COUNTY, "emergency", "officer"),
]
# What a technician writes down: the boxes, and each box's cameras (clip, rule preset, grid).
BOXES = [(TOWN, 1, "town"), (VILLAGE_A, 1, "village"), (VILLAGE_B, 1, "village")]
CAMERAS = [
    # box unit, camera id, clip, grid (or the town for a road), rule preset, name
    (TOWN, "road01", "car-detection.mp4", TOWN, "overhead_vehicle_lane", "镇政府前道路"),
    (
        VILLAGE_A,
        "cam01",
        "car-detection.mp4",
        "511725106201001",
        "overhead_vehicle_lane",
        "村委会停车场",
    ),
    (
        VILLAGE_A,
        "cam02",
        "one-by-one-person-detection.mp4",
        "511725106201002",
        "restricted_area",
        "水库管理房",
    ),
    (
        VILLAGE_B,
        "cam01",
        "one-by-one-person-detection.mp4",
        "511725106202001",
        "restricted_area",
        "龙滩电站",
    ),
]


def _square(index: int) -> dict[str, object]:
    """Grids as squares side by side (no map tiles needed; real counties import theirs)."""
    x, y = 106.97 + (index % 2) * 0.012, 30.84 + (index // 2) * 0.012
    ring = [[x, y], [x + 0.012, y], [x + 0.012, y + 0.012], [x, y + 0.012], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def _csv(path: Path, rows: list[tuple[object, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def write_org(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    geometry = directory / "grids.geojson"
    geometry.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "geometry": _square(i), "properties": {"code": code}}
                    for i, code in enumerate(GRIDS)
                ],
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    return {
        "units": _csv(
            directory / "units.csv", [("code", "parent_code", "level", "name", "category"), *UNITS]
        ),
        "departments": _csv(
            directory / "departments.csv",
            [
                ("code", "name", "unit_code"),
                ("police", "县公安局", COUNTY),
                ("emergency", "县应急管理局", COUNTY),
            ],
        ),
        "staff": _csv(
            directory / "staff.csv",
            [
                (
                    "username",
                    "display_name",
                    "role",
                    "unit_code",
                    "department_code",
                    "duty",
                    "employment",
                    "phone",
                ),
                *((u, n, r, unit, dept, d, "full_time", "") for u, n, r, unit, dept, d in STAFF),
            ],
        ),
        "geometry": geometry,
    }


def write_sheets(
    directory: Path, clips: dict[str, Path], *, motion: bool = False, rtsp_port: int | None = None
) -> tuple[Path, Path]:
    """boxes.csv and cameras.csv for `gridwatch provision bulk`. The cameras are the clips:
    served over RTSP on `rtsp_port` (clip i of `clips`, sorted, at /cam<i>) like IP cameras,
    or read as files when no RTSP server could start. `motion`: no model at hand, so the
    motion box profile and motion rules."""
    directory.mkdir(parents=True, exist_ok=True)
    profile = "motion_box" if motion else ""
    boxes = _csv(
        directory / "boxes.csv",
        [
            ("unit_code", "index", "tier", "profile"),
            *((unit, index, tier, profile) for unit, index, tier in BOXES),
        ],
    )
    rows: list[tuple[object, ...]] = [
        (
            "unit_code",
            "index",
            "camera_id",
            "vendor",
            "host",
            "port",
            "path",
            "grid_code",
            "rules",
            "name",
        )
    ]
    order = sorted(clips)
    for unit, camera_id, clip, grid, rules, name in CAMERAS:
        chosen = clip if clip in clips else order[0]
        preset = "motion_only" if motion else rules
        if rtsp_port is None:
            where = ("file", "localhost", "", str(clips[chosen]))
        else:
            where = ("onvif", "127.0.0.1", str(rtsp_port), f"cam{order.index(chosen) + 1}")
        rows.append((unit, 1, camera_id, *where, grid, preset, name))
    return boxes, _csv(directory / "cameras.csv", rows)
