"""The committed JSON Schemas, AsyncAPI document and README are what the code generates."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from protocols import CHANNELS, Channel, NodeTopic, decode_message
from protocols.export import PACKAGE_DIR, generated_files
from protocols.readme import example_topic

REPO = PACKAGE_DIR.parent


def test_committed_files_equal_the_generated_ones() -> None:
    stale = [
        str(path)
        for path, content in generated_files().items()
        if not (PACKAGE_DIR / path).exists()
        or (PACKAGE_DIR / path).read_text(encoding="utf-8") != content
    ]
    assert not stale, f"run `gridwatch protocols export`; stale: {stale}"


def test_no_schema_file_is_left_over() -> None:
    committed = {p.relative_to(PACKAGE_DIR) for p in (PACKAGE_DIR / "schemas").glob("*.json")}
    generated = {p for p in generated_files() if p.parts[0] == "schemas"}
    assert committed == generated


def test_every_readme_example_decodes_on_its_topic() -> None:
    readme = (PACKAGE_DIR / "README.md").read_text(encoding="utf-8")
    pairs = re.findall(r"Example topic: `([^`]+)`\n\n```json\n(.*?)\n```", readme, re.S)
    json_channels = [spec for spec in CHANNELS.values() if spec.payload is not None]
    assert len(pairs) == len(json_channels)
    for topic, body in pairs:
        parts, message = decode_message(topic, body.encode())
        channel = parts.channel if isinstance(parts, NodeTopic) else Channel.ALERTS
        assert type(message) is CHANNELS[channel].payload
    assert {t for t, _ in pairs} == {example_topic(s.channel) for s in json_channels}


def _node_tools() -> Path:
    node_modules = REPO / "node_modules" / "@asyncapi" / "parser"
    if not node_modules.is_dir():
        pytest.fail("node_modules missing: run `make setup` (npm ci) before the tests")
    return REPO


def test_asyncapi_document_is_valid_for_the_reference_parser() -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed to run the AsyncAPI reference parser"
    script = REPO / "tests" / "protocols" / "validate_asyncapi.mjs"
    result = subprocess.run(
        [node, str(script), str(PACKAGE_DIR / "asyncapi.json")],
        cwd=_node_tools(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert report["channels"] == len(CHANNELS)
