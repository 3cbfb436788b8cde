"""`gridwatch simulate` against the real service and broker: a small county's morning in
compressed time, a town's link lost and replayed, and the report that says what was stored."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cloud.demo.simulate import app
from tests.support.cloud import ServeProcess
from tests.support.county import TEST_JWT_SECRET
from tests.support.mosquitto import MosquittoBroker


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
