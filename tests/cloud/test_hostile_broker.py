"""Hostile nodes and apps against a county broker configured exactly as `gridwatch cloud
broker sync` configures one (password file + the dynamic-security plugin), with a real
ingest storing into a real PostgreSQL: a SUBSCRIBE beyond an account's rights is refused
when it is made, so nobody drains a share of the ingest group; nobody takes another's
client id; nothing larger than the protocol allows gets in; and the service's publishers
and ingest say the truth when the broker refuses them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr

from cloud.app import create_app
from cloud.broker import MosquittoConfig
from cloud.broker_acl import INGEST_ROLE, AppAccountRow
from cloud.broker_control import BrokerControl
from cloud.ingest.subscriber import Subscriber
from cloud.ingest.worker import subscriptions
from cloud.org_files import read_rows
from cloud.settings import CloudSettings
from protocols import Receipt, decode, encode
from protocols.base import utc_now
from protocols.catalog import max_packet_bytes
from protocols.enums import SnapshotVariant
from protocols.events import MAX_SNAPSHOT_BYTES
from protocols.passwords import hash_password
from protocols.topics import (
    Channel,
    alerts_filter,
    all_nodes_filter,
    config_desired_topic,
    events_topic,
    health_topic,
    node_commands_filter,
    node_filter,
    node_topic,
    receipts_topic,
    shared,
    snapshot_topic,
)
from tests.cloud.county_fixtures import OTHER_NODE, VILLAGE_NODE, County, county_database
from tests.conftest import REPO
from tests.factories import make_detection_event
from tests.support.cloud import FakeNodes, IngestProcess, count
from tests.support.county import OTHER_TOWN, TOWN
from tests.support.mosquitto import ADMIN_PASSWORD, CountyBroker, county_broker
from tests.support.mqtt import MqttProbe
from tests.support.ports import free_port, wait_until

NOT_AUTHORIZED = 0x87
SERVICE_PASSWORD = "the service accounts' password"
NODE_PASSWORDS = {VILLAGE_NODE: "village-box-password", OTHER_NODE: "hostile-box-password"}
APP = "app.town-106"
APP_PASSWORD = "the town app's password"
# ingest.2 and api.2 run nothing: a process given the wrong one is refused by the broker.
SERVICES = ["ingest.1", "ingest.2", "api.1", "api.2"]


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def broker(county: County, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountyBroker]:
    with psycopg.connect(county.url, autocommit=True) as conn:
        for node_id, password in NODE_PASSWORDS.items():
            conn.execute(
                "INSERT INTO node_credentials (node_id, password_hash, issued_by) "
                "VALUES (%s, %s, 'test')",
                (node_id, hash_password(password)),
            )
    directory = tmp_path_factory.mktemp("county-broker")
    apps = directory / "apps.csv"
    apps.write_text(f"username,unit_code\n{APP},{TOWN}\n")
    extra = directory / "app-passwords"
    extra.write_text(f"{APP}:{hash_password(APP_PASSWORD)}\n")
    county_broker_ = county_broker(
        directory / "broker",
        county.url,
        SERVICE_PASSWORD,
        services=SERVICES,
        apps=_app_rows(apps),
        extra_passwords=extra,
    )
    county_broker_.start()
    yield county_broker_
    county_broker_.stop()


def _app_rows(apps: Path) -> list[AppAccountRow]:
    return read_rows(apps.read_text(), AppAccountRow, apps.name)


@pytest.fixture(scope="module")
def ingest(
    county: County, broker: CountyBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IngestProcess]:
    process = IngestProcess(
        tmp_path_factory.mktemp("ingest"),
        county.url,
        broker.port,
        "ingest.1",
        CLOUD_BROKER_USERNAME="ingest.1",
        CLOUD_BROKER_PASSWORD=SERVICE_PASSWORD,
    ).start()
    process.wait_subscribed()
    yield process
    process.kill()


def node(broker: CountyBroker, node_id: str, client_id: str | None = None) -> MqttProbe:
    return MqttProbe(
        broker.port,
        username=node_id,
        password=NODE_PASSWORDS[node_id],
        client_id=client_id or node_id,
    )


def app(broker: CountyBroker) -> MqttProbe:
    return MqttProbe(broker.port, username=APP, password=APP_PASSWORD, client_id=APP)


def ingest_group_filters() -> list[str]:
    return subscriptions(CloudSettings())


def test_a_node_may_subscribe_only_to_its_own_config_and_commands(
    broker: CountyBroker,
) -> None:
    hostile = node(broker, OTHER_NODE).connect()
    try:
        forbidden = [
            *ingest_group_filters(),
            shared(all_nodes_filter(Channel.EVENTS), "mine"),
            all_nodes_filter(Channel.EVENTS),
            config_desired_topic(VILLAGE_NODE),
            node_commands_filter(VILLAGE_NODE),
            node_filter(VILLAGE_NODE),
            node_filter(OTHER_NODE),  # its own subtree holds its reports: not to be read
            alerts_filter("511725"),
            "#",
        ]
        answers = {f: hostile.subscribe(f).value for f in forbidden}
        assert answers == dict.fromkeys(forbidden, NOT_AUTHORIZED)
        assert not hostile.subscribe(config_desired_topic(OTHER_NODE)).is_failure
        assert not hostile.subscribe(node_commands_filter(OTHER_NODE)).is_failure
    finally:
        hostile.close()


def test_an_app_may_subscribe_only_to_its_jurisdictions_alerts(broker: CountyBroker) -> None:
    town_app = app(broker).connect()
    try:
        forbidden = [
            *ingest_group_filters(),
            all_nodes_filter(Channel.EVENTS),
            config_desired_topic(VILLAGE_NODE),
            alerts_filter("511725"),
            alerts_filter("511725", OTHER_TOWN),
            "#",
        ]
        answers = {f: town_app.subscribe(f).value for f in forbidden}
        assert answers == dict.fromkeys(forbidden, NOT_AUTHORIZED)
        # Both forms the protocol README shows for following a jurisdiction, and a narrower
        # filter inside it.
        allowed = [
            alerts_filter("511725", TOWN),
            f"gw/v1/alerts/511725/{TOWN}/#",
            f"gw/v1/alerts/511725/{TOWN}/+/+/fire",
        ]
        assert [town_app.subscribe(f).is_failure for f in allowed] == [False] * len(allowed)
    finally:
        town_app.close()


def test_every_event_is_stored_while_a_node_and_an_app_try_to_drain_the_ingest_group(
    county: County, broker: CountyBroker, ingest: IngestProcess, tmp_path: Path
) -> None:
    hostile, town_app = node(broker, OTHER_NODE).connect(), app(broker).connect()
    nodes = FakeNodes(broker.port, tmp_path, passwords=NODE_PASSWORDS)
    try:
        for probe in (hostile, town_app):
            for topic_filter in [*ingest_group_filters(), all_nodes_filter(Channel.EVENTS)]:
                probe.subscribe(topic_filter)
        nodes.publish(VILLAGE_NODE, range(1, 41))
        wait_until(lambda: stored(county) == 40, 60, "all 40 events stored")
        assert nodes.delivered()
        assert hostile.drain() == []
        assert town_app.drain() == []
    finally:
        nodes.close()
        hostile.close()
        town_app.close()


def stored(county: County) -> int:
    """The well-behaved node's events 1-40, as ingest stored them."""
    return count(
        county.url,
        "SELECT count(*) FROM events WHERE node_id = %s AND seq BETWEEN 1 AND 40",
        VILLAGE_NODE,
    )


