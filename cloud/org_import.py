"""Load an org tree, its departments and staff into the database in one transaction:
every file is checked first, so a bad line changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cloud.access import Principal
from cloud.auth import hash_password, new_password
from cloud.db import audit
from cloud.db import org as db
from cloud.errors import InvalidFile
from cloud.org_files import (
    CameraRow,
    DepartmentRow,
    KnownUnit,
    NodeRow,
    StaffRow,
    UnitRow,
    check_staff,
    check_tree,
    read_geometries,
    read_rows,
)


@dataclass
class OrgFiles:
    units: Path | None = None
    departments: Path | None = None
    staff: Path | None = None
    geometry: Path | None = None
    cameras: Path | None = None
    nodes: Path | None = None


@dataclass
class ImportResult:
    units: int = 0
    departments: int = 0
    staff: int = 0
    geometries: int = 0
    cameras: int = 0
    nodes: int = 0
    # Passwords made for people who had none: shown once, never stored in the clear.
    passwords: dict[str, str] = field(default_factory=dict)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidFile(f"{path.name}: cannot read: {exc}") from exc


def import_org(
    conn: psycopg.Connection, files: OrgFiles, actor: Principal, *, set_passwords: bool = False
) -> ImportResult:
    result = ImportResult()
    with conn.transaction():
        # One importer at a time: the checks read the tree the writes then extend.
        conn.execute("LOCK TABLE org_units, departments, users IN SHARE ROW EXCLUSIVE MODE")
        units = db.known_units(conn)
        unit_rows: list[UnitRow] = []
        if files.units is not None:
            unit_rows = read_rows(_read(files.units), UnitRow, files.units.name)
            check_tree(unit_rows, units, files.units.name)
            units = units | {r.code: KnownUnit(r.code, r.level, r.parent_code) for r in unit_rows}
        geometries = {}
        if files.geometry is not None:
            geometries = read_geometries(_read(files.geometry), files.geometry.name)
            if unknown := sorted(set(geometries) - set(units)):
                raise InvalidFile(f"{files.geometry.name}: unknown units {', '.join(unknown[:5])}")
        department_rows: list[DepartmentRow] = []
        if files.departments is not None:
            department_rows = read_rows(
                _read(files.departments), DepartmentRow, files.departments.name
            )
            for line, department in enumerate(department_rows, start=2):
                if department.unit_code not in units:
                    raise InvalidFile(
                        f"{files.departments.name} line {line}: unit_code: "
                        f"unknown unit {department.unit_code}"
                    )
        staff_rows: list[StaffRow] = []
        if files.staff is not None:
            staff_rows = read_rows(_read(files.staff), StaffRow, files.staff.name)
            departments = set(db.department_codes(conn)) | {r.code for r in department_rows}
            check_staff(staff_rows, units, departments, files.staff.name)

        unit_codes = {r.code for r in unit_rows}
        db.upsert_units(conn, unit_rows, geometries)
        result.geometries = len(geometries)
        db.set_geometries(conn, {c: g for c, g in geometries.items() if c not in unit_codes})
        db.upsert_departments(conn, department_rows)

        hashes = {}
        if set_passwords:
            without = db.usernames_without_password(conn)
            for row in staff_rows:
                if row.username in without or not db.user_exists(conn, row.username):
                    result.passwords[row.username] = new_password()
                    hashes[row.username] = hash_password(result.passwords[row.username])
        db.upsert_staff(conn, staff_rows, hashes)
        node_rows: list[NodeRow] = []
        if files.nodes is not None:
            node_rows = read_rows(_read(files.nodes), NodeRow, files.nodes.name)
            for line, node in enumerate(node_rows, start=2):
                unit = units.get(node.unit_code)
                if unit is None:
                    raise InvalidFile(
                        f"{files.nodes.name} line {line}: unit_code: unknown unit {node.unit_code}"
                    )
                if unit.level.value != node.tier.value:
                    raise InvalidFile(
                        f"{files.nodes.name} line {line}: tier: a {node.tier.value} box serves "
                        f"a {node.tier.value}, {node.unit_code} is a {unit.level.value}"
                    )
            db.upsert_nodes(conn, node_rows)
        result.nodes = len(node_rows)
        camera_rows: list[CameraRow] = []
        if files.cameras is not None:
            camera_rows = read_rows(_read(files.cameras), CameraRow, files.cameras.name)
            for line, camera in enumerate(camera_rows, start=2):
                if camera.unit_code not in units:
                    raise InvalidFile(
                        f"{files.cameras.name} line {line}: unit_code: "
                        f"unknown unit {camera.unit_code}"
                    )
            db.upsert_cameras(conn, camera_rows)
        result.cameras = len(camera_rows)
        result.units, result.departments, result.staff = (
            len(unit_rows),
            len(department_rows),
            len(staff_rows),
        )
        audit.record_sync(
            conn,
            actor,
            "org.import",
            target_type="org",
            target_id=min((r.code for r in unit_rows), key=len, default=""),
            detail={
                "units": result.units,
                "departments": result.departments,
                "staff": result.staff,
                "geometries": result.geometries,
                "cameras": result.cameras,
                "nodes": result.nodes,
                "passwords_set": sorted(result.passwords),
            },
        )
    return result
