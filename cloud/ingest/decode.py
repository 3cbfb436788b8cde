"""Raw MQTT messages → a Batch of decoded messages; bad ones become dead letters."""

from __future__ import annotations

from cloud.ingest.subscriber import Received
from cloud.ingest.writer import Batch, DeadLetter
from protocols import (
    CommandResponse,
    ConfigReport,
    DetectionEvent,
    InvalidPayload,
    InvalidTopic,
    NodeHealth,
    NodeState,
    Telemetry,
    decode_message,
)
from protocols.fast_events import decode_event_fast, to_fast
from protocols.topics import NodeTopic


def decode_batch(messages: list[Received]) -> Batch:
    batch = Batch()
    for message in messages:
        event = decode_event_fast(message.topic, message.payload, message.received_at)
        if event is not None:
            batch.events.append((event, message.received_at))
            continue
        try:
            parts, decoded = decode_message(message.topic, message.payload, now=message.received_at)
        except InvalidTopic as exc:
            batch.dead.append(DeadLetter(message.topic, message.payload, "topic", exc.reason))
            continue
        except InvalidPayload as exc:
            batch.dead.append(DeadLetter(message.topic, message.payload, exc.field, exc.reason))
            continue
        at = message.received_at
        match decoded:
            case DetectionEvent():  # valid, in a form the fast path does not take
                batch.events.append((to_fast(decoded), at))
            case NodeState():
                batch.states.append((decoded, at))
            case NodeHealth():
                batch.health.append((decoded, message.payload, at))
            case Telemetry():
                batch.telemetry.append((decoded, at))
            case ConfigReport():
                batch.reports.append((decoded, at))
            case CommandResponse():
                batch.responses.append((decoded, at))
            case bytes() if isinstance(parts, NodeTopic):
                batch.snapshots.append((parts, decoded, at))
            case _:
                # Topics ingest does not subscribe to (alerts, desired config, commands).
                batch.dead.append(
                    DeadLetter(
                        message.topic, message.payload, "topic", "not a channel ingest stores"
                    )
                )
    return batch
