"""The org tree: import, export, the rules that keep jurisdiction a prefix, and the
append-only audit log, on a real PostgreSQL."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from cloud.access import Principal, Role
from cloud.db import org as db
from cloud.errors import InvalidFile
from cloud.org_files import STAFF_COLUMNS, UNIT_COLUMNS, write_rows
from cloud.org_import import OrgFiles, import_org
from cloud.tiers import Level
from gridwatch.cli import app
from tests.support.county import COUNTY, GRID, UNITS, write_large_county, write_small_county
from tests.support.postgres import fresh_database

ADMIN = Principal("cli:test", Role.COUNTY_ADMIN, COUNTY, Level.COUNTY)


@pytest.fixture
def empty_db(postgres_admin_url: str) -> str:
    from cloud.db.schema import prepare_database
    from cloud.settings import CloudSettings

    with fresh_database(postgres_admin_url, prefix="gridwatch_test_org") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        yield url


def _files(directory: Path) -> OrgFiles:
    county = write_small_county(directory)
    return OrgFiles(
        county.units,
        county.departments,
        county.staff,
        county.geometry,
        county.cameras,
        county.nodes,
    )


def test_a_county_imports_and_exports_the_same_tree(empty_db: str, tmp_path: Path) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        result = import_org(conn, _files(tmp_path), ADMIN, set_passwords=True)
        assert (result.units, result.departments, result.staff) == (len(UNITS), 3, 12)
        assert (result.cameras, result.nodes) == (4, 2)

        assert len(result.passwords) == 12
        exported = db.export_rows(conn, db.UNITS_SQL, "")
        # A second import changes nothing and makes no new passwords.
        again = import_org(conn, _files(tmp_path), ADMIN, set_passwords=True)
        assert again.passwords == {}
        hashes = conn.execute("SELECT count(*) FROM users WHERE password_hash LIKE '$argon2id$%'")
        assert hashes.fetchone() == (12,)
    written = list(csv.reader(io.StringIO(write_rows(exported, UNIT_COLUMNS))))
    assert written[0] == list(UNIT_COLUMNS)
    assert sorted(tuple(r) for r in written[1:]) == sorted(UNITS)
    grid = next(r for r in exported if r["code"] == GRID)
    assert grid["geometry"]["type"] == "Polygon"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("511725106201009,511725999,grid,x,", "line 12: parent_code: unknown unit 511725999"),
        (
            "511725106209,511725106201,village,x,",
            "line 12: parent_code: a village belongs to a town",
        ),
        ("511725107201,511725106,village,x,", "line 12: code: 511725107201 must extend 511725106"),
        ("5117251062019,511725106201,grid,x,", "have 15-character codes, 5117251062019 has 13"),
        ("511725106201003,511725106201,block,x,", "line 12: level: Input should be"),
        ("511725106201001,511725106201,grid,again,", "code: 511725106201001 appears twice"),
        ("511725106201003,511725106201,grid,,", "line 12: name: Field required"),
    ],
)
def test_a_bad_unit_line_is_refused_by_line_and_field(
    empty_db: str, tmp_path: Path, line: str, expected: str
) -> None:
    files = _files(tmp_path)
    assert files.units is not None
    files.units.write_text(files.units.read_text() + line + "\n")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(InvalidFile, match=expected):
            import_org(conn, files, ADMIN)
        assert conn.execute("SELECT count(*) FROM org_units").fetchone() == (0,)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("bob,Bob,grid_worker,511725106,,,full_time,", "a grid_worker works at a grid"),
        ("bob,Bob,department_officer,511725,,,full_time,", "department_code: required"),
        ("bob,Bob,department_officer,511725,fire,,full_time,", "unknown department fire"),
        ("bob,Bob,mayor,511725,,,full_time,", "line 14: role: Input should be"),
        ("bob,Bob,grid_worker,511725106201001,,,always,", "line 14: employment"),
    ],
)
def test_a_bad_staff_line_is_refused(
    empty_db: str, tmp_path: Path, row: str, expected: str
) -> None:
    files = _files(tmp_path)
    assert files.staff is not None
    files.staff.write_text(files.staff.read_text() + row + "\n")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(InvalidFile, match=expected):
            import_org(conn, files, ADMIN)
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_a_camera_of_an_unknown_unit_is_refused(empty_db: str, tmp_path: Path) -> None:
    files = _files(tmp_path)
    assert files.cameras is not None
    files.cameras.write_text(files.cameras.read_text() + "qx-new-01,cam01,511725106201099\n")
    with (
        psycopg.connect(empty_db, autocommit=True) as conn,
        pytest.raises(InvalidFile, match=r"cameras\.csv line 6: unit_code: unknown unit"),
    ):
        import_org(conn, files, ADMIN)


def test_a_node_serves_a_unit_of_its_tier(empty_db: str, tmp_path: Path) -> None:
    files = _files(tmp_path)
    assert files.nodes is not None
    files.nodes.write_text(files.nodes.read_text() + "qx-town-01,511725106201,town\n")
    with (
        psycopg.connect(empty_db, autocommit=True) as conn,
        pytest.raises(InvalidFile, match=r"nodes\.csv line 4: tier: a town box serves a town"),
    ):
        import_org(conn, files, ADMIN)


def test_a_file_with_unknown_columns_is_refused(empty_db: str, tmp_path: Path) -> None:
    files = _files(tmp_path)
    assert files.staff is not None
    files.staff.write_text(",".join(STAFF_COLUMNS) + ",password\n")
    with (
        psycopg.connect(empty_db, autocommit=True) as conn,
        pytest.raises(InvalidFile, match=r"staff\.csv line 1: unknown columns password"),
    ):
        import_org(conn, files, ADMIN)


def test_a_county_of_613_grids_loads_at_once(empty_db: str, tmp_path: Path) -> None:
    county = write_large_county(tmp_path)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        result = import_org(
            conn, OrgFiles(county.units, county.departments, county.staff, county.geometry), ADMIN
        )
        levels = dict(conn.execute("SELECT level, count(*) FROM org_units GROUP BY level"))
    assert levels == {"county": 1, "town": 40, "village": 400, "grid": 613}
    assert (result.staff, result.geometries) == (613, 613)


def test_the_audit_log_refuses_changes(empty_db: str, tmp_path: Path) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        import_org(conn, _files(tmp_path), ADMIN)
        entry = conn.execute(
            "SELECT actor, action, detail FROM audit_log WHERE action <> 'case_rules.set'"
        ).fetchone()
        assert entry is not None
        assert entry[:2] == ("cli:test", "org.import")
        for statement in (
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)


def test_the_command_line_imports_and_prints_passwords_once(
    empty_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    county = write_small_county(tmp_path / "in")
    monkeypatch.setenv("CLOUD_DATABASE_URL", empty_db)
    monkeypatch.setenv("CLOUD_TIMESCALE", "off")
    runner = CliRunner()
    imported = runner.invoke(
        app,
        [
            "cloud",
            "org",
            "import",
            "--units",
            str(county.units),
            "--departments",
            str(county.departments),
            "--staff",
            str(county.staff),
            "--set-passwords",
        ],
    )
    assert imported.exit_code == 0, imported.output
    assert imported.output.count("password ") == 12
    bad = runner.invoke(app, ["cloud", "org", "import", "--units", str(county.staff)])
    assert bad.exit_code == 2
    assert "units.csv" not in bad.output
    assert "staff.csv line 1: missing columns" in bad.output
    exported = runner.invoke(app, ["cloud", "org", "export", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert "password" not in (tmp_path / "out" / "staff.csv").read_text()
    exported_lines = (tmp_path / "out" / "units.csv").read_text().splitlines()
    assert sorted(exported_lines) == sorted(county.units.read_text().splitlines())
