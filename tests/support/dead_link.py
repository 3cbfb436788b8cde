"""Run inside a private network namespace (`unshare -rn python -m tests.support.dead_link
DIR`): a broker and ingest's subscriber on that namespace's loopback. The subscriber stops
reading, as ingest does under backpressure, with a message waiting unread; then the loopback
goes down, as a cut cable would: nothing answers any more, not even TCP. Prints whether the
subscriber noticed (`noticed: <why>`) before a generous deadline, or `not noticed`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from cloud.broker import MosquittoConfig, MosquittoProcess
from cloud.ingest.subscriber import Received, Subscriber
from cloud.settings import CloudSettings
from tests.support.mqtt import MqttProbe
from tests.support.ports import wait_until

PORT = 1883  # the namespace is ours alone
TOPIC = "gw/v1/nodes/qx-dead-link/events"
KEEPALIVE_S = 2
DEADLINE_S = 60.0  # far beyond what noticing takes (3 s of TCP_USER_TIMEOUT and a ping)


def main(directory: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    broker = MosquittoProcess(
        MosquittoConfig(directory=directory, port=PORT, persistence=False)
    ).start()
    arrived = threading.Event()

    def on_message(message: Received) -> None:
        arrived.set()

    subscriber = Subscriber(
        CloudSettings(broker_url=f"mqtt://127.0.0.1:{PORT}"),
        "ingest-dead-link",
        [TOPIC],
        on_message=on_message,
        receive_max=10,
        session_expiry_s=0,
        keepalive_s=KEEPALIVE_S,
    )
    subscriber.start()
    try:
        wait_until(subscriber.connected.is_set, 10, "the subscriber connected")
        subscriber.pause()
        sent = subscriber.pings_sent
        # Two pings later the I/O thread has surely seen the pause.
        wait_until(lambda: subscriber.pings_sent >= sent + 2, 10, "the pause taking effect")
        publisher = MqttProbe(PORT).connect()
        publisher.publish(TOPIC, b"waits unread", qos=1)
        publisher.close()
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        cut_at = time.monotonic()
        while subscriber.connected.is_set() and time.monotonic() - cut_at < DEADLINE_S:
            time.sleep(0.05)  # polling a flag for the report, bounded by the deadline
        if subscriber.connected.is_set():
            print(f"not noticed in {DEADLINE_S:g} s", flush=True)  # noqa: T201
        else:
            seconds = time.monotonic() - cut_at
            print(f"noticed: the connection ended {seconds:.1f} s after the cut", flush=True)  # noqa: T201
        assert not arrived.is_set(), "a paused subscriber read a message"
    finally:
        subscriber.stop(timeout_s=1)
        broker.kill()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