def test_only_ingest_says_what_is_stored_and_a_node_reads_only_its_own_receipts(
    broker: CountyBroker, ingest: IngestProcess
) -> None:
    """A receipt makes a box forget its events: a box forging one for another (or an API
    account) is refused, nobody reads another box's, and ingest's own arrive."""
    hostile = node(broker, OTHER_NODE).connect()
    api = MqttProbe(
        broker.port, username="api.1", password=SERVICE_PASSWORD, client_id="api.1"
    ).connect()
    honest = node(broker, VILLAGE_NODE).connect()
    try:
        assert hostile.subscribe(receipts_topic(VILLAGE_NODE)).value == NOT_AUTHORIZED
        assert not hostile.subscribe(receipts_topic(OTHER_NODE)).is_failure
        forged = encode(Receipt(node_id=VILLAGE_NODE, sent_at=utc_now(), seqs=[(0, 10**6)]))
        for sender in (hostile, api):
            for target in (VILLAGE_NODE, OTHER_NODE):
                reason = sender.publish(receipts_topic(target), forged)
                assert reason is not None
                assert reason.value == NOT_AUTHORIZED
        assert not honest.subscribe(receipts_topic(VILLAGE_NODE)).is_failure
        for seq in range(5001, 5011):
            event = make_detection_event(node_id=VILLAGE_NODE, seq=seq)
            assert honest.publish(events_topic(VILLAGE_NODE), encode(event)) is not None
        receipted: set[int] = set()

        def all_receipted() -> bool:
            for message in honest.drain():
                receipt = decode(Receipt, message.payload)
                assert receipt.node_id == VILLAGE_NODE
                receipted.update(s for a, b in receipt.seqs for s in range(a, b + 1))
            return receipted >= set(range(5001, 5011))

        wait_until(all_receipted, 30, "ingest's receipts for the 10 events")
        assert hostile.drain() == []
    finally:
        for probe in (hostile, api, honest):
            probe.close()


