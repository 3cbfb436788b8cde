"""The county's case rules change only by `gridwatch cloud rules set` (or the county
admin's API): each change a new version with who and why, audited; importing staff,
starting a process or another shell's settings leave them alone."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloud.app import create_app
from cloud.cases.rule_sets import current
from cloud.cli import app as cloud_app
from tests.cloud.county_fixtures import County, app_settings, county_database, signed_in
from tests.support.mosquitto import MosquittoBroker

SEVERITIES = ("low", "medium", "high", "critical")
SHORT = "deadlines:\n" + "".join(f"  {s}: {{ack_s: 60, resolve_s: 600}}\n" for s in SEVERITIES)
LONG = "deadlines:\n" + "".join(f"  {s}: {{ack_s: 7200, resolve_s: 86400}}\n" for s in SEVERITIES)
STAFF = "username,display_name,role,unit_code,department_code\n"


def medium_ack_s(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT ack_s FROM case_rules WHERE category = 'intrusion' AND severity = 'medium'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_rules_change_by_their_command_alone(cloud_db: str, tmp_path: Path) -> None:
    short, long = tmp_path / "short.yaml", tmp_path / "long.yaml"
    short.write_text(SHORT)
    long.write_text(LONG)
    env = {"CLOUD_DATABASE_URL": cloud_db}
    runner = CliRunner()
    done = runner.invoke(
        cloud_app, ["rules", "set", str(short), "--reason", "the demo's deadlines"], env=env
    )
    assert done.exit_code == 0, done.output
    assert medium_ack_s(cloud_db) == 60

    # Another shell, with another rules file in its settings: a migrate and an import of
    # one staff row leave the rules in force alone.
    other = {**env, "CLOUD_CASE_RULES_FILE": str(long)}
    assert runner.invoke(cloud_app, ["migrate"], env=other).exit_code == 0
    staff = tmp_path / "staff.csv"
    staff.write_text(STAFF)
    imported = runner.invoke(cloud_app, ["org", "import", "--staff", str(staff)], env=other)
    assert imported.exit_code == 0, imported.output
    assert medium_ack_s(cloud_db) == 60

    show = runner.invoke(cloud_app, ["rules", "show"], env=env)
    assert show.exit_code == 0
    assert "the demo's deadlines" in show.output
    assert "ack_s: 60" in show.output
    refused = runner.invoke(cloud_app, ["rules", "set", str(long), "--reason", " "], env=env)
    assert refused.exit_code == 2
    assert "reason" in refused.output
    assert medium_ack_s(cloud_db) == 60

    with psycopg.connect(cloud_db) as conn:
        found = current(conn)
        audit = conn.execute(
            "SELECT actor, target_id, detail->>'reason' FROM audit_log "
            "WHERE action = 'case_rules.set' ORDER BY id"
        ).fetchall()
    assert found is not None
    version = found[0]
    assert audit[-1][1:] == (str(version), "the demo's deadlines")
    assert audit[-1][0].startswith("cli:")


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("rules"))


@pytest.fixture(scope="module")
def client(county: County, broker: MosquittoBroker) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings(county, broker.url))) as test_client:
        yield test_client


def test_the_county_admin_sets_rules_by_api_and_everyone_who_works_cases_reads_them(
    county: County, client: TestClient
) -> None:
    admin = signed_in(client, county, "admin")
    shown = client.get("/api/v1/case-rules", headers=admin)
    assert shown.status_code == 200, shown.text
    before = shown.json()
    rules = copy.deepcopy(before["rules"])
    rules["deadlines"]["medium"] = {"ack_s": 90, "resolve_s": 900}

    # Who may not set them: every other role, whatever the body.
    change = {"rules": rules, "reason": "night shift", "based_on": before["version"]}
    for user in ("county-op", "town-op", "worker", "police", "tech", "auditor"):
        headers = signed_in(client, county, user)
        assert client.put("/api/v1/case-rules", json=change, headers=headers).status_code == 403
    assert medium_ack_s(county.url) != 90
    # Everyone who works cases may read the deadlines they are held to.
    for user in ("county-op", "town-op", "worker", "police", "tech"):
        headers = signed_in(client, county, user)
        assert client.get("/api/v1/case-rules", headers=headers).status_code == 200

    # Bad rules are refused naming the field, and change nothing.
    bad = {**change, "rules": {**rules, "deadlines": {"low": {"ack_s": 60, "resolve_s": 30}}}}
    refused = client.put("/api/v1/case-rules", json=bad, headers=admin)
    assert refused.status_code == 422
    assert "deadlines" in refused.text
    assert (
        client.put("/api/v1/case-rules", json={**change, "reason": ""}, headers=admin).status_code
        == 422
    )

    done = client.put("/api/v1/case-rules", json=change, headers=admin)
    assert done.status_code == 200, done.text
    after = done.json()
    assert after["version"] == before["version"] + 1
    assert (after["set_by"], after["reason"]) == ("admin", "night shift")
    assert medium_ack_s(county.url) == 90

    # A second admin who edited the old version does not undo the first's change.
    stale = client.put("/api/v1/case-rules", json={**change, "reason": "other"}, headers=admin)
    assert stale.status_code == 409
    assert "based_on" in stale.text

    history = client.get("/api/v1/case-rules/versions", headers=admin).json()
    assert [v["version"] for v in history[:2]] == [after["version"], before["version"]]
    old = client.get(f"/api/v1/case-rules/versions/{before['version']}", headers=admin).json()
    assert old["deadlines"]["medium"] == before["rules"]["deadlines"]["medium"]
    assert client.get("/api/v1/case-rules/versions/9999", headers=admin).status_code == 404
    with psycopg.connect(county.url) as conn:
        audit = conn.execute(
            "SELECT actor, target_id FROM audit_log WHERE action = 'case_rules.set' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert audit == ("admin", str(after["version"]))


def test_a_newer_gridwatchs_work_orders_join_the_rules_as_a_version_that_says_so(
    cloud_db: str, tmp_path: Path
) -> None:
    """Rules set before a kind of work order existed would open none for it: migrating adds
    the missing kinds with their defaults, as a new version, and changes nothing else."""
    old = tmp_path / "old.yaml"
    old.write_text(SHORT + "categories:\n  intrusion: {min_severity: high}\n")
    env = {"CLOUD_DATABASE_URL": cloud_db}
    runner = CliRunner()
    done = runner.invoke(cloud_app, ["rules", "set", str(old), "--reason", "old"], env=env)
    assert done.exit_code == 0, done.output
    assert runner.invoke(cloud_app, ["migrate"], env=env).exit_code == 0
    with psycopg.connect(cloud_db) as conn:
        found = current(conn)
    assert found is not None
    _, rules, record = found
    assert record["reason"].startswith("new kinds of work order: camera_offline")
    assert "node_suspended" in rules.categories
    assert rules.categories["intrusion"].min_severity == "high"
    assert rules.deadlines["medium"].ack_s == 60
    again = runner.invoke(cloud_app, ["migrate"], env=env)
    assert again.exit_code == 0
    with psycopg.connect(cloud_db) as conn:
        assert current(conn) == found  # nothing missing: no new version
