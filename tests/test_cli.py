"""The umbrella command loads each deployable only when it is used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
import sys
from typer.testing import CliRunner
from gridwatch.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = {"fastapi", "uvicorn", "psycopg", "onnxruntime", "cv2", "balena", "paho"}
print(result.exit_code)
print(" ".join(sorted(m for m in heavy if m in sys.modules)))
"""


def loaded_by(*args: str) -> tuple[int, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    code, modules = result.stdout.splitlines()[-2:]
    return int(code), set(modules.split())


def test_top_level_help_imports_no_deployable() -> None:
    code, modules = loaded_by("--help")
    assert code == 0
    assert modules == set()


@pytest.mark.parametrize(
    ("command", "forbidden"),
    [
        ("edge", {"fastapi", "uvicorn", "psycopg", "balena"}),
        ("cloud", {"onnxruntime", "cv2", "balena"}),
        ("provision", {"fastapi", "onnxruntime", "cv2"}),
        ("protocols", {"fastapi", "onnxruntime", "cv2", "balena", "psycopg", "paho"}),
    ],
)
def test_a_subcommand_does_not_import_the_other_deployables(
    command: str,
    forbidden: set[str],
) -> None:
    code, modules = loaded_by(command, "--help")
    assert code == 0
    assert modules & forbidden == set()


def test_unknown_subcommand_is_a_usage_error() -> None:
    code, _ = loaded_by("nonsense")
    assert code == 2


def test_protocols_export_check_passes_on_the_committed_files() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gridwatch", "protocols", "export", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_command_on_a_database_without_a_county_says_so(postgres_admin_url: str) -> None:
    from tests.support.postgres import fresh_database

    with fresh_database(postgres_admin_url, prefix="gridwatch_test_empty") as url:
        result = subprocess.run(
            [sys.executable, "-m", "gridwatch", "cloud", "org", "passwd", "worker"],
            env={**os.environ, "CLOUD_DATABASE_URL": url},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "CLOUD_DATABASE_URL holds no gridwatch county" in result.stderr
