"""Durable events a second into PostgreSQL through a real Mosquitto: naive ingest against
gridwatch's, in one run.

Run: .venv/bin/python -m bench.cloud_ingest [--backlog 200000]

  (a) naive: one INSERT and one commit per message, acknowledged on receipt;
  (b) gridwatch ingest (`gridwatch cloud ingest` processes): batches COPYed into a staging
      table, moved into `events` (as all new, or with ON CONFLICT DO NOTHING when a copy was
      stored before), committed, then acknowledged.

It measures the sustained drain of a broker backlog (a town's link comes back) with 1 and 2
ingest processes, from their first commit to their last (and, for comparison, counting their
start-up too); the live rate, with a Python publisher on the same box offering 30,000 events/s
(more than ingest stores) for 10 s; and publish → stored latency at a fixed 5,000
events/s. The last line is the ratio (b, 2 processes)/(a).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mqtt5
import orjson
import paho.mqtt.client as mqtt
import psycopg
import uuid6
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.db.schema import prepare_database
from cloud.ingest.subscriber import FrameReader
from cloud.settings import CloudSettings
from protocols import encode
from protocols.topics import Channel, all_nodes_filter, events_topic
from tests.factories import make_detection_event
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import LOCAL_SERVER, fresh_database

REPO = Path(__file__).resolve().parents[1]
# Odd: a shared subscription hands messages to the ingest processes in turn, so with an
# even count and two processes each node's stream would stay with one process. Real
# nodes' streams are split between the processes and their seqs commit out of order.
NODES = 101


# ---- the publisher (its own process, like the boxes) ----------------------------------------


WINDOW = 1000  # QoS 1 messages a publisher has in flight before it waits for PUBACKs
TICK_S = 0.001  # a paced publisher sends what is due at most this often


def publish(port: int, count: int, rate: float | None, first_seq: int, fleet: int = 0) -> None:
    """Publish `count` events from NODES nodes of fleet `fleet`, at `rate` a second (None:
    flat out), at QoS 1 through the real broker, each held until its PUBACK.

    The publisher stands in for hundreds of boxes that run elsewhere, so its own cost on
    this box is the bench's, not ingest's: it writes packets with the same MQTT 5 codec
    as ingest's subscriber, about 10 µs of CPU a message. A paho publisher took about 160
    µs a message here, and two of them took most of a core from the ingest they fed."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(mqtt5.ConnectPacket(f"bench-pub-{os.getpid()}", clean_start=True).write())
        reader = FrameReader()
        pending: list[mqtt5.Packet] = []
        while not pending:
            pending = reader.feed(sock.recv(65536))
        connack = pending.pop(0)
        assert isinstance(connack, mqtt5.ConnAckPacket), connack
        window = min(WINDOW, connack.receive_max)
        acked = sum(isinstance(p, mqtt5.PubAckPacket) for p in pending)

        def read_acks() -> int:
            data = sock.recv(262_144)
            if not data:
                raise ConnectionError("the broker closed the connection")
            return sum(isinstance(p, mqtt5.PubAckPacket) for p in reader.feed(data))

        names = [f"qx-bench-{fleet}-{n:03d}" for n in range(NODES)]
        topics = [events_topic(name) for name in names]
        # A real event, re-stamped per message (building each with pydantic would cap the
        # publisher near 6k/s, below what ingest takes).
        template = orjson.loads(encode(make_detection_event(node_id=names[0], seq=0)))
        out = bytearray()
        start = time.perf_counter()
        for i in range(count):
            if rate is not None and (delay := start + i / rate - time.perf_counter()) > 0:
                # Pacing the offered load: what is due goes in one write, then a pause of at
                # least a millisecond (a write and a sleep per message cost more CPU than
                # the rest of the publisher).
                sock.sendall(out)
                out.clear()
                time.sleep(max(delay, TICK_S))
            while i - acked >= window:
                if out:
                    sock.sendall(out)
                    out.clear()
                acked += read_acks()
            node = i % NODES
            event_id = str(uuid6.uuid7())
            payload = orjson.dumps(
                {
                    **template,
                    "event_id": event_id,
                    "thread_id": event_id,
                    "node_id": names[node],
                    "seq": first_seq + i // NODES,
                    "observed_at": datetime.now(UTC).isoformat(),
                }
            )
            out += mqtt5.PublishPacket(
                topics[node], payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=i % 65_535 + 1
            ).write()
            if len(out) >= 65_536:
                sock.sendall(out)
                out.clear()
        sock.sendall(out)
        while acked < count:
            acked += read_acks()
        sys.stdout.write(f"published {count} in {time.perf_counter() - start:.2f} s\n")
        sock.sendall(mqtt5.DisconnectPacket().write())


def run_publisher(
    port: int, count: int, rate: float | None, first_seq: int, fleet: int = 0
) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "bench.cloud_ingest",
        "--publisher",
        str(port),
        str(count),
        str(rate or 0),
        str(first_seq),
        str(fleet),
    ]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)


