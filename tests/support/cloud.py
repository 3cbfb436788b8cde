"""Run cloud processes (ingest) against test services, and publish as nodes would."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Self
from uuid import UUID

import httpx2 as httpx
import psycopg

from edge.link import Link
from edge.outbox import Message, Outbox, Priority
from edge.publisher import Publisher
from edge.settings import EdgeSettings
from protocols import NodeHealth, encode
from protocols.enums import SnapshotVariant
from protocols.events import DetectionEvent
from protocols.topics import events_topic, health_topic, snapshot_topic
from tests.factories import make_detection_event
from tests.support.ports import free_port, is_listening, wait_until
from tests.support.processes import GridwatchProcess


class IngestProcess(GridwatchProcess):
    def __init__(
        self, directory: Path, database_url: str, broker_port: int, client_id: str, **env: str
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        env = {
            **os.environ,
            "CLOUD_DATABASE_URL": database_url,
            "CLOUD_BROKER_URL": f"mqtt://127.0.0.1:{broker_port}",
            "CLOUD_INGEST_CLIENT_ID": client_id,
            "CLOUD_DATA_DIR": str(directory),
            **env,
        }
        super().__init__(["cloud", "ingest"], directory / f"{client_id}.log", env)

    def wait_subscribed(self, timeout_s: float = 30) -> None:
        """Until the broker granted all of ingest's subscriptions (one SUBSCRIBE)."""
        wait_until(
            lambda: self.log().count("ingest subscribed") >= 1,
            timeout_s,
            f"{self.log_path.stem} subscribed",
        )


class ServeProcess(GridwatchProcess):
    """`gridwatch cloud serve` on a free port against a given database and broker, with
    ingest in the same process or not."""

    def __init__(
        self, directory: Path, database_url: str, broker_url: str, *, ingest: bool, **env: str
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ingest = ingest
        env = {
            **os.environ,
            "CLOUD_DATABASE_URL": database_url,
            "CLOUD_BROKER_URL": broker_url,
            "CLOUD_PORT": str(self.port),
            "CLOUD_DATA_DIR": str(directory),
            **env,
        }
        args = ["cloud", "serve", "--ingest" if ingest else "--no-ingest"]
        super().__init__(args, directory / "serve.log", env)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start_listening(self, timeout_s: float = 60) -> Self:
        """Start; return once the API listens (and ingest has subscribed, when it runs)."""
        before = self.log().count("ingest subscribed")
        self.start()
        wait_until(lambda: is_listening(self.port), timeout_s, "the service listening")
        if self.ingest:  # one SUBSCRIBE, its filters all granted
            wait_until(
                lambda: self.log().count("ingest subscribed") >= before + 1,
                timeout_s,
                "ingest subscribed",
            )
        return self

    def sign_in(self, username: str, password: str) -> str:
        response = httpx.post(
            f"{self.base}/auth/token",
            data={"username": username, "password": password},
            timeout=10,
        )
        token: str = response.json()["access_token"]
        return token


def serving(
    directory: Path, database_url: str, broker_url: str, *, ingest: bool = False, **env: str
) -> Iterator[ServeProcess]:
    """A module's service: listening while the module runs, stopped after it."""
    process = ServeProcess(directory, database_url, broker_url, ingest=ingest, **env)
    process.start_listening()
    try:
        yield process
    finally:
        process.stop()


def gridwatch_cloud(
    database_url: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`gridwatch cloud ...` on a county's database, as its admin runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gridwatch", "cloud", *args],
        env={**os.environ, "CLOUD_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


class FakeNodes:
    """Publishes events as edge nodes do: through the edge's own outbox, link and publisher
    (so a PUBACK of "no matching subscribers" is retried, as on a real box)."""

    def __init__(
        self,
        broker_port: int,
        directory: Path | None = None,
        passwords: dict[str, str] | None = None,
    ) -> None:
        self.port = broker_port
        self.passwords = passwords or {}  # node id -> its broker password (none: anonymous)
        self.directory = (
            Path(tempfile.mkdtemp(prefix="fake-nodes-")) if directory is None else directory
        )
        self.nodes: dict[str, tuple[Outbox, Link, Publisher]] = {}
        self.published: list[DetectionEvent] = []

    def _node(self, node_id: str) -> tuple[Outbox, Link, Publisher]:
        if node_id not in self.nodes:
            settings = EdgeSettings(
                node_id=node_id,
                broker_url=f"mqtt://127.0.0.1:{self.port}",
                password=self.passwords.get(node_id),
                data_dir=self.directory / node_id,
                metrics_port=0,
            )  # type: ignore[call-arg]
            outbox = Outbox(settings.outbox_path, budget_bytes=1 << 30)
            publisher: Publisher
            link = Link(
                settings,
                boot_id=None,
                subscriptions=[],
                on_published=lambda mid, reason: publisher.on_published(mid, reason),
            )
            publisher = Publisher(outbox, link)
            publisher.start()
            link.start()
            self.nodes[node_id] = (outbox, link, publisher)
        return self.nodes[node_id]

    def publish(self, node_id: str, seqs: range | list[int], **fields: object) -> list[bytes]:
        outbox, _, publisher = self._node(node_id)
        payloads = []
        for seq in seqs:
            event = make_detection_event(node_id=node_id, seq=seq, **fields)
            self.published.append(event)
            payloads.append(encode(event))
        outbox.add([Message(events_topic(node_id), p, Priority.EVENT) for p in payloads])
        publisher.notify()
        return payloads

    def publish_snapshot(
        self, node_id: str, event_id: UUID, variant: SnapshotVariant, jpeg: bytes
    ) -> None:
        outbox, _, publisher = self._node(node_id)
        topic = snapshot_topic(node_id, event_id, variant)
        outbox.add([Message(topic, jpeg, Priority.SNAPSHOT)])
        publisher.notify()

    def publish_health(self, health: NodeHealth) -> None:
        outbox, _, publisher = self._node(health.node_id)
        outbox.add([Message(health_topic(health.node_id), encode(health), Priority.HEALTH)])
        publisher.notify()

    def publish_raw(self, node_id: str, payloads: list[bytes]) -> None:
        """Payloads as given, through the node's outbox (bad ones too: ingest must cope)."""
        outbox, _, publisher = self._node(node_id)
        outbox.add([Message(events_topic(node_id), p, Priority.EVENT) for p in payloads])
        publisher.notify()

    def delivered(self) -> bool:
        """Every node's outbox is empty: the broker acknowledged all, to a subscriber."""
        return all(publisher.idle() for _, _, publisher in self.nodes.values())

    def close(self) -> None:
        for outbox, link, publisher in self.nodes.values():
            publisher.stop()
            link.stop()
            outbox.close()
        self.nodes = {}


def count(database_url: str, query: str, *params: object) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, params or None).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0
