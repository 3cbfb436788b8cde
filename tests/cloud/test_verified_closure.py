"""Verified closure with every part real: a box runs an ONNX model on a real clip, its
intrusion opens a case through Mosquitto and ingest, people move the case through the API,
and approving it makes the service ask the box to look at the zone again; the box's answer
and its fresh snapshot come back through ingest into the case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from tests.cloud.county_fixtures import (
    VILLAGE_NODE,
    County,
    app_settings,
    county_database,
    signed_in,
)
from tests.support.agent import AgentProcess
from tests.support.cloud import IngestProcess, count
from tests.support.county import GRID
from tests.support.mosquitto import MosquittoBroker
from tests.support.ports import wait_until


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("closure"))


def lane_config(clip: Path) -> dict[str, Any]:
    """The village box watching a lane with the yolox model (vehicles seen from above)."""
    return {
        "node_id": VILLAGE_NODE,
        "version": 1,
        "issued_at": "2026-11-25T00:00:00Z",
        "model": {"backend": "onnx", "profile": "yolox_nano_416"},
        "publish": {"health_interval_s": 5, "update_interval_s": 2},
        "cameras": [
            {
                "camera_id": "cam01",
                "name": "village lane",
                "url": f"file://{clip}",
                "rules": [
                    {
                        "type": "intrusion",
                        "rule_id": "lane_vehicle",
                        "classes": ["car", "truck", "bus", "cell phone", "suitcase"],
                        "min_score": 0.4,
                        "anchor": "center",
                        "severity": "medium",
                        "zone": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]],
                    }
                ],
            }
        ],
    }


def test_approving_a_camera_case_rechecks_the_zone(
    county: County, broker: MosquittoBroker, assets_dir: Path, tmp_path: Path
) -> None:
    ingest = IngestProcess(
        tmp_path / "ingest",
        county.url,
        broker.port,
        "ingest-closure",
        CLOUD_SNAPSHOT_DIR=str(county.snapshots),  # where the API reads them
    ).start()
    agent = AgentProcess(
        tmp_path / "agent",
        VILLAGE_NODE,
        broker.port,
        config=lane_config(assets_dir / "video" / "car-detection.mp4"),
        EDGE_MODEL_DIR=str(assets_dir / "models"),
    )
    try:
        ingest.wait_subscribed()
        agent.start()
        wait_until(
            lambda: count(county.url, "SELECT count(*) FROM cases WHERE camera_id = 'cam01'") > 0,
            90,
            "a case from the box's first detection",
        )
        with TestClient(create_app(app_settings(county, broker.url))) as client:
            cases = client.get("/api/v1/cases", headers=signed_in(client, county, "worker"))
            [case] = cases.json()["items"]
            assert (case["unit_code"], case["source"], case["category"]) == (
                GRID,
                "camera",
                "intrusion",
            )
            case_id = case["case_id"]
            worker = signed_in(client, county, "worker")
            town = signed_in(client, county, "town-op")
            for headers, body in [
                (worker, {"action": "acknowledge"}),
                (town, {"action": "confirm"}),
                (town, {"action": "dispatch", "unit_code": GRID}),
                (worker, {"action": "resolve", "comment": "the car has left the lane"}),
                (town, {"action": "approve"}),
            ]:
                response = client.post(
                    f"/api/v1/cases/{case_id}/actions", json=body, headers=headers
                )
                assert response.status_code == 200, response.text

            def answered() -> dict[str, Any] | None:
                detail = client.get(f"/api/v1/cases/{case_id}", headers=town).json()
                checks = detail["checks"]
                if checks and checks[0]["status"] and checks[0]["snapshot_url"]:
                    return detail
                return None

            wait_until(lambda: answered() is not None, 60, "the box's answer to the recheck")
            detail = answered()
            assert detail is not None
            [check] = detail["checks"]
            assert check["status"] == "ok", check
            assert check["sent_at"] is not None
            assert check["rule_id"] == "lane_vehicle"
            assert isinstance(check["data"]["present"], bool)
            assert check["data"]["objects"] >= len(check["data"]["labels"])

            after = client.get(check["snapshot_url"], headers=town)
            assert after.status_code == 200
            assert after.content[:3] == b"\xff\xd8\xff"
            assert detail["before_snapshot_url"] is not None
            before = client.get(detail["before_snapshot_url"], headers=town)
            assert before.content[:3] == b"\xff\xd8\xff"
            assert before.content != after.content
            # Another unit cannot look at the recheck either.
            outsider = signed_in(client, county, "other-town-op")
            assert client.get(check["snapshot_url"], headers=outsider).status_code == 404

            close: dict[str, Any] = {"action": "close", "satisfaction": 4}
            if check["data"]["present"]:  # still seen: closing needs a reason
                refused = client.post(f"/api/v1/cases/{case_id}/actions", json=close, headers=town)
                assert refused.status_code == 400, refused.text
                close["reason"] = "the car is parked legally now"
            closed = client.post(f"/api/v1/cases/{case_id}/actions", json=close, headers=town)
            assert closed.json()["state"] == "closed"
    finally:
        agent.kill()
        ingest.kill()
