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
from tests.support.county import write_small_county
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
                self.log().count("ingest subscribed") >= before + 1
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

    def get(self, path: str, token: str = "") -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=10)

    def sign_in(self, username: str, password: str) -> str:
        response = httpx.post(
            f"http://127.0.0.1:{self.port}/api/v1/auth/token",
            data={"username": username, "password": password},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


def import_county(data_dir: Path) -> dict[str, str]:
    """The org tree into the embedded database before the service starts, as a county's IT
    officer does on a laptop; returns the passwords printed once."""
    files = write_small_county(data_dir / "county")
    env = {"CLOUD_DATABASE_URL": None, "CLOUD_DATA_DIR": str(data_dir)}
    result = CliRunner().invoke(
        cloud_cli.app,
        [
            "org",
            "import",
            "--units",
            str(files.units),
            "--staff",
            str(files.staff),
            "--departments",
            str(files.departments),
            "--set-passwords",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    return dict(re.findall(r"^password (\S+) (\S+)$", result.output, flags=re.M))


def test_serve_alone_runs_everything_and_keeps_history(tmp_path: Path) -> None:
    passwords = import_county(tmp_path)
    service = AllInOne(tmp_path)
    try:
        broker_port = service.start_all()
        token = service.sign_in("county-op", passwords["county-op"])
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
            return service.get(f"/api/v1/events/{event.event_id}", token).status_code == 200

        wait_until(stored, 30, "the event stored through the embedded services")
        assert service.stop(60) == 0
        assert not is_listening(broker_port)  # the embedded broker went down with it

        service.start_all()
        # The token from before the restart still holds: the signing key is in the database.
        body = service.get(f"/api/v1/events/{event.event_id}", token).json()

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
