"""Fleet state at county scale: 10,000 nodes heartbeating every 30 s, 40,000 cameras, through
the real broker, service and database, in one run.

Run: .venv/bin/python -m bench.fleet_state [--nodes 10000] [--interval 30] [--dying 50]

A county of 613 grids with `--nodes` boxes (4 cameras each) registered. A publisher process
sends every node's NodeHealth once per `--interval`, spread evenly; `--dying` more nodes
hold real MQTT connections with a last will, as boxes do, and heartbeat from a process of
their own. Measured:

1. the cloud CPU spent per 1,000 heartbeats by `gridwatch cloud serve --ingest` (the
   process and its PostgreSQL backends, the fleet monitor included), over one interval;
2. the fleet overview (GET /api/v1/fleet/overview as the county, and as a town), p50/p95;
3. how long after a box dies the fleet list shows it offline: the dying process is
   stopped with SIGSTOP (a power cut or a cut cable: no goodbye, the broker learns of it
   only when keepalives stop), and a set of the publisher's nodes simply fall silent (no
   last will at all: the heartbeat-age backstop);
4. the naive baseline: the same heartbeats consumed by a subscriber that writes each one as
   an UPDATE of the node's row, CPU measured the same way.

The last line is CPU per heartbeat of the baseline / CPU per heartbeat of the service.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import paho.mqtt.client as mqtt
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cloud.access import Principal, Role
from cloud.auth import issue_access_token
from cloud.tiers import Level
from protocols import NodeHealth, NodeState, decode, encode
from protocols.enums import NodeStatus, StateReason, StreamStatus
from protocols.health import CameraHealth, InferenceHealth, OutboxHealth
from protocols.topics import Channel, all_nodes_filter, health_topic, state_topic
from tests.support.cloud import ServeProcess
from tests.support.county import COUNTY, TEST_JWT_SECRET, import_large_county
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import LOCAL_SERVER, fresh_database

CAMERAS_PER_NODE = 4


def node_ids(count: int, prefix: str = "qx-box") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def health(node_id: str) -> NodeHealth:
    return NodeHealth(
        node_id=node_id,
        sent_at=datetime.now(UTC),
        uptime_s=3600.0,
        cpu_percent=23.0,
        memory_used_bytes=700_000_000,
        memory_total_bytes=2_000_000_000,
        disk_used_bytes=9_000_000_000,
        disk_total_bytes=32_000_000_000,
        temperature_c=51.0,
        cameras=[
            CameraHealth(
                camera_id=f"cam{c:02d}",
                status=StreamStatus.CONNECTED,
                input_fps=25.0,
                analysed_fps=5.0,
                last_frame_age_s=0.1,
                reconnects=0,
            )
            for c in range(1, CAMERAS_PER_NODE + 1)
        ],
        inference=InferenceHealth(
            model_profile="yolox_nano_416", latency_p50_ms=41.0, latency_p95_ms=60.0, inferences=1
        ),
        outbox=OutboxHealth(depth=0, oldest_age_s=None, bytes=0, budget_bytes=1 << 30),
        agent_version="0.1.0",
        config_version=3,
    )


# ---- the load: heartbeats of every node -----------------------------------------------


def heartbeats(
    port: int, nodes: list[str], interval: float, silent: list[str], silence_at: float
) -> None:
    """Every node's health once per interval, evenly spread, from 4 connections; from
    `silence_at` on, the `silent` nodes send nothing more (and have no will)."""
    clients = []
    for i in range(4):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-heartbeats-{i}", protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients.append(client)
    quiet = set(silent)
    last_beat: dict[str, float] = {}
    start = time.monotonic()
    step = interval / len(nodes)
    n = 0
    out = Path(os.environ["BENCH_LAST_BEATS"])
    while True:
        node_id = nodes[n % len(nodes)]
        due = start + n * step
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not synchronising
        silenced = time.time() >= silence_at and node_id in quiet
        if not silenced:
            clients[n % 4].publish(health_topic(node_id), encode(health(node_id)), qos=1)
            if node_id in quiet:
                last_beat[node_id] = time.time()
        elif len(last_beat) == len(quiet) and not out.exists():
            out.write_bytes(orjson.dumps(last_beat))
        n += 1


class Box:
    """A node's own connection: online state on connect, last will offline (as the agent)."""

    def __init__(self, port: int, node_id: str) -> None:
        self.node_id = node_id
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=node_id, protocol=mqtt.MQTTv5
        )
        will = NodeState(
            node_id=node_id,
            status=NodeStatus.OFFLINE,
            reason=StateReason.CONNECTION_LOST,
            sent_at=datetime.now(UTC),
        )
        self.client.will_set(state_topic(node_id), encode(will), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.connect("127.0.0.1", port, keepalive=30)  # the agent's default
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        online = NodeState(
            node_id=self.node_id,
            status=NodeStatus.ONLINE,
            reason=StateReason.CONNECTED,
            sent_at=datetime.now(UTC),
        )
        client.publish(state_topic(self.node_id), encode(online), qos=1, retain=True)


def dying_boxes(port: int, nodes: list[str], interval: float) -> None:
    boxes = [Box(port, node_id) for node_id in nodes]
    while True:
        for box in boxes:
            box.client.publish(health_topic(box.node_id), encode(health(box.node_id)), qos=1)
        time.sleep(interval)  # the boxes' own heartbeat period


# ---- the baseline: one UPDATE per heartbeat --------------------------------------------


def naive_consumer(port: int, url: str) -> None:
    conn = psycopg.connect(url, autocommit=True, application_name="bench-naive")

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        h = decode(NodeHealth, msg.payload, topic=msg.topic)  # the same validation
        connected = sum(1 for c in h.cameras if c.status is StreamStatus.CONNECTED)
        conn.execute(
            "UPDATE naive_nodes SET last_heartbeat_at = %s, cpu_percent = %s, "
            "memory_used_bytes = %s, disk_used_bytes = %s, disk_total_bytes = %s, "
            "outbox_depth = %s, cameras_connected = %s, cameras_total = %s, "
            "agent_version = %s, config_version = %s, health = %s WHERE node_id = %s",
            (
                h.sent_at,
                h.cpu_percent,
                h.memory_used_bytes,
                h.disk_used_bytes,
                h.disk_total_bytes,
                h.outbox.depth,
                connected,
                len(h.cameras),
                h.agent_version,
                h.config_version,
                msg.payload.decode(),
                h.node_id,
            ),
        )

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive", protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(all_nodes_filter(Channel.HEALTH), qos=1)
    client.connect("127.0.0.1", port)
    client.loop_forever()


# ---- measuring -------------------------------------------------------------------------


def backends(url: str, database: str) -> list[int]:
    """The database's server processes (this query's own is gone before it matters)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def cpu_of(pids: list[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[pid] = times.user + times.system
    return seconds


def cpu_window(
    process_pid: int, url: str, database: str, seconds: float, messages: Any
) -> tuple[float, float, int]:
    """CPU seconds of a consumer process and of its PostgreSQL backends over `seconds`, and
    how many heartbeats it committed meanwhile (`messages()`)."""
    pids = [process_pid, *(p.pid for p in psutil.Process(process_pid).children(recursive=True))]
    before = cpu_of(pids + backends(url, database))
    count_before = messages()
    time.sleep(seconds)  # the measuring window itself
    after = cpu_of(list(before) + backends(url, database))
    count_after = messages()
    own = sum(after[p] - before[p] for p in pids if p in before and p in after)
    total = sum(after[p] - before[p] for p in before if p in after)
    return own, total - own, count_after - count_before


def health_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM node_health").fetchone()
    return int(row[0]) if row else 0


def naive_updates(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT sum(n_tup_upd) FROM pg_stat_user_tables WHERE relname = 'naive_nodes'"
        ).fetchone()
    return int(row[0] or 0) if row else 0


def timed_gets(client: httpx.Client, path: str, times: int) -> list[float]:
    out = []
    for _ in range(times):
        start = time.perf_counter()
        response = client.get(path)
        out.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return out


def offline_now(client: httpx.Client) -> set[str]:
    rows = client.get("/fleet/nodes", params={"status": "offline", "limit": 20000}).json()
    return {r["node_id"] for r in rows}


def wait_offline(client: httpx.Client, watched: set[str], timeout_s: float) -> dict[str, float]:
    """When each watched node first shows offline on the fleet list (polled every second,
    as a screen would at best)."""
    seen: dict[str, float] = {}
    deadline = time.time() + timeout_s
    while len(seen) < len(watched) and time.time() < deadline:
        now = time.time()
        for node_id in offline_now(client) & watched:
            seen.setdefault(node_id, now)
        time.sleep(1.0)  # the screen's polling period
    return seen


def register(url: str, nodes: list[str], grids: list[str], villages: list[str]) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY nodes (node_id, unit_code, tier) FROM STDIN") as copy:
            for i, node_id in enumerate(nodes):
                copy.write_row((node_id, villages[i % len(villages)], "village"))
        with cur.copy("COPY cameras (node_id, camera_id, unit_code) FROM STDIN") as copy:
            for i, node_id in enumerate(nodes):
                for c in range(1, CAMERAS_PER_NODE + 1):
                    copy.write_row(
                        (node_id, f"cam{c:02d}", grids[(i * CAMERAS_PER_NODE + c) % len(grids)])
                    )
        cur.execute(
            "CREATE TABLE naive_nodes (node_id text PRIMARY KEY, last_heartbeat_at timestamptz, "
            "cpu_percent real, memory_used_bytes bigint, disk_used_bytes bigint, "
            "disk_total_bytes bigint, outbox_depth bigint, cameras_connected int, "
            "cameras_total int, agent_version text, config_version int, health jsonb)"
        )
        with cur.copy("COPY naive_nodes (node_id) FROM STDIN") as copy:
            for node_id in nodes:
                copy.write_row((node_id,))
        conn.commit()


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--dying", type=int, default=50)
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(LOCAL_SERVER, "gw_bench_fleet") as url,
    ):
        directory = Path(tmp)
        database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        import_large_county(url, directory / "county")
        with psycopg.connect(url, autocommit=True) as conn:
            grids = [
                r[0]
                for r in conn.execute(
                    "SELECT code FROM org_units WHERE level = 'grid' ORDER BY code"
                )
            ]
            villages = [
                r[0]
                for r in conn.execute(
                    "SELECT code FROM org_units WHERE level = 'village' ORDER BY code"
                )
            ]
            town = conn.execute(
                "SELECT code FROM org_units WHERE level = 'town' ORDER BY code LIMIT 1"
            ).fetchone()[0]  # type: ignore[index]
        steady = node_ids(args.nodes)
        dying = node_ids(args.dying, "qx-dying")
        silent = steady[: args.dying]
        register(url, steady + dying, grids, villages)
        print(
            f"county: {len(villages)} villages, {len(grids)} grids, "
            f"{len(steady) + len(dying)} nodes, {(len(steady) + len(dying)) * CAMERAS_PER_NODE} "
            f"cameras; heartbeat every {args.interval:g} s"
        )

        broker = MosquittoBroker(directory / "broker")
        broker.start()
        service = ServeProcess(
            directory / "cloud",
            url,
            broker.url,
            ingest=True,
            CLOUD_JWT_SECRET=TEST_JWT_SECRET,
            CLOUD_CASE_TIMER_INTERVAL_S="600",
            CLOUD_FLEET__HEARTBEAT_S=str(args.interval),
        )
        county_token = issue_access_token(
            Principal("bench-county", Role.COUNTY_OPERATOR, COUNTY, Level.COUNTY),
            key=TEST_JWT_SECRET.encode(),
            lifetime_s=7200,
        )
        town_token = issue_access_token(
            Principal("bench-town", Role.TOWN_OPERATOR, town, Level.TOWN),
            key=TEST_JWT_SECRET.encode(),
            lifetime_s=7200,
        )
        beats_file = directory / "last-beats.json"
        os.environ["BENCH_LAST_BEATS"] = str(beats_file)
        warm = args.interval
        silence_at = time.time() + 1e9  # set below, once the load is steady
        publisher = None
        boxes = None
        naive = None
        try:
            service.start_listening()
            assert service.process is not None
            # The silent nodes stop after warm-up + the CPU window + the overview queries.
            silence_at = time.time() + 2 * warm + 30
            publisher = spawn.Process(
                target=heartbeats, args=(broker.port, steady, args.interval, silent, silence_at)
            )
            publisher.start()
            boxes = spawn.Process(target=dying_boxes, args=(broker.port, dying, args.interval))
            boxes.start()
            time.sleep(warm)  # every node reports once before anything is measured
            county = httpx.Client(
                base_url=service.base,
                headers={"Authorization": f"Bearer {county_token}"},
                timeout=60,
            )
            town_client = httpx.Client(
                base_url=service.base, headers={"Authorization": f"Bearer {town_token}"}, timeout=60
            )

            own, server, beats = cpu_window(
                service.process.pid, url, database, args.interval, lambda: health_rows(url)
            )
            used = own + server
            ours_ms = 1000 * used / max(1, beats)
            print(
                f"service: {beats} heartbeats in {args.interval:g} s "
                f"({beats / args.interval:.0f}/s), "
                f"CPU {used:.2f} s (process {own:.2f}, database {server:.2f}) = "
                f"{ours_ms:.3f} ms per heartbeat"
            )

            overview = county.get("/fleet/overview").json()
            print(
                f"overview: {overview['nodes']} nodes, {overview['online']} online, "
                f"{overview['cameras_connected']}/{overview['cameras']} cameras up"
            )
            county_ms = timed_gets(county, "/fleet/overview", 30)
            town_ms = timed_gets(town_client, "/fleet/overview", 30)
            print(
                f"fleet overview (county, {args.nodes + args.dying} nodes): "
                f"p50 {statistics.median(county_ms):.0f} ms, "
                f"p95 {percentile(county_ms, 95):.0f} ms (goal < 100 ms)"
            )
            print(
                f"fleet overview (a town): p50 {statistics.median(town_ms):.0f} ms, "
                f"p95 {percentile(town_ms, 95):.0f} ms"
            )

            # A power cut for the dying boxes: no FIN, no more keepalives.
            assert boxes.pid is not None
            os.kill(boxes.pid, signal.SIGSTOP)
            died = time.time()
            seen = wait_offline(county, set(dying), 4 * args.interval)
            will = sorted(seen[n] - died for n in seen)
            print(
                f"boxes cut off (last will after the broker's keepalive): "
                f"{len(seen)}/{len(dying)} shown "
                f"offline; after p50 {statistics.median(will):.1f} s, max {max(will):.1f} s "
                f"(goal < {2 * args.interval:g} s)"
            )
            # Silent nodes (no will): heartbeat age alone.
            wait_until = silence_at + 4 * args.interval
            while not beats_file.exists() and time.time() < wait_until:
                time.sleep(0.5)  # the publisher writes it when silence starts
            last = orjson.loads(beats_file.read_bytes())
            seen_silent = wait_offline(county, set(silent), max(1.0, wait_until - time.time()))
            silence = sorted(seen_silent[n] - last[n] for n in seen_silent)
            print(
                f"nodes fallen silent (no will, heartbeat age): "
                f"{len(seen_silent)}/{len(silent)} shown "
                f"offline; after their last heartbeat p50 {statistics.median(silence):.1f} s, "
                f"max {max(silence):.1f} s (by design {3 * args.interval:g} s: 3 missed intervals)"
            )
            county.close()
            town_client.close()
            service.stop(60)

            # The naive baseline on the same load.
            naive = spawn.Process(target=naive_consumer, args=(broker.port, url))
            naive.start()
            time.sleep(10)  # connected and subscribed before the window
            assert naive.pid is not None
            own_naive, server_naive, updates = cpu_window(
                naive.pid, url, database, args.interval, lambda: naive_updates(url)
            )
            used_naive = own_naive + server_naive
            naive_ms = 1000 * used_naive / max(1, updates)
            print(
                f"naive (UPDATE per heartbeat): {updates} updates in {args.interval:g} s, "
                f"CPU {used_naive:.2f} s (process {own_naive:.2f}, database "
                f"{server_naive:.2f}) = {naive_ms:.3f} ms per heartbeat"
            )
            print(f"{naive_ms / ours_ms:.2f}")
        finally:
            for process in (boxes, publisher, naive):
                if process is not None and process.is_alive():
                    if process is boxes and process.pid:
                        os.kill(process.pid, signal.SIGCONT)
                    process.kill()
                    process.join(10)
            if service.process is not None:
                service.stop(60)
            broker.stop()


if __name__ == "__main__":
    main()