# ---- ingest under test ----------------------------------------------------------------


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def committed(url: str) -> int:
    """Messages ingest has committed, from its progress rows: cheap to poll (counting the
    events table ten times a second took a tenth of a core from the system measured)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(messages), 0) FROM ingest_progress").fetchone()
    return int(row[0]) if row else 0


def wait_until_committed(url: str, target: int, timeout_s: float = 600) -> None:
    start = time.perf_counter()
    while committed(url) < target:
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"only {stored(url)} of {target} stored")
        time.sleep(0.1)  # a benchmark polls its own progress


def wait_stored(url: str, target: int, timeout_s: float = 600) -> float:
    """Seconds until `target` events are stored, checked against the table at the end."""
    start = time.perf_counter()
    wait_until_committed(url, target, timeout_s)
    elapsed = time.perf_counter() - start
    check_stored(url, target)
    return elapsed


def check_stored(url: str, published: int) -> None:
    """Progress counts messages; the table must hold each published event exactly once."""
    if stored(url) != published:
        raise AssertionError(f"{stored(url)} events stored, {published} published")


def ingest_processes(
    url: str, port: int, count: int, group: str, workdir: Path
) -> list[subprocess.Popen[bytes]]:
    processes = []
    for i in range(count):
        env = {
            **os.environ,
            "CLOUD_DATABASE_URL": url,
            "CLOUD_BROKER_URL": f"mqtt://127.0.0.1:{port}",
            "CLOUD_INGEST_CLIENT_ID": f"{group}-{i}",
            "CLOUD_INGEST_GROUP": group,
            "CLOUD_DATA_DIR": str(workdir),
            "CLOUD_INGEST_BATCH_MAX": "5000",
        }
        log = (workdir / f"{group}-{i}.log").open("ab")
        processes.append(
            subprocess.Popen(
                # INFO: a line when subscribed (ingest logs nothing per batch at INFO).
                [sys.executable, "-m", "gridwatch", "cloud", "ingest", "--log-level", "INFO"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
            )
        )
    return processes


def wait_subscribed(workdir: Path, group: str, count: int, timeout_s: float = 60) -> None:
    """Until each of the group's ingest processes has logged its subscription."""
    logs = [workdir / f"{group}-{i}.log" for i in range(count)]
    deadline = time.perf_counter() + timeout_s
    while not all(b"ingest subscribed" in log.read_bytes() for log in logs):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"ingest group {group} not subscribed in {timeout_s:.0f} s")
        time.sleep(0.05)  # polls the logs


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds one process has used (user + system), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Drain:
    """A backlog drained from the first commit to the last: the sustained rate, and where
    the CPU went in µs per event."""

    per_s: float
    ingest: float
    broker: float
    rest: float  # PostgreSQL, mostly


def measure_drain(
    url: str, broker_pid: int, processes: list[subprocess.Popen[bytes]], target: int
) -> Drain:
    """From the first commit to the last: the processes' start-up (about 0.8 s of imports
    and connecting) is not draining, and the naive and live figures leave it out too."""
    wait_until_committed(url, 1)
    first = committed(url)
    pids = [broker_pid, *(p.pid for p in processes)]
    start = time.perf_counter(), machine_busy_s(), [process_cpu_s(pid) for pid in pids]
    wait_until_committed(url, target)
    end = time.perf_counter(), machine_busy_s(), [process_cpu_s(pid) for pid in pids]
    events = target - first
    used = [b - a for a, b in zip(start[2], end[2], strict=True)]
    busy = end[1] - start[1]
    micros = 1e6 / events
    return Drain(
        per_s=events / (end[0] - start[0]),
        ingest=sum(used[1:]) * micros,
        broker=used[0] * micros,
        rest=(busy - sum(used)) * micros,
    )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)


def subscribed_sessions(port: int, group: str, count: int) -> None:
    """Create the ingest sessions (persistent, shared subscription), then leave: the broker
    queues what is published meanwhile, as for a town whose uplink was down."""
    for i in range(count):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{group}-{i}", protocol=mqtt.MQTTv5
        )
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 86_400
        ready = threading.Event()
        client.on_subscribe = lambda *_, ready=ready: ready.set()
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
        client.loop_start()
        client.subscribe(f"$share/{group}/{all_nodes_filter(Channel.EVENTS)}", qos=1)
        ready.wait(10)
        client.disconnect()
        client.loop_stop()


def forget_sessions(port: int, client_ids: list[str]) -> None:
    """End persistent sessions, or the broker keeps queueing copies for them."""
    for client_id in client_ids:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        client.connect("127.0.0.1", port, clean_start=True, properties=props)
        client.loop_start()
        client.disconnect()
        client.loop_stop()


