"""A box's "how I am now" reports are taken at most so often; its data never is."""

from __future__ import annotations

from datetime import UTC, datetime

from cloud.ingest.deferred import units
from cloud.ingest.subscriber import Received
from cloud.ingest.throttle import BURST, RATE_PER_S, Throttle
from cloud.metrics import INGEST_THROTTLED
from protocols import encode
from protocols.events import Reading
from protocols.topics import events_topic, health_topic, state_topic, telemetry_topic
from tests.factories import make_telemetry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def received(topic: str, mid: int = 1) -> Received:
    return Received(mid, 1, topic, b"{}", datetime.now(UTC))


def test_a_box_flooding_health_keeps_a_burst_then_one_each_refill() -> None:
    clock = Clock()
    throttle = Throttle(clock=clock)
    before = INGEST_THROTTLED.labels("health")._value.get()
    flood = [received(health_topic("qx-flood"), i) for i in range(1000)]
    assert len(throttle.admit(flood)) == BURST
    clock.now += 10 / RATE_PER_S  # ten reports' worth of time later
    assert len(throttle.admit(flood)) == 10
    assert INGEST_THROTTLED.labels("health")._value.get() - before == 2000 - BURST - 10


def test_other_boxes_other_channels_and_data_are_not_held_by_it() -> None:
    throttle = Throttle(clock=Clock())
    throttle.admit([received(health_topic("qx-flood"), i) for i in range(1000)])
    others = [received(health_topic("qx-quiet")), received(state_topic("qx-flood"))]
    events = [received(events_topic("qx-flood"), i) for i in range(1000)]
    junk = [received("gw/v1/nodes/../health")]
    assert throttle.admit(others + events + junk) == others + events + junk


def test_telemetry_counts_by_the_rows_it_stores() -> None:
    """64 readings (2.9 KB) were 2 units by bytes, and a box's burst stored 960,000 rows."""
    readings = [Reading(quantity=f"level_{i}", value=1.25 * i, unit="m") for i in range(64)]
    payload = encode(make_telemetry(readings=readings))
    message = received(telemetry_topic("qx-sensors"))
    message = Received(1, 1, message.topic, payload, message.received_at)
    assert units(message) >= 40
    assert units(received(events_topic("qx-sensors"))) == 1
