"""Webhooks against real HTTP receivers on loopback: signed deliveries that verify, retries
with backoff, dead letters after the last attempt, filters by unit and kind, and a slow or
dead receiver that holds up nobody else."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.alerts.webhooks import SIGNATURE_HEADER, verify_signature
from cloud.app import create_app
from cloud.settings import CloudSettings
from protocols import decode
from protocols.alerts import Alert
from tests.cloud.county_fixtures import VILLAGE_NODE, County, county_database, signed_in
from tests.factories import make_detection_event
from tests.support.county import OTHER_TOWN, TOWN
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import free_port, wait_until


@dataclass
class Receiver:
    """An HTTP endpoint that records what it gets; it can fail first or hang until told."""

    fail_first: int = 0
    hold: threading.Event | None = None
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                ok = len(receiver.requests) > receiver.fail_first
                self.send_response(200 if ok else 500)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.server is not None:
            self.server.shutdown()


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("webhooks"))


def test_deliveries_are_signed_retried_and_kept_when_dead(
    county: County, broker: MosquittoBroker
) -> None:
    good, flaky = Receiver(), Receiver(fail_first=2)
    slow = Receiver(hold=threading.Event())
    other_town, crowd_only = Receiver(), Receiver()
    receivers = [good, flaky, slow, other_town, crowd_only]
    settings = CloudSettings(
        database_url=county.url,
        broker_url=broker.url,
        snapshot_dir=county.snapshots,
        case_timer_interval_s=600,
        webhook_backoff_s=0.05,
        webhook_attempts=3,
        webhook_timeout_s=30,
    )
    try:
        with TestClient(create_app(settings)) as client:
            admin = signed_in(client, county, "admin")

            def subscribe(name: str, url: str, unit: str = TOWN, **more: Any) -> dict[str, Any]:
                response = client.post(
                    "/api/v1/webhooks",
                    json={"name": name, "url": url, "unit_code": unit, **more},
                    headers=admin,
                )
                assert response.status_code == 201, response.text
                hook: dict[str, Any] = response.json()
                return hook

            hooks = {
                "good": subscribe("good", good.start()),
                "flaky": subscribe("flaky", flaky.start()),
                "slow": subscribe("slow", slow.start()),
                "dead": subscribe("dead", f"http://127.0.0.1:{free_port()}/hook"),
                "other": subscribe("other-town", other_town.start(), unit=OTHER_TOWN),
                "crowd": subscribe("crowd-only", crowd_only.start(), kinds=["crowd"]),
            }
            county.write(
                [make_detection_event(node_id=VILLAGE_NODE, camera_id="cam01", seq=1)],
                datetime.now(UTC),
            )

            def log(name: str, status: str | None = None) -> list[dict[str, Any]]:
                params = {"status": status} if status else {}
                response = client.get(
                    f"/api/v1/webhooks/{hooks[name]['webhook_id']}/deliveries",
                    params=params,
                    headers=admin,
                )
                result: list[dict[str, Any]] = response.json()
                return result

            # The healthy receiver gets it while the slow one is still holding its request.
            wait_until(lambda: len(good.requests) == 1, 30, "the good receiver's delivery")
            wait_until(lambda: len(slow.requests) == 1, 30, "the slow receiver's request")
            assert not slow.hold.is_set()  # type: ignore[union-attr]
            headers, body = good.requests[0]
            secret = hooks["good"]["secret"]
            assert verify_signature(secret, headers[SIGNATURE_HEADER], body)
            assert not verify_signature(secret, headers[SIGNATURE_HEADER], body + b" ")
            assert not verify_signature("whsec_other", headers[SIGNATURE_HEADER], body)
            alert = decode(Alert, body)
            assert (alert.org.town, alert.msg_type.value) == (TOWN, "alert")
            assert headers["Gridwatch-Alert"] == str(alert.alert_id)

            wait_until(lambda: len(flaky.requests) == 3, 30, "two failures, then success")
            wait_until(lambda: log("flaky")[0]["status"] == "delivered", 30, "flaky delivered")
            assert log("flaky")[0]["attempts"] == 3

            wait_until(lambda: bool(log("dead", "dead")), 30, "the dead letter")
            [dead] = log("dead", "dead")
            assert dead["attempts"] == 3
            assert dead["last_error"].startswith("ConnectError")
            retried = client.post(
                f"/api/v1/webhooks/{hooks['dead']['webhook_id']}/deliveries/"
                f"{dead['delivery_id']}/retry",
                headers=admin,
            )
            assert retried.json()["status"] == "pending"

            slow.hold.set()  # type: ignore[union-attr]
            wait_until(lambda: log("slow")[0]["status"] == "delivered", 30, "slow delivered")
            assert (log("other"), log("crowd")) == ([], [])
            assert (other_town.requests, crowd_only.requests) == ([], [])
            listed = {h["name"]: h for h in client.get("/api/v1/webhooks", headers=admin).json()}
            assert "secret" not in listed["good"]
            assert (
                client.get(
                    "/api/v1/webhooks", headers=signed_in(client, county, "worker")
                ).status_code
                == 403
            )
    finally:
        for receiver in receivers:
            receiver.stop()