def naive(url: str, port: int, count: int) -> float:
    """One INSERT and commit per message, acknowledged on receipt (paho's default)."""
    done = threading.Event()
    received = [0]
    conn = psycopg.connect(url, autocommit=True)
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        data = orjson.loads(msg.payload)
        with lock:
            conn.execute(
                "INSERT INTO events (observed_at, event_id, thread_id, node_id, seq, camera_id, "
                "kind, phase, severity, label, score) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    data["observed_at"],
                    data["event_id"],
                    data["thread_id"],
                    data["node_id"],
                    data["seq"],
                    data["camera_id"],
                    data["kind"],
                    data["phase"],
                    data["severity"],
                    data["label"],
                    data["score"],
                ),
            )
            received[0] += 1
            if received[0] == count:
                done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive", protocol=mqtt.MQTTv5)
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(all_nodes_filter(Channel.EVENTS), qos=1)
    subscribed.wait(10)
    start = time.perf_counter()
    publisher = run_publisher(port, count, None, 0)
    done.wait(600)
    elapsed = time.perf_counter() - start
    publisher.wait()
    client.disconnect()
    client.loop_stop()
    conn.close()
    return count / elapsed


@dataclass
class Offered:
    """Ingest at a fixed offered rate: what it stored a second, and publish → stored."""

    stored_per_s: float
    p50_ms: float
    p99_ms: float


def at_rate(
    url: str, port: int, workdir: Path, rate: float, seconds: float, processes: int, group: str
) -> Offered:
    """Offer `rate` events/s for `seconds` to `processes` ingest processes: the events stored
    a second (from the first publish to the last commit: below `rate` when ingest falls
    behind), and the p50 and p99 publish → stored latency."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE events, node_sequences, seq_gaps, ingest_progress")
    running = ingest_processes(url, port, processes, group, workdir)
    wait_subscribed(workdir, group, processes)  # start-up (imports, subscription) off the clock
    count = int(rate * seconds)
    start = time.perf_counter()
    run_publisher(port, count, rate, 0).wait()
    wait_stored(url, count)
    elapsed = time.perf_counter() - start
    stop(running)
    forget_sessions(port, [f"{group}-{i}" for i in range(processes)])
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM ("
            "SELECT extract(epoch FROM stored_at - observed_at) * 1000 AS ms FROM events) t"
        ).fetchone()
    assert row is not None
    return Offered(count / elapsed, float(row[0]), float(row[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=20_000)
    # Above what ingest stores live on a 2-core box beside its publisher (about 28,000/s):
    # what is stored a second is then ingest's live capacity.
    parser.add_argument("--live-rate", type=float, default=30_000)
    parser.add_argument("--publisher", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        port, count, rate, first, fleet = args.publisher
        publish(int(port), int(count), float(rate) or None, int(first), int(fleet))
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(LOCAL_SERVER, "gridwatch_bench") as url,
    ):
        workdir = Path(tmp)
        with psycopg.connect(url, autocommit=True) as conn:
            prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        (workdir / "broker").mkdir()
        broker = MosquittoBroker(workdir / "broker").start()
        try:
            rate_naive = naive(url, broker.port, args.naive_events)
            drains: dict[int, Drain] = {}
            with_start: dict[int, float] = {}
            broker_pid = int((broker.config.directory / "mosquitto.pid").read_text())
            for processes in (1, 2):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("TRUNCATE events, node_sequences, seq_gaps, ingest_progress")
                group = f"drain{processes}"
                subscribed_sessions(broker.port, group, processes)
                run_publisher(broker.port, args.backlog, None, 0).wait()
                started = time.perf_counter()
                running = ingest_processes(url, broker.port, processes, group, workdir)
                drains[processes] = measure_drain(url, broker_pid, running, args.backlog)
                with_start[processes] = args.backlog / (time.perf_counter() - started)
                check_stored(url, args.backlog)
                stop(running)
                forget_sessions(broker.port, [f"{group}-{i}" for i in range(processes)])
            live = at_rate(url, broker.port, workdir, args.live_rate, 10, 2, "live")
            latency = at_rate(url, broker.port, workdir, 5000, 10, 1, "lat")
        finally:
            broker.stop()
    print(f"(a) naive, a commit per message:         {rate_naive:8.0f} events/s")
    for processes, drain in drains.items():
        print(
            f"(b) backlog of {args.backlog} drained, {processes} ingest:  {drain.per_s:8.0f} "
            f"events/s ({with_start[processes]:.0f}/s counting the processes' start-up)"
        )
    print(
        f"    live, {args.live_rate:.0f}/s offered for 10 s, 2 ingest: {live.stored_per_s:8.0f} "
        f"events/s stored, p50 {live.p50_ms:.0f} ms, p99 {live.p99_ms:.0f} ms"
    )
    print(
        f"    publish → stored at 5,000 events/s, 1 ingest: p50 {latency.p50_ms:.0f} ms, "
        f"p99 {latency.p99_ms:.0f} ms"
    )
    for processes, drain in drains.items():
        print(
            f"    CPU per event draining with {processes} ingest: ingest {drain.ingest:.0f} µs, "
            f"Mosquitto {drain.broker:.0f} µs, PostgreSQL and the rest {drain.rest:.0f} µs"
        )
    print(f"{drains[2].per_s / rate_naive:.2f}")


if __name__ == "__main__":
    main()
