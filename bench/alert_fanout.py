"""Alerts to 2,000 grid apps at once: WebSocket push against polling the REST API every
second, through the real service, broker and database, in one run.

Run: .venv/bin/python -m bench.alert_fanout [--clients 2000] [--rate 500] [--seconds 10]

A county of 613 grids and 1,500 cameras; `gridwatch cloud serve --ingest` on a private
Mosquitto; `--clients` apps spread over the grids (each signed in as its grid's worker).
Events are published at `--rate` per second, each opening a case (a camera and kind not
seen before), so each is an alert for the apps of one grid. Measured at the apps: event
published → alert received, p50 and p99, and every alert checked to reach exactly the apps
of its grid. Then the same with the apps polling GET /api/v1/alerts every second. The last
line is p99(polling) / p99(WebSocket).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from websockets.asyncio.client import connect

from cloud.access import Principal, Role
from cloud.auth import issue_access_token
from cloud.tiers import Level
from protocols import encode
from protocols.enums import EventKind, Severity
from protocols.topics import events_topic
from tests.factories import make_detection_event
from tests.support.cloud import ServeProcess
from tests.support.county import TEST_JWT_SECRET, import_large_county
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import LOCAL_SERVER, fresh_database

KINDS: list[tuple[EventKind, dict[str, Any]]] = [
    (EventKind.INTRUSION, {}),
    (EventKind.OBJECT, {}),
    (EventKind.LOITERING, {"dwell_s": 60.0}),
    (EventKind.CROWD, {"count": 9}),
    (EventKind.LINE_CROSSING, {"direction": "in"}),
]


class Published:
    """Event id → (publish time, the camera's grid)."""

    def __init__(self) -> None:
        self.at: dict[str, tuple[float, str]] = {}


def publish(
    port: int,
    cameras: list[tuple[str, str, str]],
    first: int,
    count: int,
    rate: float,
    published: Published,
) -> None:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-nodes-{first}", protocol=mqtt.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    seqs: dict[str, int] = defaultdict(int)
    sent: list[mqtt.MQTTMessageInfo] = []
    start = time.perf_counter()
    for i in range(first, first + count):
        node_id, camera_id, grid = cameras[i % len(cameras)]
        kind, fields = KINDS[(i // len(cameras)) % len(KINDS)]
        seqs[node_id] += 1
        event = make_detection_event(
            node_id=node_id,
            camera_id=camera_id,
            seq=first * 10 + seqs[node_id],
            kind=kind,
            severity=Severity.HIGH,
            snapshots=[],
            **fields,
        )
        delay = start + (i - first) / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the publisher, not synchronising
        published.at[str(event.event_id)] = (time.time(), grid)
        sent.append(client.publish(events_topic(node_id), encode(event), qos=1))
    for info in sent:  # every PUBACK before leaving: a disconnect would drop the rest
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def _publish_process(
    port: int, cameras: list[tuple[str, str, str]], first: int, count: int, rate: float, out: Any
) -> None:
    published = Published()
    publish(port, cameras, first, count, rate, published)
    out.put(published.at)


def publish_elsewhere(
    port: int,
    cameras: list[tuple[str, str, str]],
    first: int,
    count: int,
    rate: float,
    published: Published,
) -> None:
    """The nodes publish from a process of their own (as they do): with 2,000 WebSockets
    open here, paho's socket would land above select()'s 1,024 file descriptors."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(
        target=_publish_process, args=(port, cameras, first, count, rate, out)
    )
    process.start()
    published.at.update(out.get(timeout=600))
    process.join(60)


def token_for(grid: str) -> str:
    principal = Principal(f"worker-{grid}", Role.GRID_WORKER, grid, Level.GRID)
    return issue_access_token(principal, key=TEST_JWT_SECRET.encode(), lifetime_s=7200)


async def websocket_phase(
    port: int,
    grids: list[str],
    clients: int,
    received: list[tuple[str, str, float, str]],
    ready: asyncio.Event,
    done: asyncio.Event,
) -> None:
    async def one(index: int) -> None:
        grid = grids[index % len(grids)]
        async with connect(
            f"ws://127.0.0.1:{port}/api/v1/alerts/ws",
            additional_headers={"Authorization": f"Bearer {token_for(grid)}"},
            open_timeout=60,
            max_queue=None,
        ) as socket:
            connected.append(index)
            if len(connected) == clients:
                ready.set()
            while not done.is_set():
                try:
                    raw = await asyncio.wait_for(socket.recv(), 0.5)
                except TimeoutError:
                    continue
                alert = orjson.loads(raw)["alert"]
                if alert["msg_type"] == "alert":
                    received.append((str(alert["event_id"]), grid, time.time(), alert["alert_id"]))

    connected: list[int] = []
    await asyncio.gather(*(one(i) for i in range(clients)))


async def polling_phase(
    base: str,
    grids: list[str],
    clients: int,
    received: list[tuple[str, str, float, str]],
    done: asyncio.Event,
    after: str | None,
) -> None:
    async def one(index: int, client: httpx.AsyncClient) -> None:
        grid = grids[index % len(grids)]
        headers = {"Authorization": f"Bearer {token_for(grid)}"}
        last = after
        await asyncio.sleep(index / clients)  # spread the pollers over the second
        while not done.is_set():
            params = {"after": last} if last else {}
            try:
                page = (await client.get(f"{base}/alerts", params=params, headers=headers)).json()
            except httpx.HTTPError:
                await asyncio.sleep(1)
                continue
            for alert in page["items"]:
                if alert["msg_type"] == "alert":
                    received.append((str(alert["event_id"]), grid, time.time(), alert["alert_id"]))
            last = page["last_alert_id"] or last
            await asyncio.sleep(1)

    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(one(i, client) for i in range(clients)))


def judge(
    name: str,
    published: Published,
    received: list[tuple[str, str, float, str]],
    subscribers: dict[str, int],
) -> float:
    per_event: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for event_id, grid, at, _ in received:
        per_event[event_id].append((grid, at))
    latencies, lost, wrong = [], 0, 0
    for event_id, (sent, grid) in published.at.items():
        got = per_event.get(event_id, [])
        wrong += sum(1 for g, _ in got if g != grid)
        mine = [at for g, at in got if g == grid]
        lost += max(0, subscribers[grid] - len(mine))
        latencies += [at - sent for at in mine]
    latencies.sort()
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    print(
        f"{name}: {len(latencies)} deliveries, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms,"
        f" {lost} missing, {wrong} to the wrong grid"
    )
    return p99


async def run(
    args: argparse.Namespace,
    url: str,
    broker_port: int,
    api_port: int,
    grids: list[str],
    cameras: list[tuple[str, str, str]],
) -> float:
    subscribers: dict[str, int] = defaultdict(int)
    for i in range(args.clients):
        subscribers[grids[i % len(grids)]] += 1
    count = int(args.rate * args.seconds)

    received: list[tuple[str, str, float, str]] = []
    ready, done = asyncio.Event(), asyncio.Event()
    t = time.perf_counter()
    sockets = asyncio.create_task(
        websocket_phase(api_port, grids, args.clients, received, ready, done)
    )
    await asyncio.wait_for(ready.wait(), 300)
    print(f"{args.clients} WebSocket clients connected in {time.perf_counter() - t:.1f} s")
    pushed = Published()
    await asyncio.to_thread(publish_elsewhere, broker_port, cameras, 0, count, args.rate, pushed)
    await wait_settled(received, count, subscribers, pushed)
    done.set()
    await sockets
    ws_p99 = judge("WebSocket", pushed, received, subscribers)

    polled = Published()
    received_poll: list[tuple[str, str, float, str]] = []
    done_poll = asyncio.Event()
    last_id = received[-1][3] if received else None
    base = f"http://127.0.0.1:{api_port}/api/v1"
    pollers = asyncio.create_task(
        polling_phase(base, grids, args.clients, received_poll, done_poll, last_id)
    )
    await asyncio.sleep(2)  # the pollers' first round (they start spread over a second)
    await asyncio.to_thread(
        publish_elsewhere, broker_port, cameras, count, count, args.rate, polled
    )
    await wait_settled(received_poll, count, subscribers, polled)
    done_poll.set()
    await pollers
    poll_p99 = judge("polling every 1 s", polled, received_poll, subscribers)
    return poll_p99 / ws_p99


async def wait_settled(
    received: list[Any],
    count: int,
    subscribers: dict[str, int],
    published: Published,
    timeout_s: float = 120,
) -> None:
    """Until every published event reached its grid's apps (or the time is up)."""
    expected = sum(subscribers[grid] for _, grid in published.at.values())
    deadline = time.monotonic() + timeout_s
    while len(received) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(LOCAL_SERVER, "gw_bench_alerts") as url,
    ):
        directory = Path(tmp)
        import_large_county(url, directory / "county", with_fleet=True)
        with psycopg.connect(url, autocommit=True) as conn:
            grids = [
                r[0]
                for r in conn.execute(
                    "SELECT code FROM org_units WHERE level = 'grid' ORDER BY code"
                )
            ]
            cameras = [
                tuple(r)
                for r in conn.execute(
                    "SELECT node_id, camera_id, unit_code FROM cameras ORDER BY node_id, camera_id"
                )
            ]
        broker = MosquittoBroker(directory / "broker")
        broker.start()
        service = ServeProcess(
            directory / "cloud",
            url,
            broker.url,
            ingest=True,
            CLOUD_JWT_SECRET=TEST_JWT_SECRET,
            CLOUD_CASE_TIMER_INTERVAL_S="600",
        )
        try:
            service.start_listening()
            ratio = asyncio.run(run(args, url, broker.port, service.port, grids, cameras))  # type: ignore[arg-type]
            log = service.log()
            print(
                f"service log: {log.count('too slow; dropped')} apps dropped as too slow, "
                f"{log.count('ERROR')} errors"
            )
            print(f"{ratio:.1f}")
        finally:
            service.stop(60)
            broker.stop()


if __name__ == "__main__":
    main()
