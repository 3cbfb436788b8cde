"""The fleet: liveness from last wills and heartbeats, flapping suppression, work orders for
sick boxes with thresholds, config drift and commands — against a real edge agent that is
killed and restarted, a real broker, a real service process and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from cloud.db.fleet import NodeView
from cloud.fleet.monitor import check_fleet, decide
from cloud.ingest.writer import Batch
from cloud.settings import FleetSettings
from protocols import encode
from protocols.enums import ConfigStatus, EventKind, NodeStatus, Severity, StateReason, StreamStatus
from protocols.health import CameraHealth, OutboxHealth
from protocols.topics import config_desired_topic
from tests.cloud.county_fixtures import OTHER_NODE, VILLAGE_NODE, County, county_database
from tests.conftest import BrokerFactory
from tests.factories import (
    make_config_report,
    make_detection_event,
    make_node_health,
    make_node_state,
)
from tests.support.agent import AgentProcess, motion_config
from tests.support.cloud import ServeProcess, count
from tests.support.county import OTHER_TOWN, OTHER_VILLAGE, TEST_JWT_SECRET, VILLAGE
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import wait_until

FLEET = FleetSettings()
# For tests that move the monitor's clock far ahead of the real time at which reports were
# stored: heartbeats that never go stale, so only what the test does changes a status.
PATIENT = FleetSettings(heartbeat_s=3600)
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def view(status: str, since: datetime | None = T0, **health: Any) -> NodeView:
    return NodeView("n1", status, status, since, **health)


# ---- the rules, without a database ----------------------------------------------------


def test_a_short_drop_opens_nothing_a_long_one_a_work_order() -> None:
    short = decide([view("offline")], {}, set(), FLEET, T0 + timedelta(seconds=60))
    assert short.open == []
    late = T0 + timedelta(seconds=FLEET.offline_after_s)
    [problem] = decide([view("offline")], {}, set(), FLEET, late).open
    assert (problem.category, problem.detail) == ("node_offline", "offline for 120 s")
    back = decide([view("online")], {}, {("n1", "node_offline")}, FLEET, late)
    assert back.close == [("n1", "node_offline")]


def test_a_flapping_node_gets_one_flapping_order_not_one_per_drop() -> None:
    late = T0 + timedelta(hours=1)
    flapping = decide([view("offline")], {"n1": FLEET.flap_changes}, set(), FLEET, late)
    assert [p.category for p in flapping.open] == ["node_flapping"]
    # Calmer, but not yet calm: the order stays; calm (fewer than two changes): it closes.
    opened = {("n1", "node_flapping")}
    assert decide([view("online")], {"n1": 2}, opened, FLEET, late).close == []
    assert decide([view("online")], {"n1": 1}, opened, FLEET, late).close == [
        ("n1", "node_flapping")
    ]


def test_health_thresholds_open_past_the_limit_and_close_clearly_below() -> None:
    full = {"disk_used_bytes": 91, "disk_total_bytes": 100}
    assert [p.category for p in decide([view("online", **full)], {}, set(), FLEET, T0).open] == [
        "disk_full"
    ]
    opened = {("n1", "disk_full")}
    near = {"disk_used_bytes": 87, "disk_total_bytes": 100}  # below 90 %, not below 85 %
    assert decide([view("online", **near)], {}, opened, FLEET, T0).close == []
    freed = {"disk_used_bytes": 80, "disk_total_bytes": 100}
    assert decide([view("online", **freed)], {}, opened, FLEET, T0).close == [("n1", "disk_full")]
    # A box that is offline reports nothing new: its health orders are left as they are.
    assert decide([view("offline", **freed)], {}, opened, FLEET, T0).close == []

    backlog = {"outbox_depth": 10, "outbox_oldest_age_s": FLEET.outbox_backlog_age_s + 1}
    [problem] = decide([view("online", **backlog)], {}, set(), FLEET, T0).open
    assert problem.category == "outbox_backlog"
    rejected = decide([view("online", config_error="model: unknown profile")], {}, set(), FLEET, T0)
    assert [p.detail for p in rejected.open] == ["config rejected: model: unknown profile"]


# ---- the monitor on the database, with its clock moved by the test -------------------


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("fleet"))


def fleet_orders(url: str, node_id: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT category, state, coalesce(close_reason, '') FROM cases "
            "WHERE node_id = %s AND source = 'fleet' AND camera_id IS NULL ORDER BY opened_at",
            (node_id,),
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def check(url: str, now: datetime, fleet: FleetSettings = PATIENT) -> None:
    with psycopg.connect(url) as conn:
        run = check_fleet(conn, fleet, now)
    assert not run.skipped


def alerts_of(url: str, node_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT kind, msg_type FROM alerts WHERE node_id = %s ORDER BY seq", (node_id,)
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_a_last_will_held_past_the_hold_down_opens_a_work_order_until_the_box_is_back(
    county: County,
) -> None:
    now = datetime.now(UTC)
    gone = make_node_state(
        node_id=OTHER_NODE, status=NodeStatus.OFFLINE, reason=StateReason.CONNECTION_LOST
    )
    county.write_batch(Batch(states=[(gone, now)]))
    county.write_batch(Batch(states=[(gone, now)]))  # the will, redelivered
    check(county.url, now)
    assert fleet_orders(county.url, OTHER_NODE) == []  # not yet: a drop may be short
    check(county.url, now + timedelta(seconds=PATIENT.offline_after_s + 1))
    check(county.url, now + timedelta(seconds=PATIENT.offline_after_s + 6))  # still one order
    assert fleet_orders(county.url, OTHER_NODE) == [("node_offline", "intake", "")]
    with psycopg.connect(county.url) as conn:
        row = conn.execute(
            "SELECT unit_code, responsible_unit_code FROM cases WHERE node_id = %s",
            (OTHER_NODE,),
        ).fetchone()
    assert row == (OTHER_VILLAGE, OTHER_TOWN)  # the town's technician answers it
    assert alerts_of(county.url, OTHER_NODE) == [("node_offline", "alert")]

    back = make_node_state(node_id=OTHER_NODE, status=NodeStatus.ONLINE)
    county.write_batch(Batch(states=[(back, datetime.now(UTC))]))
    check(county.url, now + timedelta(seconds=PATIENT.offline_after_s + 10))
    assert fleet_orders(county.url, OTHER_NODE) == [("node_offline", "closed", "node back online")]
    assert alerts_of(county.url, OTHER_NODE)[-1] == ("node_offline", "cancel")


def test_silence_makes_a_node_offline_unless_ingest_itself_is_stalled(county: County) -> None:
    fleet = FleetSettings(offline_after_s=0)
    node = "qx-silent-01"
    now = datetime.now(UTC)
    health = make_node_health(node_id=node)
    county.write_batch(Batch(health=[(health, encode(health), now)]))
    check(county.url, now, fleet)
    silent = now + timedelta(seconds=fleet.heartbeat_s * fleet.missed_heartbeats + 1)
    with psycopg.connect(county.url, autocommit=True) as conn:
        # Ingest committed nothing for a while: silence says nothing about the node.
        conn.execute(
            "INSERT INTO ingest_progress (client_id, committed_at, batch_size, lag_ms) "
            "VALUES ('fleet-test', %s, 1, 0)",
            (now,),
        )
        check(county.url, silent, fleet)
        assert fleet_orders(county.url, node) == []
        # Ingest is alive and hears others, not this node: offline, a work order at once.
        conn.execute(
            "UPDATE ingest_progress SET committed_at = %s WHERE client_id = 'fleet-test'",
            (silent,),
        )
        check(county.url, silent, fleet)
        conn.execute("DELETE FROM ingest_progress WHERE client_id = 'fleet-test'")
    assert fleet_orders(county.url, node) == [("node_offline", "intake", "")]


def test_a_flapping_link_opens_one_flapping_order_and_no_offline_orders(county: County) -> None:
    fleet = FleetSettings(heartbeat_s=3600, offline_after_s=0, flap_changes=4, flap_window_s=60)
    node = "qx-flaky-01"
    start = datetime.now(UTC)
    for i in range(7):
        status = NodeStatus.ONLINE if i % 2 == 0 else NodeStatus.OFFLINE
        reason = StateReason.CONNECTED if i % 2 == 0 else StateReason.CONNECTION_LOST
        state = make_node_state(node_id=node, status=status, reason=reason)
        county.write_batch(Batch(states=[(state, datetime.now(UTC))]))
        check(county.url, start + timedelta(seconds=10 * i), fleet)
    orders = fleet_orders(county.url, node)
    # Two drops before the link counted as flapping opened and closed an order each; from
    # the fourth change on, one flapping order and no more offline orders.
    assert [c for c, _, _ in orders].count("node_flapping") == 1
    assert ("node_offline", "intake", "") not in orders
    assert orders[-1][:2] == ("node_flapping", "intake")
    # A window later, online and calm: the flapping order closes, and no other opens.
    check(county.url, start + timedelta(seconds=60 + fleet.flap_window_s + 1), fleet)
    assert fleet_orders(county.url, node)[-1] == (
        "node_flapping",
        "closed",
        "node link stable again",
    )


def test_restarts_in_order_are_not_flapping_but_a_drop_after_them_counts(county: County) -> None:
    """A box restarted in order (its agent says clean_shutdown) three times in a window has
    not lost its link: no flapping order. Drops of the link still count."""
    fleet = FleetSettings(heartbeat_s=3600, offline_after_s=3600, flap_changes=4, flap_window_s=600)
    node = "qx-restarted-01"
    start = datetime.now(UTC)
    at = iter(range(0, 600, 10))

    def say(status: NodeStatus, reason: StateReason) -> None:
        state = make_node_state(node_id=node, status=status, reason=reason)
        county.write_batch(Batch(states=[(state, datetime.now(UTC))]))
        check(county.url, start + timedelta(seconds=next(at)), fleet)

    say(NodeStatus.ONLINE, StateReason.CONNECTED)
    for _ in range(3):
        say(NodeStatus.OFFLINE, StateReason.CLEAN_SHUTDOWN)
        say(NodeStatus.ONLINE, StateReason.CONNECTED)
    assert fleet_orders(county.url, node) == []
    for _ in range(2):
        say(NodeStatus.OFFLINE, StateReason.CONNECTION_LOST)
        say(NodeStatus.ONLINE, StateReason.CONNECTED)
    assert [c for c, _, _ in fleet_orders(county.url, node)] == ["node_flapping"]


def test_a_camera_order_closes_when_its_box_reports_the_camera_streaming_again(
    county: County,
) -> None:
    """The offline situation's end never came (the agent was restarted while the camera
    was down and does not know it had one open): the box's health, made wholly after the
    order's latest event, says the camera streams again, and the order closes."""
    fleet = PATIENT
    offline = make_detection_event(
        node_id=OTHER_NODE,
        camera_id="cam01",
        seq=9100,
        kind=EventKind.CAMERA_OFFLINE,
        severity=Severity.MEDIUM,
    )
    county.write([offline], datetime.now(UTC))

    def camera_order() -> tuple[str, str]:
        with psycopg.connect(county.url) as conn:
            row = conn.execute(
                "SELECT state, coalesce(close_reason, '') FROM cases WHERE node_id = %s "
                "AND camera_id = 'cam01' AND category = 'camera_offline' "
                "ORDER BY opened_at DESC LIMIT 1",
                (OTHER_NODE,),
            ).fetchone()
        assert row is not None
        return str(row[0]), str(row[1])

    assert camera_order()[0] != "closed"
    streaming = CameraHealth(
        camera_id="cam01",
        status=StreamStatus.CONNECTED,
        input_fps=10,
        analysed_fps=5,
        reconnects=1,
        connected_fraction=1.0,
    )
    health = make_node_health(node_id=OTHER_NODE, cameras=[streaming])
    # Too soon: the report's interval may still cover the outage.
    county.write_batch(Batch(health=[(health, encode(health), datetime.now(UTC))]))
    check(county.url, datetime.now(UTC), fleet)
    assert camera_order()[0] != "closed"
    later = datetime.now(UTC) + timedelta(seconds=2 * fleet.heartbeat_s + 1)
    county.write_batch(Batch(health=[(health, encode(health), later)]))
    check(county.url, later, fleet)
    assert camera_order() == ("closed", "camera streaming again (its box's health)")