def test_ingest_may_remove_a_retained_copy_only_where_the_protocol_keeps_none(
    broker: CountyBroker,
) -> None:
    second = MqttProbe(
        broker.port, username="ingest.2", password=SERVICE_PASSWORD, client_id="ingest.2"
    ).connect()
    try:
        allowed = [events_topic(VILLAGE_NODE), health_topic(OTHER_NODE)]
        kept = [node_topic(VILLAGE_NODE, Channel.STATE), config_desired_topic(VILLAGE_NODE)]
        answers = {t: second.publish(t, b"", retain=True) for t in allowed + kept}
        assert {t: answers[t].is_failure for t in allowed} == dict.fromkeys(allowed, False)
        assert {t: answers[t].value for t in kept} == dict.fromkeys(kept, NOT_AUTHORIZED)
    finally:
        second.close()


def test_no_account_can_take_a_nodes_client_id(broker: CountyBroker) -> None:
    victim = node(broker, VILLAGE_NODE).connect()
    try:
        for username, password in [
            (OTHER_NODE, NODE_PASSWORDS[OTHER_NODE]),
            (APP, APP_PASSWORD),
            ("api.2", SERVICE_PASSWORD),
        ]:
            thief = MqttProbe(
                broker.port, username=username, password=password, client_id=VILLAGE_NODE
            )
            with pytest.raises(ConnectionRefusedError, match="Not authorized"):
                thief.connect()
            thief.client.loop_stop()
        # A round trip after the attempts: had the victim been thrown off, it would know.
        assert not victim.publish(events_topic(VILLAGE_NODE), b"{}").is_failure
        assert victim.disconnects == []
    finally:
        victim.close()


def test_nothing_larger_than_the_protocol_allows_gets_in(broker: CountyBroker) -> None:
    box = node(broker, VILLAGE_NODE).connect()
    try:
        event_id = make_detection_event(node_id=VILLAGE_NODE).event_id
        topic = snapshot_topic(VILLAGE_NODE, event_id, SnapshotVariant.FRAME)
        # The largest snapshot the protocol allows goes through...
        assert not box.publish(topic, b"\xff" * MAX_SNAPSHOT_BYTES).is_failure
        assert box.disconnects == []
        # ...a larger packet than any channel allows ends the connection.
        box.client.publish(topic, b"\xff" * max_packet_bytes(), qos=1)
        wait_until(lambda: box.disconnects != [], 10, "the broker to drop the sender")
        assert f"{VILLAGE_NODE} disconnected due to oversize packet" in broker.log()
    finally:
        box.close()


def refused_alerts() -> float:
    value = REGISTRY.get_sample_value(
        "gridwatch_broker_refused_total", {"channel": "alerts", "reason": "Not authorized"}
    )
    return value or 0.0


def unpublished_alerts(county: County) -> int:
    return count(county.url, "SELECT count(*) FROM alerts WHERE mqtt_published_at IS NULL")


