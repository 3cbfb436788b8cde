"""The events API on a real PostgreSQL: queries, pages, export, snapshots, counts, nodes,
operators' views, health and readiness."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from cloud.access import Principal, Role
from cloud.api.guards import redacted
from cloud.app import create_app
from cloud.db.timeseries import maintain, partition_name
from cloud.ingest.dead_letters import Cause, DeadLetter, write_dead_letters
from cloud.ingest.writer import Batch, BatchWriter
from cloud.org_import import OrgFiles, import_org
from cloud.settings import CloudSettings, RetentionSettings
from cloud.snapshots import LocalSnapshotStore, sha256_hex
from cloud.tiers import Level
from protocols import Channel, encode
from protocols.enums import EventKind, EventPhase, NodeStatus, SnapshotVariant, StateReason
from protocols.events import DetectionEvent, Snapshot
from protocols.fast_events import to_fast
from protocols.topics import NodeTopic, events_topic
from tests.factories import make_detection_event, make_node_health, make_node_state
from tests.support.county import COUNTY, write_small_county
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port

NODE = "qx-api-node"
NOW = datetime.now(UTC)
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg bytes" * 10


@pytest.fixture(scope="module")
def populated(
    cloud_db: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, list[DetectionEvent]]:
    snapshots = tmp_path_factory.mktemp("snapshots")
    events = [
        make_detection_event(
            node_id=NODE,
            seq=i,
            observed_at=NOW - timedelta(minutes=i),
            kind=EventKind.INTRUSION if i % 2 else EventKind.OBJECT,
            camera_id="cam01" if i < 15 else "cam02",
            score=0.5 + i / 100,
            phase=EventPhase.START,
            # The first lists the snapshot below: a picture attaches only to its own event.
            snapshots=[
                Snapshot(
                    variant=SnapshotVariant.FRAME,
                    size_bytes=len(JPEG),
                    sha256=sha256_hex(JPEG),
                    width=640,
                    height=360,
                )
            ]
            if i == 0
            else [],
        )
        for i in range(30)
    ]
    writer = BatchWriter(
        timescale=False, store=LocalSnapshotStore(snapshots), timezone=ZoneInfo("Asia/Shanghai")
    )
    health = make_node_health(node_id=NODE)
    batch = Batch(
        events=[(to_fast(e), NOW) for e in events],
        states=[(make_node_state(node_id=NODE), NOW)],
        health=[(health, encode(health), NOW)],
        snapshots=[
            (
                NodeTopic(
                    NODE,
                    Channel.SNAPSHOTS,
                    event_id=events[0].event_id,
                    variant=SnapshotVariant.FRAME,
                ),
                JPEG,
                NOW,
            )
        ],
        dead=[DeadLetter(events_topic(NODE), b"{not json", "$", "not valid JSON")],
    )
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        writer.write(conn, batch)
        conn.execute(
            "INSERT INTO seq_gaps (node_id, first_seq, last_seq) VALUES (%s, 40, 41)", (NODE,)
        )
    return cloud_db, snapshots, events


@pytest.fixture(scope="module")
def client(
    populated: tuple[str, Path, list[DetectionEvent]], broker: MosquittoBroker
) -> Iterator[TestClient]:
    url, snapshots, _ = populated
    files = write_small_county(snapshots.parent / "county")
    with psycopg.connect(url, autocommit=True) as conn:
        passwords = import_org(
            conn,
            OrgFiles(files.units, files.departments, files.staff),
            Principal("cli:test", Role.COUNTY_ADMIN, COUNTY, Level.COUNTY),
            set_passwords=True,
        ).passwords
    settings = CloudSettings(
        database_url=url, broker_url=broker.url, snapshot_dir=snapshots, metrics_open=True
    )
    with TestClient(create_app(settings)) as test_client:
        token = test_client.post(
            "/api/v1/auth/token",
            data={"username": "county-op", "password": passwords["county-op"]},
        ).json()["access_token"]
        test_client.headers["Authorization"] = f"Bearer {token}"
        yield test_client


def test_events_newest_first_with_filters(client: TestClient) -> None:
    page = client.get("/api/v1/events", params={"node_id": NODE, "limit": 1000}).json()
    times = [item["observed_at"] for item in page["items"]]
    assert len(times) == 30
    assert times == sorted(times, reverse=True)
    only = client.get(
        "/api/v1/events", params={"kind": "intrusion", "camera_id": "cam01", "min_score": 0.6}
    ).json()["items"]
    assert only
    assert {(i["kind"], i["camera_id"]) for i in only} == {("intrusion", "cam01")}
    assert all(i["score"] >= 0.6 for i in only)


def test_pages_cover_every_event_once(
    client: TestClient, populated: tuple[str, Path, list[DetectionEvent]]
) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"node_id": NODE, "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/events", params=params).json()  # type: ignore[arg-type]
        seen += [item["event_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(str(e.event_id) for e in populated[2])


def test_bad_queries_are_refused_with_a_reason(client: TestClient) -> None:
    assert client.get("/api/v1/events", params={"cursor": "garbage!"}).json() == {
        "detail": "invalid cursor"
    }
    naive = client.get("/api/v1/events", params={"from": "2026-11-25T08:00:00"})
    assert naive.status_code == 422
    assert "with its zone" in naive.json()["detail"][0]["msg"]
    assert client.get("/api/v1/events", params={"kind": "teleport"}).status_code == 422
    assert client.get("/api/v1/events", params={"limit": 5000}).status_code == 422
    assert client.get("/api/v1/nodes/a%2Fb/state").status_code in (404, 422)
    assert client.get("/api/v1/nodes/+/state").status_code == 422


def test_event_by_id_links_its_snapshot(
    client: TestClient, populated: tuple[str, Path, list[DetectionEvent]]
) -> None:
    first = populated[2][0]
    event = client.get(f"/api/v1/events/{first.event_id}").json()
    assert event["seq"] == 0
    url = event["snapshot_urls"]["frame"]
    image = client.get(url)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content == JPEG
    assert client.get(f"/api/v1/events/{first.event_id}/snapshots/crop").status_code == 404
    missing = client.get("/api/v1/events/01a211d3-73b8-7cfb-9c56-2dbaf68e978b")
    assert missing.status_code == 404


def test_csv_export_streams_every_row(client: TestClient) -> None:
    response = client.get("/api/v1/events.csv", params={"node_id": NODE})
    assert response.headers["content-type"].startswith("text/csv")
    text = response.content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 30
    assert [int(r["seq"]) for r in rows] == list(range(29, -1, -1))  # oldest first


def test_counts_per_hour_from_the_rollups(client: TestClient) -> None:
    points = client.get("/api/v1/stats/events", params={"bucket": "hour"}).json()
    assert sum(p["events"] for p in points) == 30
    assert {p["kind"] for p in points} == {"intrusion", "object"}


def test_node_state_and_health(client: TestClient) -> None:
    state = client.get(f"/api/v1/nodes/{NODE}/state").json()
    assert (state["status"], state["reason"]) == (NodeStatus.ONLINE, StateReason.CONNECTED)
    assert client.get("/api/v1/nodes/qx-never-seen/state").status_code == 404
    health = client.get(f"/api/v1/nodes/{NODE}/health").json()
    assert len(health) == 1
    assert health[0]["cameras_connected"] == 1


def test_operators_see_dead_letters_and_gaps(client: TestClient) -> None:
    dead = client.get("/api/v1/ingest/dead-letters").json()
    assert dead[0]["reason"] == "not valid JSON"
    assert dead[0]["payload_preview"] == "{not json"
    gaps = client.get("/api/v1/ingest/gaps", params={"node_id": NODE}).json()
    assert [(g["first_seq"], g["last_seq"]) for g in gaps] == [(40, 41)]


def test_dead_letters_filter_by_node_and_cause_and_page_by_id(
    client: TestClient, populated: tuple[str, Path, list[DetectionEvent]]
) -> None:
    other = "qx-flooder"
    letters = [
        DeadLetter(events_topic(other), f"{{bad {i}".encode(), "$", "not valid JSON")
        for i in range(5)
    ] + [DeadLetter(events_topic(other), b'{"old": 1}', "observed_at", "too old", Cause.TOO_OLD)]
    with psycopg.connect(populated[0], autocommit=True) as conn:
        write_dead_letters(conn, letters)
    url = "/api/v1/ingest/dead-letters"
    mine = client.get(url, params={"node_id": other}).json()
    assert len(mine) == 6
    assert [
        d["cause"] for d in client.get(url, params={"node_id": other, "cause": "too_old"}).json()
    ] == ["too_old"]
    first = client.get(url, params={"node_id": other, "limit": 4}).json()
    rest = client.get(
        url, params={"node_id": other, "limit": 4, "before_id": first[-1]["id"]}
    ).json()
    assert [d["id"] for d in first + rest] == [d["id"] for d in mine]
    assert client.get(url, params={"since": "2999-01-01T00:00:00Z"}).json() == []
    assert client.get(url, params={"cause": "nonsense"}).status_code == 422
    # Counted exactly although the table was never analysed (the estimate would say -1).
    with psycopg.connect(populated[0]) as conn:
        (kept,) = conn.execute("SELECT count(*) FROM ingest_dead_letters").fetchone() or (0,)
    scraped = {
        sample.name: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }
    assert scraped["gridwatch_ingest_dead_letter_rows"] == kept


def test_an_operator_writes_off_a_gap_no_event_will_fill(
    client: TestClient, populated: tuple[str, Path, list[DetectionEvent]]
) -> None:
    with psycopg.connect(populated[0], autocommit=True) as conn:
        (gap_id,) = conn.execute(  # a box whose seq jumped
            "INSERT INTO seq_gaps (node_id, first_seq, last_seq) "
            "VALUES ('qx-jumped', 12, 4611686018427387903) RETURNING id"
        ).fetchone() or (0,)
    url = f"/api/v1/ingest/gaps/{gap_id}/write-off"
    assert client.post(url, json={"reason": "a"}).status_code == 422
    assert client.post(url, json={"reason": "      "}).status_code == 422
    assert client.post(url, json={"reason": "bad\u0000byte"}).status_code == 422
    reason = "firmware 2.3.1 jumped its sequence counter"
    gap = client.post(url, json={"reason": reason}).json()
    assert (gap["written_off_by"], gap["write_off_reason"]) == ("county-op", reason)
    assert gap["closed_at"] is not None
    assert client.post(url, json={"reason": reason}).status_code == 409
    assert (
        client.post("/api/v1/ingest/gaps/999999999/write-off", json={"reason": reason}).status_code
        == 404
    )
    open_gaps = client.get("/api/v1/ingest/gaps", params={"node_id": "qx-jumped"}).json()
    assert open_gaps == []
    with psycopg.connect(populated[0]) as conn:
        audited = conn.execute(
            "SELECT actor, action, detail->>'reason' FROM audit_log "
            "WHERE target_type = 'seq_gap' AND target_id = %s",
            (str(gap_id),),
        ).fetchall()
    assert audited == [("county-op", "gap.write_off", reason)]


def test_an_operator_writes_off_every_gap_of_a_box_at_once(
    client: TestClient, populated: tuple[str, Path, list[DetectionEvent]]
) -> None:
    node = "qx-every-other"
    with psycopg.connect(populated[0], autocommit=True) as conn:
        conn.execute(  # a box that skipped every other seq: one gap per event
            "INSERT INTO seq_gaps (node_id, first_seq, last_seq) "
            "SELECT %s, s, s FROM generate_series(1, 2001, 2) AS s",
            (node,),
        )
    url = f"/api/v1/ingest/nodes/{node}/gaps/write-off"
    reason = "box counted its seq twice per event; fixed in firmware 2.3.2"
    assert client.post(url, json={"reason": reason}).json() == {"gaps": 1001, "events": 1001}
    assert client.post(url, json={"reason": reason}).json() == {"gaps": 0, "events": 0}
    assert client.get("/api/v1/ingest/gaps", params={"node_id": node}).json() == []
    bad = client.post("/api/v1/ingest/nodes/not a node/gaps/write-off", json={"reason": reason})
    assert bad.status_code == 422
    with psycopg.connect(populated[0]) as conn:
        audited = conn.execute(
            "SELECT detail->>'gaps' FROM audit_log WHERE target_type = 'node' "
            "AND target_id = %s AND action = 'gap.write_off'",
            (node,),
        ).fetchall()
    assert audited == [("1001",)]


def test_gaps_open_longer_than_the_reorder_window_are_scraped(
    client: TestClient, populated: tuple[str, Path, list[DetectionEvent]]
) -> None:
    def figures() -> dict[str, float]:
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples
            if sample.name in ("gridwatch_seq_gaps_open", "gridwatch_events_missing")
        }

    url = populated[0]
    before = figures()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(  # just seen: may still be the stream's order, not counted
            "INSERT INTO seq_gaps (node_id, first_seq, last_seq) VALUES ('qx-gap-metrics', 30, 39)"
        )
        assert figures() == before
        old = conn.execute(
            "INSERT INTO seq_gaps (node_id, first_seq, last_seq, detected_at) "
            "VALUES ('qx-gap-metrics', 10, 14, now() - interval '10 minutes') RETURNING id"
        ).fetchone()
        with_old = figures()
        conn.execute("UPDATE seq_gaps SET closed_at = now() WHERE id = %s", old)
    assert with_old["gridwatch_seq_gaps_open"] - before["gridwatch_seq_gaps_open"] == 1
    assert with_old["gridwatch_events_missing"] - before["gridwatch_events_missing"] == 5
    assert figures() == before  # closed: no longer missing


def test_ready_when_database_and_broker_answer(client: TestClient, cloud_db: str) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] is True
    settings = CloudSettings(database_url=cloud_db, broker_url=f"mqtt://127.0.0.1:{free_port()}")
    with TestClient(create_app(settings)) as without_broker:
        not_ready = without_broker.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["broker"] is False


def test_openapi_documents_the_event_with_an_example(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/events" in spec["paths"]
    assert spec["components"]["schemas"]["EventOut"]["examples"][0]["kind"] == "intrusion"


def test_every_endpoint_but_health_needs_a_token(client: TestClient) -> None:
    anonymous = {"Authorization": ""}
    for path in ("/api/v1/events", "/api/v1/cases", "/api/v1/nodes/x/state", "/api/v1/audit"):
        response = client.get(path, headers=anonymous)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"detail": "not signed in"}
    forged = client.get("/api/v1/events", headers={"Authorization": "Bearer a.b.c"})
    assert forged.json() == {"detail": "invalid token"}
    assert client.get("/healthz", headers=anonymous).status_code == 200


def test_upkeep_that_fails_shows_in_metrics_and_readyz_and_clears(
    client: TestClient, cloud_db: str
) -> None:
    def failing() -> dict[str, float]:
        return {
            sample.labels["job"]: sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples
            if sample.name == "gridwatch_upkeep_failing"
        }

    ahead = datetime.now(UTC) + timedelta(days=20)  # partitions not made yet
    clash = partition_name("events", ahead.date())
    with psycopg.connect(cloud_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(clash)))
        maintain(conn, timescale=False, retention=RetentionSettings(), now=ahead)
        broken = failing()
        ready = client.get("/readyz")
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(clash)))
        maintain(conn, timescale=False, retention=RetentionSettings(), now=ahead)
    assert broken == {"partitions": 1, "retention": 0}
    assert ready.status_code == 200  # the API answers all the same
    shown = {job["job"]: job for job in ready.json()["upkeep"]}
    assert shown["partitions"]["failing"] is True
    assert clash in shown["partitions"]["last_error"]
    assert failing() == {"partitions": 0, "retention": 0}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/events?camera_id=cam%00", "camera_id"),
        ("/api/v1/events.csv?label=a%00b", "label"),
        ("/api/v1/cases?q=%00", "q"),
        ("/api/v1/cases.csv?unit=51%001", "unit"),
        ("/api/v1/stats/cases?unit=%00", "unit"),
        ("/api/v1/gaps?node_id=x%00", "node_id"),
        ("/api/v1/audit?actor=%00", "actor"),
    ],
)
def test_a_nul_in_a_query_is_a_422_naming_the_field(
    client: TestClient, path: str, field: str
) -> None:
    response = client.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", field]


@pytest.mark.parametrize("title", ["bad\u0000title", "lone \ud800 surrogate"])
def test_bad_text_in_a_json_body_is_a_422_naming_the_field(client: TestClient, title: str) -> None:
    body = json.dumps({"category": "safety_hazard", "severity": "low", "title": title})
    response = client.post(
        "/api/v1/cases", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "title"]


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for response in (client.get("/api/v1/events"), client.get("/"), client.get("/healthz")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer"
    # No cache keeps what the API answers (personal data; once, secrets).
    assert client.get("/api/v1/events").headers["cache-control"] == "no-store"


def test_metrics_are_closed_unless_a_token_is_set_or_they_are_opened(cloud_db: str) -> None:
    with TestClient(create_app(CloudSettings(database_url=cloud_db))) as closed:
        refused = closed.get("/metrics")
    token = CloudSettings(database_url=cloud_db, metrics_token="scraper-secret")
    with TestClient(create_app(token)) as guarded:
        wrong = guarded.get("/metrics", headers={"Authorization": "Bearer guess"})
        right = guarded.get("/metrics", headers={"Authorization": "Bearer scraper-secret"})
    assert refused.status_code == 401
    assert "CLOUD_METRICS_TOKEN" in refused.json()["detail"]
    assert wrong.status_code == 401
    assert right.status_code == 200


@pytest.mark.parametrize(
    ("request_args", "field"),
    [
        (("GET", "/api/v1/events?to=0001-01-01T00:00:00Z"), "to"),
        (("GET", "/api/v1/stats/events?bucket=hour&from=9999-12-31T00:00:00Z"), "from"),
        (("GET", "/api/v1/ingest/dead-letters?before_id=9223372036854775808"), "before_id"),
    ],
)
def test_values_out_of_range_are_a_422_naming_the_field(
    client: TestClient, request_args: tuple[str, str], field: str
) -> None:
    response = client.request(*request_args)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


def test_nan_in_a_body_is_a_422_not_a_500(client: TestClient) -> None:
    response = client.post(
        "/api/v1/cases",
        content=b'{"category": "other", "severity": "low", "title": NaN}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "location",
    [
        "x" * 10_000,
        {"type": "Point", "coordinates": [1e308, "x"]},
        {"type": "Point", "coordinates": [200.0, 30.0]},
        {"type": "Polygon", "coordinates": [[0, 0]]},
    ],
)
def test_a_case_location_is_a_geojson_point_or_refused(
    client: TestClient, location: object
) -> None:
    response = client.post(
        "/api/v1/cases",
        json={"category": "other", "severity": "low", "title": "t", "location": location},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", "location"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/cases.csv?to=0.5", "to"),  # was read as half a second after 1970
        ("/api/v1/ingest/dead-letters?since=1700000000", "since"),
        ("/api/v1/events?from=2026-12-08T09:00:00", "from"),  # no zone: was a 400
    ],
)
def test_a_time_is_a_dated_string_with_its_zone_or_a_422(
    client: TestClient, path: str, field: str
) -> None:
    response = client.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_an_event_id_no_clock_could_make_is_a_404_not_a_500(client: TestClient) -> None:
    # Its first 48 bits name a time in the year 10486.
    response = client.get("/api/v1/events/f470e924-5acb-7510-99a5-84c6c0b5f5fe/snapshots/crop")
    assert response.status_code == 404, response.text


def test_a_nul_in_a_path_is_a_422_naming_the_parameter(client: TestClient) -> None:
    response = client.get("/api/v1/nodes/qx%00x/state")
    assert response.status_code == 422, response.text
    [refusal] = response.json()["detail"]
    assert (refusal["type"], refusal["loc"]) == ("bad_text", ["path", "node_id"])


def test_a_json_body_that_is_not_utf8_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/api/v1/cases",
        content=b'{"title": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert response.json()["detail"][0]["msg"] == "a JSON body must be UTF-8"


def test_a_405_lists_every_method_the_path_takes(client: TestClient) -> None:
    response = client.delete("/api/v1/cases")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(
    "body",
    [
        {
            "category": "other",
            "severity": "low",
            "title": "t",
            "location": {"type": "Point", "coordinates": [True, 30.0]},
        },
        {"category": "other", "severity": "low", "title": "t", "extra": 1},
    ],
)
def test_a_body_field_json_would_not_call_its_type_is_a_422(
    client: TestClient, body: dict[str, object]
) -> None:
    assert client.post("/api/v1/cases", json=body).status_code == 422


def test_resuming_after_an_unknown_alert_is_a_404(client: TestClient) -> None:
    response = client.get(
        "/api/v1/alerts", params={"after": "01a25366-d094-7a32-9903-78aaa340b9f8"}
    )
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == "after: no such alert"


def test_the_openapi_document_lists_every_refusal(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/api/v1/cases/{case_id}/actions"]
    assert set(operation["post"]["responses"]) == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "409",
        "422",
        "502",
        "503",
    }


def test_a_bug_is_a_500_in_the_usual_shape_with_the_security_headers(cloud_db: str) -> None:
    """A 500 is answered outside the middleware that adds the headers: it went without."""
    app = create_app(CloudSettings(database_url=cloud_db))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_a_body_nested_deeper_than_any_this_api_takes_is_a_422(client: TestClient) -> None:
    """600 levels made the 422's own formatting recurse too deep: a 500, and 109 KB of log."""
    body = '{"category": "other", "title": ' + "[" * 600 + "]" * 600 + "}"
    response = client.post(
        "/api/v1/cases", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"] == "a JSON body may nest 32 levels deep, no more"


@pytest.mark.parametrize(
    "secret_part",
    [
        "pass=hunter2",
        "pw=hunter2",
        "p%61ssword=hunter2",
        "client_secret=hunter2",
        "refresh_token=hunter2",
        "x-api-key=hunter2",
        "credential=hunter2",
        "signature=hunter2",
        "x=whsec_hunter2",
        "t=gwt%5Fhunter2",
    ],
)
def test_the_access_log_blanks_every_credential_a_client_puts_in_a_url(secret_part: str) -> None:
    """Each of these was logged in clear (only token, password and a few more were known)."""
    line = redacted(f'127.0.0.1:5000 - "GET /api/v1/cases?unit=5117&{secret_part} HTTP/1.1" 200')
    assert "hunter2" not in line
    assert "unit=5117" in line  # what is no secret stays readable


def test_a_422_echoes_a_long_text_cut_short(client: TestClient) -> None:
    """A 20 MB description was echoed whole in the answer that refused it."""
    response = client.post(
        "/api/v1/cases", json={"category": "other", "title": "t", "description": "x" * 100_000}
    )
    assert response.status_code == 422
    assert len(response.content) < 2_000