def test_a_full_disk_a_backlog_and_a_rejected_config_open_orders_that_close_when_fixed(
    county: County,
) -> None:
    node = VILLAGE_NODE
    now = datetime.now(UTC)
    online = make_node_state(node_id=node, status=NodeStatus.ONLINE)
    sick = make_node_health(
        node_id=node,
        disk_used_bytes=95,
        disk_total_bytes=100,
        outbox=OutboxHealth(depth=50_000, oldest_age_s=3600, bytes=1, budget_bytes=2),
    )
    rejected = make_config_report(
        node_id=node,
        version=3,
        status=ConfigStatus.REJECTED,
        running_version=2,
        errors=[{"field": "model", "message": "unknown model profile 'x'"}],
    )
    county.write_batch(
        Batch(states=[(online, now)], health=[(sick, encode(sick), now)], reports=[(rejected, now)])
    )
    check(county.url, now)
    assert sorted(c for c, s, _ in fleet_orders(county.url, node) if s != "closed") == [
        "config_rejected",
        "disk_full",
        "outbox_backlog",
    ]
    well = make_node_health(node_id=node, disk_used_bytes=50, disk_total_bytes=100)
    applied = make_config_report(node_id=node, version=4, status=ConfigStatus.APPLIED)
    later = datetime.now(UTC)
    county.write_batch(Batch(health=[(well, encode(well), later)], reports=[(applied, later)]))
    check(county.url, later)
    assert sorted((c, s, r) for c, s, r in fleet_orders(county.url, node)) == [
        ("config_rejected", "closed", "config applied"),
        ("disk_full", "closed", "disk space freed"),
        ("outbox_backlog", "closed", "outbox drained"),
    ]


