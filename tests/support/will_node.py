"""A stand-in node process for last-will tests: connects with a will, announces itself
online (retained), prints `ready`, then waits to be killed.

Run as `python -m tests.support.will_node PORT NODE_ID`.
"""

from __future__ import annotations

import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from protocols import NodeState, encode
from protocols.base import utc_now
from protocols.enums import NodeStatus, StateReason
from protocols.topics import state_topic


def main() -> None:
    port, node_id = int(sys.argv[1]), sys.argv[2]
    topic = state_topic(node_id)
    will = NodeState(
        node_id=node_id,
        status=NodeStatus.OFFLINE,
        reason=StateReason.CONNECTION_LOST,
        sent_at=utc_now(),
    )
    online = NodeState(
        node_id=node_id, status=NodeStatus.ONLINE, reason=StateReason.CONNECTED, sent_at=utc_now()
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id, protocol=mqtt.MQTTv5)
    client.will_set(topic, encode(will), qos=1, retain=True)
    published = threading.Event()
    client.on_publish = lambda *args: published.set()
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    client.publish(topic, encode(online), qos=1, retain=True)
    if not published.wait(10):
        sys.exit("no PUBACK for the online state")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
