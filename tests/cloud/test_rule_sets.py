"""The county's case rules change only by `gridwatch cloud rules set` (or the county
admin's API): each change a new version with who and why, audited; importing staff,
starting a process or another shell's settings leave them alone."""

from __future__ import annotations

from pathlib import Path

import psycopg
from typer.testing import CliRunner

from cloud.cases.rule_sets import current
from cloud.cli import app as cloud_app

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