# ---- end to end: a real agent killed and restarted, the service in its own process ---


METRICS_TOKEN = "a scraper's token for this test"


def scraped(url: str) -> dict[tuple[str, str], float]:
    """(sample name, first label value) → value, from the service's /metrics."""
    response = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    figures: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            label = next(iter(sample.labels.values()), "")
            key = (sample.name, label)
            figures[key] = figures.get(key, 0.0) + sample.value
    return figures


def api(serve: ServeProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=serve.base, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def desired_body(config: dict[str, Any]) -> dict[str, Any]:
    """A NodeConfig as `PUT /nodes/{id}/config` takes it: the service numbers and dates it."""
    return {k: v for k, v in config.items() if k not in ("node_id", "version", "issued_at")}


def node_of(client: httpx.Client, node_id: str) -> dict[str, Any] | None:
    response = client.get(f"/nodes/{node_id}")
    return response.json() if response.status_code == 200 else None


def test_a_real_box_online_commanded_reconfigured_killed_and_back(
    county: County, broker: MosquittoBroker, assets_dir: Path, tmp_path: Path
) -> None:
    clip = assets_dir / "video" / "car-detection.mp4"
    serve = ServeProcess(
        tmp_path / "serve",
        county.url,
        broker.url,
        ingest=True,
        CLOUD_JWT_SECRET=TEST_JWT_SECRET,
        CLOUD_FLEET__OFFLINE_AFTER_S="0",
        CLOUD_FLEET__CHECK_INTERVAL_S="0.2",
        CLOUD_INGEST_CLIENT_ID="ingest-fleet",
        CLOUD_SNAPSHOT_DIR=str(county.snapshots),
        CLOUD_METRICS_TOKEN=METRICS_TOKEN,
    ).start_listening()
    agent = AgentProcess(
        tmp_path / "agent",
        VILLAGE_NODE,
        broker.port,
        config=motion_config(VILLAGE_NODE, clip, version=5, cameras=2),
    )
    try:
        town = api(serve, serve.sign_in("town-op", county.passwords["town-op"]))
        other = api(serve, serve.sign_in("other-town-op", county.passwords["other-town-op"]))
        agent.start()

        def reported(field: str, value: object) -> bool:
            node = node_of(town, VILLAGE_NODE)
            return node is not None and node[field] == value

        wait_until(lambda: reported("cameras_connected", 2), 60, "the box online, 2 cameras")
        node = node_of(town, VILLAGE_NODE)
        assert node is not None
        assert (node["status"], node["unit_code"], node["config_version"]) == (
            "online",
            VILLAGE,
            5,
        )
        assert [c["camera_id"] for c in node["cameras"]][:2] == ["cam01", "cam02"]
        # The other town does not see this box at all.
        assert VILLAGE_NODE not in [n["node_id"] for n in other.get("/fleet/nodes").json()]
        assert other.get(f"/nodes/{VILLAGE_NODE}").status_code == 404

        # A command, and the box's answer.
        sent = town.post(f"/nodes/{VILLAGE_NODE}/commands", json={"command": "identify"})
        assert sent.status_code == 202, sent.text
        request_id = sent.json()["request_id"]
        wait_until(
            lambda: (
                town.get(f"/nodes/{VILLAGE_NODE}/commands/{request_id}").json()["status"] == "ok"
            ),
            30,
            "the box's answer to identify",
        )
        bad = town.post(f"/nodes/{VILLAGE_NODE}/commands", json={"command": "format_disk"})
        assert bad.status_code == 422

        # A new desired config: numbered above what the box runs, applied, in sync.
        configs_audited = "SELECT count(*) FROM audit_log WHERE action = 'node.config'"
        audited = count(county.url, configs_audited)
        config = motion_config(VILLAGE_NODE, clip, cameras=1)
        body = desired_body(config)
        put = town.put(f"/nodes/{VILLAGE_NODE}/config", json=body)
        assert put.status_code == 200, put.text
        # (Above 5, and above the versions earlier tests reported for this node.)
        version = put.json()["version"]
        assert version > 5
        wait_until(
            lambda: (
                (n := node_of(town, VILLAGE_NODE)) is not None
                and n["config"]["state"] == "in_sync"
                and n["cameras_total"] == 1
            ),
            60,
            "the new config applied",
        )
        # One the box cannot run: refused by the box, the drift names the error.
        broken = {**body, "model": {"backend": "onnx", "profile": "no_such_model"}}
        assert town.put(f"/nodes/{VILLAGE_NODE}/config", json=broken).status_code == 200
        wait_until(
            lambda: (
                (n := node_of(town, VILLAGE_NODE)) is not None
                and n["config"]["state"] == "rejected"
            ),
            60,
            "the broken config rejected",
        )
        drift = node_of(town, VILLAGE_NODE)["config"]  # type: ignore[index]
        assert (drift["desired"]["version"], drift["reported"]["running_version"]) == (
            version + 1,
            version,
        )
        assert drift["reported"]["errors"][0]["field"] == "model"
        assert "no_such_model" in drift["reported"]["errors"][0]["message"]
        typo = town.put(f"/nodes/{VILLAGE_NODE}/config", json={**body, "camras": []})
        assert typo.status_code == 422
        assert count(county.url, configs_audited) == audited + 2

        # Killed: its last will makes it offline on the screen, and a work order opens.
        agent.kill()
        wait_until(lambda: reported("status", "offline"), 30, "the box shown offline")
        wait_until(
            lambda: ("node_offline", "intake", "") in fleet_orders(county.url, VILLAGE_NODE),
            30,
            "a node_offline work order",
        )
        overview = town.get("/fleet/overview").json()
        assert overview["offline"] >= 1
        assert overview["worst"][0]["node_id"] == VILLAGE_NODE
        # Its last report had its camera connected; offline, no camera reaches the county.
        assert overview["worst"][0]["cameras_connected"] == 0
        assert reported("cameras_connected", 0)

        # Back: online again, the order closes by itself.
        agent.start()
        wait_until(lambda: reported("status", "online"), 60, "the box back online")
        wait_until(
            lambda: (
                ("node_offline", "closed", "node back online")
                in fleet_orders(county.url, VILLAGE_NODE)
            ),
            30,
            "the work order closed",
        )
        units = {u["code"]: u for u in town.get("/fleet/units").json()}
        assert units[VILLAGE]["nodes"] == 1
        assert sum(u["nodes"] for u in units.values()) == 1
        hours = town.get(f"/nodes/{VILLAGE_NODE}/health/hourly").json()
        assert sum(h["samples"] for h in hours) >= 2

        # What Prometheus scrapes: ingest, the fleet and the work orders' alerts.
        metrics_url = f"http://127.0.0.1:{serve.port}/metrics"
        assert httpx.get(metrics_url, timeout=10).status_code == 401
        wait_until(
            lambda: (
                scraped(metrics_url).get(("gridwatch_alert_delivery_seconds_count", "mqtt"), 0) >= 2
            ),
            30,
            "the offline alert and its cancel published",
        )
        figures = scraped(metrics_url)
        assert figures[("gridwatch_ingest_messages_total", "health")] >= 2
        assert figures[("gridwatch_ingest_messages_total", "config_reported")] >= 3
        assert figures[("gridwatch_nodes", "online")] >= 1
        assert figures[("gridwatch_ingest_batch_size_count", "")] >= 1
    finally:
        agent.stop()
        serve.stop()


def test_a_config_issued_while_the_broker_is_away_reaches_the_box_when_it_is_back(
    county: County, broker_factory: BrokerFactory, assets_dir: Path, tmp_path: Path
) -> None:
    broker = broker_factory()  # its own: this test stops it
    serve = ServeProcess(
        tmp_path / "serve",
        county.url,
        broker.url,
        ingest=False,
        CLOUD_JWT_SECRET=TEST_JWT_SECRET,
        CLOUD_FLEET__CONFIG_RETRY_AFTER_S="1",
    ).start_listening()
    try:
        other = api(serve, serve.sign_in("other-town-op", county.passwords["other-town-op"]))
        config = motion_config(OTHER_NODE, assets_dir / "video" / "car-detection.mp4")
        body = desired_body(config)

        broker.stop()
        put = other.put(f"/nodes/{OTHER_NODE}/config", json=body)
        assert put.status_code == 503
        assert "kept and will be published" in put.text
        kept = other.get(f"/nodes/{OTHER_NODE}/config").json()
        assert kept["published_at"] is None

        broker.start()
        wait_until(
            lambda: other.get(f"/nodes/{OTHER_NODE}/config").json()["published_at"] is not None,
            60,
            "the kept config published",
        )
        # What the box gets when it subscribes: the kept version, retained by the broker.
        retained = retained_message(broker.port, config_desired_topic(OTHER_NODE))
        assert retained["version"] == kept["version"]
        assert len(retained["cameras"]) == 1
    finally:
        serve.stop()


def retained_message(port: int, topic: str) -> dict[str, Any]:
    received: list[bytes] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda *args: received.append(args[2].payload)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(lambda: bool(received), 10, f"the retained message on {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    message: dict[str, Any] = orjson.loads(received[0])
    return message


def test_a_box_reporting_the_highest_config_version_gets_a_clear_409_not_a_500(
    county: County, broker: MosquittoBroker, assets_dir: Path, tmp_path: Path
) -> None:
    with psycopg.connect(county.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO config_reports (node_id, version, status, running_version, errors, "
            "reported_at, received_at) VALUES (%s, 2147483647, 'applied', 2147483647, '[]', "
            "now(), now()) ON CONFLICT (node_id) DO UPDATE SET version = excluded.version, "
            "running_version = excluded.running_version",
            (OTHER_NODE,),
        )
    serve = ServeProcess(
        tmp_path / "serve", county.url, broker.url, ingest=False, CLOUD_JWT_SECRET=TEST_JWT_SECRET
    ).start_listening()
    try:
        other = api(serve, serve.sign_in("other-town-op", county.passwords["other-town-op"]))
        config = motion_config(OTHER_NODE, assets_dir / "video" / "car-detection.mp4")
        put = other.put(f"/nodes/{OTHER_NODE}/config", json=desired_body(config))
    finally:
        serve.stop()
        with psycopg.connect(county.url, autocommit=True) as conn:
            conn.execute("DELETE FROM config_reports WHERE node_id = %s", (OTHER_NODE,))
    assert put.status_code == 409, put.text
    assert "2147483647" in put.json()["detail"]


def test_a_config_read_and_put_back_keeps_the_camera_passwords(
    county: County, broker: MosquittoBroker, assets_dir: Path, tmp_path: Path
) -> None:
    """The config the API shows masks each password; put back with one setting changed, the
    mask went to the box as its camera's password."""
    serve = ServeProcess(
        tmp_path / "serve", county.url, broker.url, ingest=False, CLOUD_JWT_SECRET=TEST_JWT_SECRET
    ).start_listening()
    try:
        other = api(serve, serve.sign_in("other-town-op", county.passwords["other-town-op"]))
        body = desired_body(motion_config(OTHER_NODE, assets_dir / "video" / "car-detection.mp4"))
        body["cameras"][0] |= {"username": "admin", "password": "cam-pass-1"}
        assert other.put(f"/nodes/{OTHER_NODE}/config", json=body).status_code == 200
        shown = other.get(f"/nodes/{OTHER_NODE}/config").json()["config"]
        assert shown["cameras"][0]["password"] == "********"
        shown["publish"]["health_interval_s"] = 60
        assert other.put(f"/nodes/{OTHER_NODE}/config", json=shown).status_code == 200
    finally:
        serve.stop()
    with psycopg.connect(county.url) as conn:
        [config] = conn.execute(
            "SELECT config FROM node_configs WHERE node_id = %s ORDER BY version DESC LIMIT 1",
            (OTHER_NODE,),
        ).fetchone()
    assert config["publish"]["health_interval_s"] == 60
    assert config["cameras"][0]["password"] == "cam-pass-1"
