"""Events a second through the durable outbox to a real broker, against publishing directly.

Run: .venv/bin/python -m bench.edge_outbox [--events 20000]

Both paths publish the same encoded DetectionEvents with QoS 1 to a private Mosquitto:

  (a) direct: paho publishes from memory, at most 50 in flight, an event done at its
      PUBACK (nothing survives a crash, nor a broker that dies before it saves);
  (b) backlog: events already committed to the outbox (WAL, synchronous=FULL) drain when
      the link returns, each marked sent at its PUBACK and deleted only when the cloud's
      receipt names it (the bench's subscriber receipts what it received every 50 ms, as
      ingest does after each commit): the path that must be fast (a day of a town's
      events after an outage);
  (c) live: 8 camera threads commit each event as it happens (commits shared by group
      commit) while the publisher drains: bounded by the disk's fsync rate.

The last line is the ratio (b)/(a) of sustained rates.
"""

from __future__ import annotations

import argparse
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.link import MAX_INFLIGHT, Link
from edge.outbox import Message, Outbox, Priority
from edge.publisher import Publisher
from edge.settings import EdgeSettings
from protocols import Receipt, decode, encode
from protocols.base import utc_now
from protocols.receipts import seq_ranges
from protocols.topics import events_topic, receipts_topic
from tests.factories import make_detection_event
from tests.support.mosquitto import MosquittoBroker

NODE = "bench-node"
REPO = Path(__file__).resolve().parents[1]


def payloads(count: int) -> list[bytes]:
    return [encode(make_detection_event(node_id=NODE, seq=i)) for i in range(count)]


def take_receipts(link: Link, outbox: Outbox, stop: threading.Event, done: list[int]) -> None:
    """What the agent does with the receipts that arrive: forget what they name."""
    while not stop.is_set():
        try:
            incoming = link.incoming.get(timeout=0.05)
        except queue.Empty:
            continue
        done[0] += outbox.receipted(decode(Receipt, incoming.payload).seqs)


def direct(port: int, events: list[bytes]) -> float:
    done = threading.Event()
    acked = [0]
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-direct", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(MAX_INFLIGHT)

    def on_publish(*_: Any) -> None:
        acked[0] += 1
        if acked[0] == len(events):
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = events_topic(NODE)
    start = time.perf_counter()
    for payload in events:
        client.publish(topic, payload, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return len(events) / elapsed


def through_outbox(
    port: int, events: list[bytes], directory: Path, prefill: bool, producers: int = 1
) -> tuple[float, float]:
    """(events a second end to end, events a second written to the outbox)."""
    outbox = Outbox(directory / f"outbox-{prefill}-{producers}.db", budget_bytes=1 << 31)
    settings = EdgeSettings(
        node_id=NODE, broker_url=f"mqtt://127.0.0.1:{port}", data_dir=directory, metrics_port=0
    )  # type: ignore[call-arg]
    link: Link
    publisher: Publisher
    link = Link(
        settings,
        boot_id=None,
        on_published=lambda mid, reason: publisher.on_published(mid, reason),
        subscriptions=[receipts_topic(NODE)],
    )
    publisher = Publisher(outbox, link)
    topic = events_topic(NODE)
    receipted = [0]
    stop = threading.Event()
    receiver = threading.Thread(target=take_receipts, args=(link, outbox, stop, receipted))
    receiver.start()
    write_rate = 0.0
    if prefill:
        start = time.perf_counter()
        for seq, payload in enumerate(events):
            outbox.add([Message(topic, payload, Priority.EVENT, seq=seq)])
        write_rate = len(events) / (time.perf_counter() - start)
    publisher.start()
    link.start()
    link.connected.wait(10)
    start = time.perf_counter()
    if not prefill:
        # Camera threads each commit their events as they happen (group commit joins them).
        def produce(share: list[tuple[int, bytes]]) -> None:
            for seq, payload in share:
                outbox.add([Message(topic, payload, Priority.EVENT, seq=seq)])
                publisher.notify()

        numbered = list(enumerate(events))
        threads = [
            threading.Thread(target=produce, args=(numbered[i::producers],))
            for i in range(producers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        write_rate = len(events) / (time.perf_counter() - start)
    while receipted[0] < len(events):
        time.sleep(0.01)  # a benchmark polls its own counter
    elapsed = time.perf_counter() - start
    stop.set()
    receiver.join()
    publisher.stop()
    link.stop()
    outbox.close()
    return len(events) / elapsed, write_rate


def subscribe(port: int) -> None:
    """The cloud's side: a subscriber must exist, or the broker answers "no matching
    subscribers" and the outbox (rightly) keeps the events; and it receipts what it got,
    every 50 ms. Runs until its stdin closes."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-cloud", protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *_: print("subscribed", flush=True)
    client.on_connect = lambda c, *_: c.subscribe(events_topic(NODE), qos=1)
    got: list[int] = []
    lock = threading.Lock()

    def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        seq = orjson.loads(message.payload)["seq"]
        with lock:
            got.append(seq)

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    stopped = threading.Event()

    def receipts() -> None:
        while not stopped.wait(0.05):
            with lock:
                seqs, got[:] = list(got), []
            if seqs:
                receipt = Receipt(node_id=NODE, sent_at=utc_now(), seqs=seq_ranges(seqs))
                client.publish(receipts_topic(NODE), encode(receipt), qos=1)

    sender = threading.Thread(target=receipts)
    sender.start()
    sys.stdin.read()
    stopped.set()
    sender.join()
    client.disconnect()
    client.loop_stop()


def subscriber(port: int) -> subprocess.Popen[str]:
    """The cloud's subscriber in its own process, as in the field: in the bench's process
    it took a third of the interpreter's time from the paths measured."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.edge_outbox", "--subscriber", str(port)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "subscribed":
        raise RuntimeError("the bench's subscriber did not subscribe")
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--cameras", type=int, default=8, help="threads adding events")
    parser.add_argument("--subscriber", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        subscribe(args.subscriber)
        return
    events = payloads(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "broker").mkdir()
        broker = MosquittoBroker(directory / "broker").start()
        cloud = subscriber(broker.port)
        try:
            rate_direct = direct(broker.port, events)
            rate_single, _ = through_outbox(broker.port, events, directory, False, 1)
            rate_outbox, write_rate = through_outbox(
                broker.port, events, directory, False, args.cameras
            )
            rate_backlog, _ = through_outbox(broker.port, events, directory, True)
        finally:
            assert cloud.stdin is not None
            cloud.stdin.close()
            cloud.wait(30)
            broker.stop()
    size = sum(map(len, events)) / len(events)
    print(f"{args.events} events of {size:.0f} bytes, QoS 1, to a private Mosquitto on loopback")
    print(f"(a) direct from memory:                  {rate_direct:8.0f} events/s")
    print(
        f"(b) a stored backlog through the outbox: {rate_backlog:8.0f} events/s "
        f"({86_400 * 50 / rate_backlog / 60:.1f} min for a day of a county's 50 events/s)"
    )
    print(
        f"(c) live, {args.cameras} camera threads committing each event: {rate_outbox:8.0f}"
        f" events/s (commits alone {write_rate:.0f}/s); one thread: {rate_single:.0f}/s"
    )
    print(f"{rate_backlog / rate_direct:.2f}")


if __name__ == "__main__":
    main()