def test_an_alert_the_broker_refuses_stays_unpublished_and_is_counted(
    county: County, broker: CountyBroker
) -> None:
    county.write(
        [make_detection_event(node_id=VILLAGE_NODE, camera_id="cam01", seq=1000)],
        datetime.now(UTC),
    )
    assert unpublished_alerts(county) > 0
    before = refused_alerts()

    def settings(username: str) -> CloudSettings:
        return CloudSettings(
            database_url=county.url,
            broker_url=broker.url,
            broker_username=username,
            broker_password=SecretStr(SERVICE_PASSWORD),
            snapshot_dir=county.snapshots,
            case_timer_interval_s=600,
        )

    # An account that may not publish alerts: the broker answers each PUBACK "Not
    # authorized", and the relay leaves them for later.
    with TestClient(create_app(settings("ingest.2"))):
        wait_until(lambda: refused_alerts() > before, 30, "the refusal counted")
    assert unpublished_alerts(county) > 0
    # With the API's own account they go out, and are marked.
    with TestClient(create_app(settings("api.1"))):
        wait_until(lambda: unpublished_alerts(county) == 0, 30, "the alerts published")


def test_ingest_refused_its_subscriptions_is_not_ready_and_retries(
    county: County, broker: CountyBroker, tmp_path: Path
) -> None:
    port = free_port()
    process = IngestProcess(
        tmp_path,
        county.url,
        broker.port,
        "api.2",
        CLOUD_BROKER_USERNAME="api.2",  # an API account: it may not join the ingest group
        CLOUD_BROKER_PASSWORD=SERVICE_PASSWORD,
        CLOUD_INGEST_METRICS_PORT=str(port),
        CLOUD_METRICS_OPEN="true",
    ).start()
    try:
        wait_until(
            lambda: "refused ingest's subscriptions" in process.log(), 30, "the refusal logged"
        )

        def readyz() -> httpx.Response:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)

        wait_until(lambda: _answers(readyz), 30, "ingest's status server")
        answer = readyz()
        assert answer.status_code == 503
        assert "NOT_AUTHORIZED" in answer.json()["ingest_refused"]
        # It asks again (with growing waits), and says so once.
        wait_until(lambda: broker.log().count("as api.2 (") >= 3, 30, "ingest's third subscription")
        assert process.log().count("refused ingest's subscriptions") == 1
        # The broker's operator mends the account (which disconnects it); ingest gets in.
        with BrokerControl(
            "127.0.0.1", broker.port, username="sync.admin", password=ADMIN_PASSWORD
        ) as control:
            mend = {"command": "addClientRole", "username": "api.2", "rolename": INGEST_ROLE}
            control.call([mend])
        process.wait_subscribed(60)
        assert readyz().status_code == 200
    finally:
        process.kill()
        broker.sync()  # back to the registry's rules: api.2 loses the ingest role


def _answers(request: Callable[[], httpx.Response]) -> bool:
    try:
        request()
    except httpx.HTTPError:
        return False
    return True


def test_serve_reports_an_ingest_whose_subscriptions_were_refused(
    county: County, broker: CountyBroker
) -> None:
    settings = CloudSettings(
        database_url=county.url,
        broker_url=broker.url,
        broker_username="api.2",
        broker_password=SecretStr(SERVICE_PASSWORD),
        snapshot_dir=county.snapshots,
    )
    subscriber = Subscriber(
        settings,
        "api.2",
        subscriptions(settings),
        on_message=lambda message: None,
        receive_max=10,
        session_expiry_s=0,
    )
    subscriber.start()
    try:
        wait_until(lambda: subscriber.refusal is not None, 30, "the refusal")
        api = settings.model_copy(update={"broker_username": "api.1"})  # its own client id
        with TestClient(create_app(api, ingest=subscriber)) as client:
            answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["ingest_subscribed"] is False
        assert "NOT_AUTHORIZED" in answer.json()["ingest_refused"]
    finally:
        subscriber.stop()


def test_the_readme_shows_the_county_broker_config_as_rendered(tmp_path: Path) -> None:
    rendered = MosquittoConfig(
        directory=tmp_path,
        port=8883,
        password_file=Path("/var/lib/mosquitto/gridwatch/passwd"),
        dynsec_file=Path("/var/lib/mosquitto/gridwatch/dynsec.json"),
    ).render()
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("### The county broker") :].split("```")[1]
    for line in block.strip().splitlines():
        if line.split()[0] in (
            "plugin",
            "plugin_opt_config_file",
            "password_file",
            "max_packet_size",
            "max_inflight_messages",
            "max_queued_messages",
        ):
            assert line in rendered.splitlines(), line
    assert f"max_packet_size {max_packet_bytes()}" in block
