"""Imports flow one way, and only protocols spells a topic."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = {"protocols", "firmware_configs", "edge", "cloud", "provisioning", "gridwatch"}
ALLOWED = {
    "protocols": {"protocols"},
    "firmware_configs": {"protocols", "firmware_configs"},
    "edge": {"protocols", "firmware_configs", "edge"},
    "cloud": {"protocols", "firmware_configs", "cloud"},
    "provisioning": {"protocols", "firmware_configs", "provisioning"},
    "gridwatch": {"gridwatch"},  # subcommands are imported by name, lazily
}
# protocols stays small enough for any box and any app: these and the standard library.
PROTOCOLS_THIRD_PARTY = {"pydantic", "orjson", "msgspec", "typer"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def package_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_what_they_may(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted((imported_roots(path) & PROJECT) - ALLOWED[package])
        for path in package_files(package)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_protocols_needs_only_its_codecs() -> None:
    import sys

    stdlib = set(sys.stdlib_module_names)
    for path in package_files("protocols"):
        third_party = imported_roots(path) - stdlib - PROJECT - {"__future__"}
        assert third_party <= PROTOCOLS_THIRD_PARTY, (path, third_party)


def test_only_protocols_spells_a_topic() -> None:
    spelled = [
        str(path.relative_to(REPO))
        for package in PROJECT - {"protocols"} | {"bench"}
        for path in (REPO / package).rglob("*.py")
        if "gw/v1" in path.read_text(encoding="utf-8")
    ]
    assert spelled == []
