"""The closed loop on a real PostgreSQL and a real broker: routing, merging, reminders,
escalation on an injected clock, joint handling, closure, the history and the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row
from uuid6 import uuid7

from cloud.app import create_app
from cloud.db.escalation import TimerStep, escalate_due, remind_due
from protocols.enums import EventKind, EventPhase, Severity, TamperReason
from tests.cloud.county_fixtures import (
    OTHER_NODE,
    VILLAGE_NODE,
    County,
    app_settings,
    county_database,
    signed_in,
)
from tests.factories import make_detection_event
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.county import COUNTY, GRID, GRID_2, OTHER_GRID, TOWN
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import wait_until


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("cases"))


@pytest.fixture(scope="module")
def client(county: County, broker: MosquittoBroker) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings(county, broker.url))) as test_client:
        yield test_client


def timers(url: str, run: str, now: datetime) -> list[TimerStep]:
    async def once() -> list[TimerStep]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            if run == "escalate":
                return await escalate_due(conn, now=now)
            return await remind_due(conn, now=now, fraction=0.2)

    return asyncio.run(once())


def cases_of(url: str, camera_id: str, node_id: str = VILLAGE_NODE) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM cases WHERE node_id = %s AND camera_id = %s ORDER BY opened_at",
            (node_id, camera_id),
        ).fetchall()


def act(
    client: TestClient, headers: dict[str, str], case_id: object, **body: object
) -> dict[str, Any]:
    response = client.post(f"/api/v1/cases/{case_id}/actions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_village_camera_event_runs_the_whole_loop(
    county: County, client: TestClient, broker: MosquittoBroker, tmp_path: Path
) -> None:
    ingest = IngestProcess(tmp_path, county.url, broker.port, "ingest-cases").start()
    nodes = FakeNodes(broker.port, tmp_path / "nodes")
    try:
        ingest.wait_subscribed()
        # Two situations at one camera: one case, two threads.
        nodes.publish(VILLAGE_NODE, [1], camera_id="cam01", severity=Severity.HIGH)
        wait_until(lambda: len(cases_of(county.url, "cam01")) == 1, 30, "a case for cam01")
        nodes.publish(VILLAGE_NODE, [2], camera_id="cam01", severity=Severity.HIGH)
        wait_until(lambda: cases_of(county.url, "cam01")[0]["event_count"] == 2, 30, "the merge")
    finally:
        nodes.close()
        ingest.stop()
    [case] = cases_of(county.url, "cam01")
    case_id = case["case_id"]
    assert (case["unit_code"], case["responsible_unit_code"], case["state"]) == (
        GRID,
        GRID,
        "intake",
    )
    assert count(county.url, "SELECT count(*) FROM case_threads WHERE case_id = %s", case_id) == 2

    # Nobody acknowledges: a reminder before the deadline, then the town at the deadline.
    assert [
        s.case_id for s in timers(county.url, "remind", case["ack_due_at"] - timedelta(seconds=1))
    ] == [case_id]
    assert timers(county.url, "remind", case["ack_due_at"] - timedelta(seconds=1)) == []
    late = case["ack_due_at"] + timedelta(seconds=1)
    [step] = timers(county.url, "escalate", late)
    assert (step.case_id, step.from_unit, step.to_unit, step.supervision_level) == (
        case_id,
        GRID,
        TOWN,
        1,
    )
    assert timers(county.url, "escalate", late) == []  # once, however often the timer runs

    town = signed_in(client, county, "town-op")
    worker = signed_in(client, county, "worker")
    assert act(client, worker, case_id, action="acknowledge")["state"] == "triage"
    refused = client.post(
        f"/api/v1/cases/{case_id}/actions", json={"action": "close"}, headers=town
    )
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        "cannot close a case in state triage; allowed now: confirm, dismiss, note, supervise"
    )
    forbidden = client.post(
        f"/api/v1/cases/{case_id}/actions", json={"action": "confirm"}, headers=worker
    )
    assert forbidden.status_code == 403
    assert act(client, town, case_id, action="confirm", severity="high")["state"] == "dispatch"
    dispatched = act(client, town, case_id, action="dispatch", departments=["police", "emergency"])
    assert dispatched["state"] == "handling"

    police = signed_in(client, county, "police")
    emergency = signed_in(client, county, "emergency")
    assert (
        act(client, police, case_id, action="resolve", comment="patrol sent")["state"] == "handling"
    )
    assert (
        act(client, emergency, case_id, action="resolve", comment="fence repaired")["state"]
        == "supervision"
    )
    assert act(client, town, case_id, action="approve")["state"] == "feedback"
    answer_recheck(county, case_id, present=False)  # the box looked again: gone
    closed = act(client, town, case_id, action="close", satisfaction=5)
    assert (closed["state"], closed["satisfaction"]) == ("closed", 5)
    assert closed["close_reason"] == "resolved and verified"
    assert closed["acknowledged_at"] <= closed["dispatched_at"] <= closed["resolved_at"]

    detail = client.get(f"/api/v1/cases/{case_id}", headers=town).json()
    assert [h["action"] for h in detail["history"]] == [
        "open",
        "merge",
        "remind",
        "escalate",
        "acknowledge",
        "confirm",
        "dispatch",
        "resolve",
        "resolve",
        "approve",
        "close",
    ]
    assert {(a["code"], a["resolved_by"]) for a in detail["assignments"]} == {
        ("police", "police"),
        ("emergency", "emergency"),
    }
    audit = client.get(
        "/api/v1/audit",
        params={"target_type": "case", "target_id": str(case_id)},
        headers=signed_in(client, county, "auditor"),
    ).json()
    assert [(a["actor"], a["action"]) for a in audit] == [
        ("worker", "case.acknowledge"),
        ("town-op", "case.confirm"),
        ("town-op", "case.dispatch"),
        ("police", "case.resolve"),
        ("emergency", "case.resolve"),
        ("town-op", "case.approve"),
        ("town-op", "case.close"),
    ]
    assert all(a["remote_addr"] for a in audit)


def test_two_instances_escalate_each_case_once(county: County) -> None:
    now = datetime.now(UTC)
    opened = [
        make_detection_event(
            node_id=OTHER_NODE,
            camera_id="cam01",
            seq=1000 + i,
            kind=kind,
            severity=Severity.MEDIUM,
            count=5,
            dwell_s=60.0,
            direction="in",
        )
        for i, kind in enumerate([EventKind.INTRUSION, EventKind.LOITERING, EventKind.CROWD])
    ]
    county.write(opened, now)
    with psycopg.connect(county.url, autocommit=True) as conn:
        due = conn.execute(
            "SELECT max(ack_due_at) FROM cases WHERE node_id = %s AND state = 'intake'",
            (OTHER_NODE,),
        ).fetchone()
    assert due is not None
    assert due[0] is not None
    late = due[0] + timedelta(seconds=1)

    async def two_instances() -> list[list[TimerStep]]:
        conns = [
            await psycopg.AsyncConnection.connect(county.url, autocommit=True) for _ in range(2)
        ]
        try:
            return list(await asyncio.gather(*(escalate_due(c, now=late) for c in conns)))
        finally:
            for c in conns:
                await c.close()

    first, second = asyncio.run(two_instances())
    escalated = [s.case_id for s in first + second]
    assert len(escalated) == len(set(escalated)) == 3
    assert (
        count(
            county.url,
            "SELECT count(*) FROM case_history h JOIN cases c USING (case_id) "
            "WHERE c.node_id = %s AND h.action = 'escalate'",
            OTHER_NODE,
        )
        == 3
    )


def test_an_emergency_starts_at_the_town(county: County) -> None:
    county.write(
        [
            make_detection_event(
                node_id=VILLAGE_NODE,
                camera_id="cam02",
                seq=2000,
                kind=EventKind.INTRUSION,
                severity=Severity.CRITICAL,
            )
        ],
        datetime.now(UTC),
    )
    [case] = cases_of(county.url, "cam02")
    assert (case["unit_code"], case["responsible_unit_code"]) == (GRID_2, TOWN)
    assert case["resolve_due_at"] - case["opened_at"] == timedelta(hours=2)


def test_motion_and_low_line_crossings_open_no_case(county: County) -> None:
    before = count(county.url, "SELECT count(*) FROM cases")
    county.write(
        [
            make_detection_event(
                node_id=VILLAGE_NODE,
                camera_id="cam02",
                seq=3000,
                kind=EventKind.MOTION,
                severity=Severity.HIGH,
            ),
            make_detection_event(
                node_id=VILLAGE_NODE,
                camera_id="cam02",
                seq=3001,
                kind=EventKind.LINE_CROSSING,
                severity=Severity.LOW,
                direction="in",
            ),
        ],
        datetime.now(UTC),
    )
    assert count(county.url, "SELECT count(*) FROM cases") == before


def test_a_camera_that_comes_back_closes_its_work_order(county: County, client: TestClient) -> None:
    start = make_detection_event(
        node_id=VILLAGE_NODE,
        camera_id="road01",
        seq=4000,
        kind=EventKind.CAMERA_TAMPER,
        tamper=TamperReason.COVERED,
        severity=Severity.MEDIUM,
        label=None,
        score=None,
        bbox=None,
        track_id=None,
        zone=None,
        snapshots=[],
    )
    county.write([start], datetime.now(UTC))
    [order] = cases_of(county.url, "road01")
    assert (order["source"], order["responsible_unit_code"], order["state"]) == (
        "fleet",
        TOWN,
        "intake",
    )
    tech = signed_in(client, county, "tech")
    # (The village box also went offline when the first test's nodes stopped: another
    # work order, of another category.)
    orders = client.get("/api/v1/cases", params={"category": "camera_tamper"}, headers=tech)
    assert [c["case_id"] for c in orders.json()["items"]] == [str(order["case_id"])]

    end = make_detection_event(
        node_id=VILLAGE_NODE,
        camera_id="road01",
        seq=4001,
        kind=EventKind.CAMERA_TAMPER,
        phase=EventPhase.END,
        thread_id=start.event_id,
        event_id=uuid7(),
        tamper=TamperReason.COVERED,
        severity=Severity.MEDIUM,
        label=None,
        score=None,
        bbox=None,
        track_id=None,
        zone=None,
        snapshots=[],
    )
    # The thread id is on every alert: another box naming it in an end closes nothing.
    forged = end.model_copy(update={"node_id": OTHER_NODE, "event_id": uuid7()})
    county.write([forged], datetime.now(UTC))
    [still] = cases_of(county.url, "road01")
    assert still["state"] == "intake"
    county.write([end], datetime.now(UTC))
    [closed] = cases_of(county.url, "road01")
    assert (closed["state"], closed["close_reason"]) == ("closed", "camera back")


def test_a_grid_worker_reports_and_a_false_alarm_keeps_its_reason(
    county: County, client: TestClient
) -> None:
    worker = signed_in(client, county, "worker")
    created = client.post(
        "/api/v1/cases",
        json={"category": "safety_hazard", "title": "桥栏杆损坏", "severity": "medium"},
        headers=worker,
    )
    assert created.status_code == 201, created.text
    case = created.json()
    assert (case["source"], case["unit_code"], case["reporter"], case["state"]) == (
        "report",
        GRID,
        "worker",
        "intake",
    )
    for body, status, detail in [
        ({"category": "ufo", "title": "x"}, 400, "category: unknown category ufo"),
        (
            {"category": "dispute", "title": "x", "unit_code": OTHER_GRID},
            400,
            f"unit_code: no unit {OTHER_GRID} in your jurisdiction",
        ),
        ({"category": "dispute", "title": ""}, 422, None),
    ]:
        response = client.post("/api/v1/cases", json=body, headers=worker)
        assert response.status_code == status, response.text
        if detail:
            assert response.json()["detail"] == detail

    village = signed_in(client, county, "village-op")
    missing_reason = client.post(
        f"/api/v1/cases/{case['case_id']}/actions", json={"action": "dismiss"}, headers=village
    )
    assert missing_reason.json()["detail"] == "reason is required to dismiss"
    dismissed = act(
        client,
        village,
        case["case_id"],
        action="dismiss",
        reason="a repair crew's barrier, not damage",
    )
    assert (dismissed["state"], dismissed["false_alarm"], dismissed["close_reason"]) == (
        "closed",
        True,
        "a repair crew's barrier, not damage",
    )
    false_alarms = client.get(
        "/api/v1/cases", params={"false_alarm": "true"}, headers=village
    ).json()["items"]
    assert [c["case_id"] for c in false_alarms] == [case["case_id"]]


def test_photos_of_a_report_are_kept_and_seen_only_inside_the_unit(
    county: County, client: TestClient, assets_dir: Path
) -> None:
    worker = signed_in(client, county, "worker")
    case_id = client.post(
        "/api/v1/cases",
        json={"category": "damaged_facility", "title": "路灯损坏 · a broken street lamp"},
        headers=worker,
    ).json()["case_id"]
    jpeg = (assets_dir / "images" / "coco_val2017_000000001532.jpg").read_bytes()
    uploaded = client.post(
        f"/api/v1/cases/{case_id}/photos",
        files={"photo": ("lamp.jpg", jpeg, "image/jpeg")},
        headers=worker,
    )
    assert uploaded.status_code == 201, uploaded.text
    photo = uploaded.json()
    not_an_image = client.post(
        f"/api/v1/cases/{case_id}/photos",
        files={"photo": ("lamp.jpg", b"GIF89a not a photo", "image/jpeg")},
        headers=worker,
    )
    assert not_an_image.json() == {"detail": "photo: not a JPEG or PNG image"}
    noted = act(
        client, worker, case_id, action="note", comment="photo attached", photos=[photo["photo_id"]]
    )
    assert noted["state"] == "intake"
    unknown = client.post(
        f"/api/v1/cases/{case_id}/actions",
        json={"action": "note", "photos": [str(uuid7())]},
        headers=worker,
    )
    assert unknown.status_code == 400
    assert unknown.json()["detail"].startswith("photos: not uploaded to this case")

    detail = client.get(f"/api/v1/cases/{case_id}", headers=worker).json()
    assert [p["photo_id"] for p in detail["photos"]] == [photo["photo_id"]]
    assert client.get(photo["url"], headers=worker).content == jpeg
    assert (
        client.get(photo["url"], headers=signed_in(client, county, "worker-2")).status_code == 404
    )


def test_the_loops_times_are_measured_per_unit(county: County, client: TestClient) -> None:
    town = signed_in(client, county, "town-op")
    stats = client.get("/api/v1/stats/cases", headers=town).json()
    # The module's earlier tests left closed and open cases in the town.
    assert stats["cases"] == sum(stats["by_state"].values()) > 0
    assert stats["open"] == stats["cases"] - stats["by_state"].get("closed", 0)
    # Cases acknowledged and resolved earlier in this module have times measured.
    assert stats["acknowledged_p90_s"] > 0
    assert stats["resolved_p90_s"] > 0

    outside = client.get("/api/v1/stats/cases", headers=signed_in(client, county, "other-worker"))
    assert outside.json()["cases"] < stats["cases"]
    with psycopg.connect(county.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM cases WHERE unit_code LIKE %s", (TOWN + "%",)
        ).fetchone()
    assert row is not None
    assert stats["cases"] == row[0]


def test_a_case_at_the_county_is_pressed_ever_less_often_not_escalated_again(
    county: County, client: TestClient
) -> None:
    """At the top tier a missed deadline raises supervision, not another escalation (nor
    another "escalated" alert), the next press waits as long as the case is old, and the
    case counts as overdue throughout."""
    event = make_detection_event(
        node_id=VILLAGE_NODE,
        camera_id="cam02",
        seq=5000,
        kind=EventKind.OBJECT,
        label="car",
        severity=Severity.MEDIUM,
    )
    county.write([event], datetime.now(UTC))

    def case() -> dict[str, Any]:
        with psycopg.connect(county.url) as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "SELECT * FROM cases WHERE first_event_id = %s", (event.event_id,)
            ).fetchone()
        assert row is not None
        return row

    def alerts() -> int:
        return count(
            county.url, "SELECT count(*) FROM alerts WHERE case_id = %s", case()["case_id"]
        )

    opened = case()["opened_at"]
    for _ in range(2):  # village → town → county
        timers(county.url, "escalate", case()["ack_due_at"] + timedelta(seconds=1))
    assert (case()["responsible_unit_code"], case()["escalations"]) == (COUNTY, 2)
    raised = alerts()
    waits = []
    for _ in range(4):
        now = case()["ack_due_at"] + timedelta(seconds=1)
        [step] = [s for s in timers(county.url, "escalate", now) if s.case_id == case()["case_id"]]
        assert step.from_unit == step.to_unit == COUNTY
        waits.append((case()["ack_due_at"] - now, now - opened))
    after = case()
    assert (after["escalations"], after["supervision_level"], after["deadlines_missed"]) == (
        2,
        6,
        6,
    )
    assert [w for w, _ in waits] == [min(age, timedelta(days=1)) for _, age in waits]
    assert waits[-1][0] > 4 * waits[0][0]  # ever less often
    assert alerts() == raised
    history = [h for h in case_history(county.url, after["case_id"]) if h != "remind"]
    assert history == ["open", "escalate", "escalate", *["supervise"] * 4]
    stats = client.get(
        "/api/v1/stats/cases",
        params={"category": "object"},
        headers=signed_in(client, county, "county-op"),
    )
    assert stats.status_code == 200, stats.text
    assert stats.json()["overdue"] == 1

    # The map's overdue is the same overdue, and a technician's map counts what their
    # pipeline counts: the fleet's work orders.
    for user in ("county-op", "tech"):
        headers = signed_in(client, county, user)
        [child] = [
            u
            for u in client.get(
                "/api/v1/fleet/units", params={"unit": TOWN}, headers=headers
            ).json()
            if after["unit_code"].startswith(u["code"])
        ]
        there = client.get(
            "/api/v1/stats/cases", params={"unit": child["code"]}, headers=headers
        ).json()
        assert (child["open_cases"], child["overdue_cases"]) == (there["open"], there["overdue"])


def case_history(url: str, case_id: object) -> list[str]:
    with psycopg.connect(url) as conn:
        return [
            action
            for (action,) in conn.execute(
                "SELECT action FROM case_history WHERE case_id = %s ORDER BY at, id", (case_id,)
            ).fetchall()
        ]


def test_a_false_alarm_does_not_come_straight_back(county: County, client: TestClient) -> None:
    """Dismissed as false: the same camera and kind open no case for the cooldown (their
    events stored and counted on the dismissed case); after it, they do again."""
    town = signed_in(client, county, "town-op")

    def crossing(seq: int) -> Any:
        return make_detection_event(
            node_id=VILLAGE_NODE,
            camera_id="cam02",
            seq=seq,
            kind=EventKind.LINE_CROSSING,
            severity=Severity.MEDIUM,
            direction="out",
        )

    first = crossing(6000)
    county.write([first], datetime.now(UTC))
    [opened] = [c for c in cases_of(county.url, "cam02") if c["first_event_id"] == first.event_id]
    act(client, town, opened["case_id"], action="dismiss", reason="a shadow on the fence")
    again = crossing(6001)
    county.write([again], datetime.now(UTC))
    assert [c for c in cases_of(county.url, "cam02") if c["first_event_id"] == again.event_id] == []
    detail = client.get(f"/api/v1/cases/{opened['case_id']}", headers=town).json()
    assert detail["suppressed_events"] == 1
    assert count(county.url, "SELECT count(*) FROM events WHERE event_id = %s", again.event_id) == 1
    with psycopg.connect(county.url, autocommit=True) as conn:  # the cooldown has passed
        conn.execute(
            "UPDATE cases SET closed_at = closed_at - interval '31 minutes' WHERE case_id = %s",
            (opened["case_id"],),
        )
    later = crossing(6002)
    county.write([later], datetime.now(UTC))
    assert [c["first_event_id"] for c in cases_of(county.url, "cam02")].count(later.event_id) == 1


def test_a_recheck_that_still_sees_it_holds_closure_until_a_reason(
    county: County, client: TestClient
) -> None:
    town = signed_in(client, county, "town-op")
    case_id = approved_camera_case(county, client, 7000)
    request_id = uuid7()
    with psycopg.connect(county.url, autocommit=True) as conn:  # the box answered: still there
        conn.execute(
            "INSERT INTO case_checks (request_id, case_id, node_id, camera_id, rule_id, "
            "requested_at, requested_by) VALUES (%s, %s, %s, 'cam01', 'lane_vehicle', now(), "
            "'town-op')",
            (request_id, case_id, VILLAGE_NODE),
        )
        conn.execute(
            "INSERT INTO command_responses (request_id, node_id, status, data, responded_at, "
            "received_at) VALUES (%s, %s, 'ok', %s, now(), now())",
            (request_id, VILLAGE_NODE, psycopg.types.json.Jsonb({"present": True})),
        )
    refused = client.post(
        f"/api/v1/cases/{case_id}/actions", json={"action": "close"}, headers=town
    )
    assert refused.status_code == 400
    assert "reason" in refused.json()["detail"]
    closed = act(client, town, case_id, action="close", reason="parked legally, checked on site")
    assert (closed["state"], closed["close_reason"]) == (
        "closed",
        "parked legally, checked on site",
    )
    detail = client.get(f"/api/v1/cases/{case_id}", headers=town).json()
    assert detail["history"][-1]["detail"]["reason"] == "parked legally, checked on site"


def answer_recheck(county: County, case_id: str, *, present: bool) -> None:
    """The box answers the case's re-checks, as its agent does."""
    with psycopg.connect(county.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO command_responses (request_id, node_id, status, data, responded_at, "
            "received_at) SELECT request_id, node_id, 'ok', %s, now(), now() FROM case_checks "
            "WHERE case_id = %s",
            (psycopg.types.json.Jsonb({"present": present}), case_id),
        )


def approved_camera_case(county: County, client: TestClient, seq: int) -> str:
    """A camera case taken through to approval, which asks the box to look again."""
    town = signed_in(client, county, "town-op")
    event = make_detection_event(
        node_id=VILLAGE_NODE,
        camera_id="cam01",
        seq=seq,
        kind=EventKind.OBJECT,
        label="car",
        severity=Severity.HIGH,
        rule_id="lane_vehicle",
    )
    county.write([event], datetime.now(UTC))
    [case] = [c for c in cases_of(county.url, "cam01") if c["first_event_id"] == event.event_id]
    worker = signed_in(client, county, "worker")
    for headers, body in [
        (worker, {"action": "acknowledge"}),
        (town, {"action": "confirm"}),
        (town, {"action": "dispatch", "unit_code": GRID}),
        (worker, {"action": "resolve", "comment": "asked the driver to move"}),
        (town, {"action": "approve"}),
    ]:
        act(client, headers, case["case_id"], **body)
    return str(case["case_id"])


def test_a_recheck_not_answered_yet_is_not_called_verified(
    county: County, client: TestClient
) -> None:
    town = signed_in(client, county, "town-op")
    case_id = approved_camera_case(county, client, 7100)
    checks = client.get(f"/api/v1/cases/{case_id}", headers=town).json()["checks"]
    assert [c["status"] for c in checks] == [None]  # asked; the box has not answered
    refused = client.post(
        f"/api/v1/cases/{case_id}/actions", json={"action": "close"}, headers=town
    )
    assert refused.status_code == 400
    assert "not been answered" in refused.json()["detail"]
    closed = act(client, town, case_id, action="close", reason="checked on site: the lane is clear")
    assert closed["close_reason"] == "checked on site: the lane is clear"
    detail = client.get(f"/api/v1/cases/{case_id}", headers=town).json()
    assert detail["history"][-1]["detail"]["recheck_unanswered"] is True


def test_a_recheck_that_no_longer_sees_it_closes_as_verified(
    county: County, client: TestClient
) -> None:
    town = signed_in(client, county, "town-op")
    case_id = approved_camera_case(county, client, 7200)
    answer_recheck(county, case_id, present=False)  # the box answers: gone
    closed = act(client, town, case_id, action="close")
    assert closed["close_reason"] == "resolved and verified"
