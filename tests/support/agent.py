"""Run a real edge agent process (`gridwatch edge run`) against a test broker."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from tests.support.ports import free_port
from tests.support.processes import GridwatchProcess


def motion_config(
    node_id: str, clip: Path, *, version: int = 1, cameras: int = 1, **publish: Any
) -> dict[str, Any]:
    """A NodeConfig needing no model: motion rules on looping file cameras."""
    return {
        "node_id": node_id,
        "version": version,
        "issued_at": "2026-11-25T00:00:00Z",
        "model": {"backend": "motion"},
        "publish": {"health_interval_s": 5, "update_interval_s": 2, **publish},
        "cameras": [
            {
                "camera_id": f"cam{i + 1:02d}",
                "name": f"lane {i + 1}",
                "url": f"file://{clip}",
                "offline_grace_s": 5,
                "rules": [
                    {"type": "motion", "rule_id": "lane_motion", "min_area": 0.01, "cooldown_s": 0}
                ],
            }
            for i in range(cameras)
        ],
    }


class AgentProcess(GridwatchProcess):
    def __init__(
        self,
        directory: Path,
        node_id: str,
        broker_port: int,
        *,
        config: dict[str, Any] | None = None,
        **env: str,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.node_id = node_id
        self.data_dir = directory / "data"
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "EDGE_NODE_ID": node_id,
            "EDGE_BROKER_URL": f"mqtt://127.0.0.1:{broker_port}",
            "EDGE_DATA_DIR": str(self.data_dir),
            "EDGE_METRICS_PORT": str(self.metrics_port),
            "EDGE_KEEPALIVE_S": "5",
            **env,
        }
        if config is not None:
            path = directory / "first-boot.json"
            path.write_bytes(orjson.dumps(config))
            env["EDGE_CONFIG_FILE"] = str(path)
        super().__init__(["edge", "run"], directory / "agent.log", env)

    def events_generated(self) -> int:
        """The node's event counter, from its outbox (read when the agent is stopped)."""
        with sqlite3.connect(self.data_dir / "outbox.sqlite3") as db:
            row = db.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
        return int(row[0]) if row else 0

    def outbox_depth(self) -> int:
        with sqlite3.connect(self.data_dir / "outbox.sqlite3") as db:
            return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def outbox_unsent(self) -> int:
        """Entries the broker has not taken yet (events it took wait for their receipt)."""
        with sqlite3.connect(self.data_dir / "outbox.sqlite3") as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
            # An agent from before receipts keeps nothing the broker took.
            where = " WHERE sent_at IS NULL" if "sent_at" in columns else ""
            return int(db.execute(f"SELECT COUNT(*) FROM entries{where}").fetchone()[0])  # noqa: S608
