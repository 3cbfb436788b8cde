"""Org trees as the files a county hands over: a small real-looking one for the tests and
a synthetic one at a county's scale for load tests and benchmarks."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import psycopg

from cloud.org_files import (
    CAMERA_COLUMNS,
    DEPARTMENT_COLUMNS,
    NODE_COLUMNS,
    STAFF_COLUMNS,
    UNIT_COLUMNS,
)

COUNTY = "511725"  # 渠县 Qu County, Dazhou, Sichuan
TOWN = "511725106"  # 土溪镇
VILLAGE = "511725106201"  # 双凤村
GRID = "511725106201001"
GRID_2 = "511725106201002"
VILLAGE_2 = "511725106202"
GRID_3 = "511725106202001"
OTHER_TOWN = "511725100"  # 渠江街道
OTHER_VILLAGE = "511725100001"
OTHER_GRID = "511725100001001"

UNITS = [
    (COUNTY, "", "county", "渠县", ""),
    (TOWN, COUNTY, "town", "土溪镇", "town"),
    (VILLAGE, TOWN, "village", "双凤村", "village"),
    (GRID, VILLAGE, "grid", "双凤村第一网格", ""),
    (GRID_2, VILLAGE, "grid", "双凤村第二网格", ""),
    (VILLAGE_2, TOWN, "village", "龙滩村", "village"),
    (GRID_3, VILLAGE_2, "grid", "龙滩村第一网格", ""),
    (OTHER_TOWN, COUNTY, "town", "渠江街道", "subdistrict"),
    (OTHER_VILLAGE, OTHER_TOWN, "village", "东门社区", "community"),
    (OTHER_GRID, OTHER_VILLAGE, "grid", "东门社区第一网格", ""),
]
DEPARTMENTS = [
    ("police", "县公安局", COUNTY),
    ("emergency", "县应急管理局", COUNTY),
    ("market", "县市场监督管理局", COUNTY),
]
# username, role, unit, department
STAFF = [
    ("admin", "county_admin", COUNTY, ""),
    ("county-op", "county_operator", COUNTY, ""),
    ("town-op", "town_operator", TOWN, ""),
    ("village-op", "village_operator", VILLAGE, ""),
    ("worker", "grid_worker", GRID, ""),
    ("worker-2", "grid_worker", GRID_2, ""),
    ("other-worker", "grid_worker", OTHER_GRID, ""),
    ("other-town-op", "town_operator", OTHER_TOWN, ""),
    ("police", "department_officer", COUNTY, "police"),
    ("emergency", "department_officer", COUNTY, "emergency"),
    ("tech", "field_technician", TOWN, ""),
    ("auditor", "auditor", COUNTY, ""),
]


VILLAGE_NODE = "qx-shuangfeng-01"
OTHER_NODE = "qx-dongmen-01"
CAMERAS = [
    (VILLAGE_NODE, "cam01", GRID),
    (VILLAGE_NODE, "cam02", GRID_2),
    (VILLAGE_NODE, "road01", TOWN),  # a road camera belongs to the town, not a grid
    (OTHER_NODE, "cam01", OTHER_GRID),
]


NODES = [(VILLAGE_NODE, VILLAGE, "village"), (OTHER_NODE, OTHER_VILLAGE, "village")]


@dataclass(frozen=True)
class CountyFiles:
    units: Path
    departments: Path
    staff: Path
    geometry: Path
    cameras: Path
    nodes: Path


def _write(path: Path, columns: tuple[str, ...], rows: list[tuple[object, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def _square(index: int) -> dict[str, object]:
    x, y = 106.9 + (index % 40) * 0.01, 30.8 + (index // 40) * 0.01
    ring = [[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def write_small_county(directory: Path) -> CountyFiles:
    directory.mkdir(parents=True, exist_ok=True)
    staff = [
        (user, user.replace("-", " ").title(), role, unit, dept, "", "full_time", "")
        for user, role, unit, dept in STAFF
    ]
    grids = [u for u in UNITS if u[2] == "grid"]
    return CountyFiles(
        _write(directory / "units.csv", UNIT_COLUMNS, list(UNITS)),
        _write(directory / "departments.csv", DEPARTMENT_COLUMNS, list(DEPARTMENTS)),
        _write(directory / "staff.csv", STAFF_COLUMNS, staff),
        _geojson(directory / "units.geojson", [g[0] for g in grids]),
        _write(directory / "cameras.csv", CAMERA_COLUMNS, list(CAMERAS)),
        _write(directory / "nodes.csv", NODE_COLUMNS, list(NODES)),
    )


def _geojson(path: Path, codes: list[str]) -> Path:
    features = [
        {"type": "Feature", "geometry": _square(i), "properties": {"code": code}}
        for i, code in enumerate(codes)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def write_large_county(
    directory: Path, towns: int = 40, villages: int = 400, grids: int = 613
) -> CountyFiles:
    """A county of the reference's size: grids spread over the villages (some have two)."""
    directory.mkdir(parents=True, exist_ok=True)
    units: list[tuple[object, ...]] = [(COUNTY, "", "county", "渠县", "")]
    village_codes = []
    for t in range(towns):
        town = f"{COUNTY}{100 + t:03d}"
        units.append((town, COUNTY, "town", f"镇{t}", "town"))
        for v in range(villages // towns):
            village = f"{town}{200 + v:03d}"
            village_codes.append(village)
            units.append((village, town, "village", f"村{t}-{v}", "village"))
    grid_codes = []
    for g in range(grids):
        village = village_codes[g % len(village_codes)]
        grid = f"{village}{1 + g // len(village_codes):03d}"
        grid_codes.append(grid)
        units.append((grid, village, "grid", f"网格{g}", ""))
    staff: list[tuple[object, ...]] = [
        (f"worker-{i}", f"网格员{i}", "grid_worker", code, "", "grid_worker", "full_time", "")
        for i, code in enumerate(grid_codes)
    ]
    return CountyFiles(
        _write(directory / "units.csv", UNIT_COLUMNS, units),
        _write(directory / "departments.csv", DEPARTMENT_COLUMNS, list(DEPARTMENTS)),
        _write(directory / "staff.csv", STAFF_COLUMNS, staff),
        _geojson(directory / "units.geojson", grid_codes),
        _write(
            directory / "cameras.csv",
            CAMERA_COLUMNS,
            [
                (f"node-{i // 4}", f"cam{i % 4}", grid_codes[i % len(grid_codes)])
                for i in range(1500)
            ],
        ),
        _write(
            directory / "nodes.csv",
            NODE_COLUMNS,
            [
                (f"node-{i}", grid_codes[(4 * i) % len(grid_codes)][:12], "village")
                for i in range(375)
            ],
        ),
    )


TEST_JWT_SECRET = "a test key of thirty-two characters or more"


def bearer(
    role: str = "county_operator", unit_code: str = COUNTY, level: str = "county"
) -> dict[str, str]:
    """An Authorization header signed with TEST_JWT_SECRET (set `jwt_secret` to it): for
    tests about something other than sign-in."""
    from cloud.access import Principal, Role
    from cloud.auth import issue_access_token
    from cloud.tiers import Level

    principal = Principal("test", Role(role), unit_code, Level(level))
    token = issue_access_token(principal, key=TEST_JWT_SECRET.encode(), lifetime_s=3600)
    return {"Authorization": f"Bearer {token}"}


def import_large_county(url: str, directory: Path, *, with_fleet: bool = False) -> None:
    """Migrate an empty database (plain PostgreSQL) and import the reference-size county
    into it, as the county's own import would; `with_fleet`: its nodes and cameras too."""
    from cloud.access import Principal, Role
    from cloud.db.schema import prepare_database
    from cloud.org_import import OrgFiles, import_org
    from cloud.settings import CloudSettings
    from cloud.tiers import Level

    files = write_large_county(directory)
    fleet = (files.cameras, files.nodes) if with_fleet else (None, None)
    with psycopg.connect(url, autocommit=True) as conn:
        prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        import_org(
            conn,
            OrgFiles(files.units, files.departments, files.staff, files.geometry, *fleet),
            Principal("bench", Role.COUNTY_ADMIN, COUNTY, Level.COUNTY),
        )
