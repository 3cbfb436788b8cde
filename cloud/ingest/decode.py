"""Raw MQTT messages → a Batch of decoded messages; bad ones become dead letters.

A message can fail; ingest cannot: whatever one message does to a decoder — a refusal, an
exception nobody foresaw — costs that message alone, as a dead letter with its reason."""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from cloud.ingest.dead_letters import CONFLICT_REASON, Cause, DeadLetter
from cloud.ingest.subscriber import Received
from cloud.ingest.writer import Batch
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
from protocols.base import IN_THE_FUTURE
from protocols.fast_events import FastDetectionEvent, decode_event_fast, to_fast
from protocols.topics import NodeTopic

logger = logging.getLogger(__name__)

DEFAULT_MAX_AGE = timedelta(days=30)

# Exception types already logged with their traceback: a flood of one hostile form must
# not bury the log, and one traceback is all a bug report needs.
_logged: set[type[BaseException]] = set()


def decode_batch(messages: list[Received], *, max_age: timedelta = DEFAULT_MAX_AGE) -> Batch:
    """Decode each message on its own: one that fails in any way is a dead letter."""
    batch = Batch()
    for message in messages:
        try:
            _decode(batch, message, max_age)
        except Exception as exc:  # noqa: BLE001 - a message can fail, ingest cannot
            batch.dead.append(unexpected(message, exc))
    return batch


def unexpected(message: Received, exc: BaseException) -> DeadLetter:
    """The dead letter of a message whose handling raised `exc`, logged once per type."""
    kind = type(exc)
    logger.error(
        "unexpected %s handling a message on %s (%d bytes): dead letter",
        kind.__name__,
        message.topic,
        len(message.payload),
        exc_info=exc if kind not in _logged else None,
    )
    _logged.add(kind)
    return DeadLetter(
        message.topic, message.payload, "$", f"{kind.__name__}: {exc}"[:500], Cause.ERROR
    )


def _decode(batch: Batch, message: Received, max_age: timedelta) -> None:
    at = message.received_at
    event = decode_event_fast(message.topic, message.payload, at)
    if event is not None:
        _add_event(batch, event, message, max_age)
        return
    try:
        parts, decoded = decode_message(message.topic, message.payload, now=at)
    except InvalidTopic as exc:
        batch.dead.append(DeadLetter(message.topic, message.payload, "topic", exc.reason))
        return
    except InvalidPayload as exc:
        cause = Cause.AHEAD if IN_THE_FUTURE in exc.reason else Cause.INVALID
        batch.dead.append(DeadLetter(message.topic, message.payload, exc.field, exc.reason, cause))
        return
    match decoded:
        case DetectionEvent():  # valid, in a form the fast path does not take
            _add_event(batch, to_fast(decoded), message, max_age)
        case NodeState():
            batch.states.append((decoded, at))
        case NodeHealth():
            batch.health.append((decoded, message.payload, at))
        case Telemetry():
            batch.telemetry.append((decoded, at))
        case ConfigReport():
            batch.reports.append((decoded, at))
        case CommandResponse():
            batch.responses.append((decoded, message.payload, at))
        case bytes() if isinstance(parts, NodeTopic):
            batch.snapshots.append((parts, decoded, at))
        case _:
            # Topics ingest does not subscribe to (alerts, desired config, commands).
            batch.dead.append(
                DeadLetter(message.topic, message.payload, "topic", "not a channel ingest stores")
            )


def _add_event(
    batch: Batch, event: FastDetectionEvent, message: Received, max_age: timedelta
) -> None:
    """An event for the batch, unless too old or the batch holds its id already (then the
    same event again is counted, and another one with that id is a dead letter)."""
    if event.observed_at < message.received_at - max_age:
        batch.dead.append(
            DeadLetter(
                message.topic,
                message.payload,
                "observed_at",
                f"older than {max_age.days} days: not stored",
                Cause.TOO_OLD,
            )
        )
        return
    event_id: UUID = event.event_id
    sources = batch.sources
    known = len(sources)
    earlier = sources.setdefault(event_id, message)  # one UUID hash (Python code), not two
    if len(sources) > known:
        batch.events.append((event, message.received_at))
    elif earlier.payload == message.payload or _first(batch, event_id) == event:
        batch.duplicates += 1
    else:
        batch.dead.append(
            DeadLetter(
                message.topic,
                message.payload,
                "event_id",
                CONFLICT_REASON,
                Cause.CONFLICT,
            )
        )


def _first(batch: Batch, event_id: UUID) -> FastDetectionEvent | None:
    """The batch's event with this id (a rare path: a second copy in one batch)."""
    return next((e for e, _ in batch.events if e.event_id == event_id), None)
