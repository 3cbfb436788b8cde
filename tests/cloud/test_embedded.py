"""`gridwatch cloud serve` with nothing configured: its own PostgreSQL and Mosquitto, ingest in
the same process, and the history kept in the data directory across a restart."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx2 as httpx
import pytest
from typer.testing import CliRunner

from cloud import cli as cloud_cli
from protocols import encode
from protocols.topics import events_topic
from tests.factories import make_detection_event
from tests.support.mqtt import MqttProbe
from tests.support.ports import free_port, is_listening, wait_until
from tests.support.processes import GridwatchProcess


class AllInOne(GridwatchProcess):
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("CLOUD_DATABASE_URL", "CLOUD_BROKER_URL")
        }
        env |= {"CLOUD_DATA_DIR": str(data_dir), "CLOUD_PORT": str(self.port)}
        super().__init__(["cloud", "serve"], data_dir / "serve.log", env)

    def start_all(self) -> int:
        """Start; return the embedded broker's port once the API answers and ingest listens."""
        before = self.log().count("ingest subscribed")
        self.start()
        wait_until(
            lambda: (
                self.log().count("ingest subscribed") >= before + 7
                or self.process.poll() is not None
            ),  # type: ignore[union-attr]
            90,
            "serve with embedded services",
        )
        assert self.process is not None
        assert self.process.poll() is None, self.log()
        wait_until(lambda: is_listening(self.port), 30, "the API listening")
        ports = re.findall(r"EMBEDDED Mosquitto on 127\.0\.0\.1:(\d+)", self.log())
        return int(ports[-1])

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)


def test_serve_alone_runs_everything_and_keeps_history(tmp_path: Path) -> None:
    service = AllInOne(tmp_path)
    try:
        broker_port = service.start_all()
        assert "EMBEDDED PostgreSQL" in service.log()
        assert service.get("/readyz").status_code == 200

        event = make_detection_event(node_id="qx-embedded-node")
        probe = MqttProbe(broker_port).connect()
        try:
            reason = probe.publish(events_topic(event.node_id), encode(event))
        finally:
            probe.close()
        assert reason is not None
        assert reason.value == 0  # not 0x10: ingest's subscription heard it

        def stored() -> bool:
            return service.get(f"/api/v1/events/{event.event_id}").status_code == 200

        wait_until(stored, 30, "the event stored through the embedded services")
        assert service.stop(60) == 0
        assert not is_listening(broker_port)  # the embedded broker went down with it

        service.start_all()
        body = service.get(f"/api/v1/events/{event.event_id}").json()
        assert body["node_id"] == "qx-embedded-node"
        assert service.stop(60) == 0

    finally:
        service.kill()


def test_without_mosquitto_serve_says_what_to_do(
    cloud_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cloud.broker.MOSQUITTO", str(tmp_path / "no-mosquitto"))
    env = {"CLOUD_DATABASE_URL": cloud_db, "CLOUD_DATA_DIR": str(tmp_path)}
    monkeypatch.delenv("CLOUD_BROKER_URL", raising=False)
    result = CliRunner().invoke(cloud_cli.app, ["serve"], env=env)
    assert result.exit_code == 2
    assert "CLOUD_BROKER_URL" in result.output
    assert "apt-get install mosquitto" in result.output
