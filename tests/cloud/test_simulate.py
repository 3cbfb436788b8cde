"""`gridwatch simulate` against the real service and broker: a small county's morning in
compressed time, a town's link lost and replayed, and the report that says what was stored."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cloud.demo.simulate import Publisher, app
from tests.support.cloud import ServeProcess
from tests.support.county import TEST_JWT_SECRET
from tests.support.mosquitto import MosquittoBroker
from tests.support.mqtt import MqttProbe
from tests.support.ports import wait_until


def test_a_small_county_is_stored_whole_even_across_an_outage(
    cloud_db: str, broker: MosquittoBroker, tmp_path: Path
) -> None:
    serve = ServeProcess(
        tmp_path / "serve",
        cloud_db,
        broker.url,
        ingest=True,
        CLOUD_JWT_SECRET=TEST_JWT_SECRET,
        CLOUD_INGEST_CLIENT_ID="ingest-simulate",
    ).start_listening()
    try:
        out = tmp_path / "report.json"
        result = CliRunner().invoke(
            app,
            [
                "--broker-url",
                broker.url,
                "--database-url",
                cloud_db,
                "--towns",
                "2",
                "--villages",
                "2",
                "--grids",
                "1",
                "--cameras",
                "2",
                "--hours",
                "0.25",
                "--speed",
                "60",
                "--wait-s",
                "60",
                "--out",
                str(out),
            ],
            catch_exceptions=False,
        )
    finally:
        serve.stop()
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["events_published"] > 0
    assert report["events_stored"] == report["events_published"]
    assert report["replayed"] > 0  # the town that lost its link delivered what it kept
    assert report["open_gaps"] == 0
    assert report["cases_opened"] > 0
    assert report["alert_latency_p50_s"] is not None


def test_what_the_broker_took_for_nobody_is_sent_again(broker: MosquittoBroker) -> None:
    """PUBACK 0x10 (no subscriber: ingest restarting, or a broker just back) means send it
    again later; the run ends with a report of what it could not deliver, not a crash."""
    topic = "simulate-test/qx-simulate-01/events"  # no session of another test's ingest
    publisher = Publisher(broker.url, None, None, connections=2)
    for i in range(10):
        publisher.publish(topic, f'{{"n": {i}}}'.encode())
    wait_until(lambda: publisher.unheard >= 10, 30, "ten PUBACKs saying nobody took them")
    ingest = MqttProbe(broker.port).connect()
    try:
        ingest.subscribe(topic)
        assert publisher.close(timeout_s=30) == 0
        received: set[bytes] = set()

        def all_ten() -> bool:
            received.update(m.payload for m in ingest.drain())
            return len(received) == 10

        wait_until(all_ten, 30, "the ten messages sent again")
    finally:
        ingest.close()
