"""Receipts: after a batch commits, each box is told which of its events the county now
holds (on its `receipts` topic), and only then does the box forget them. A
PUBACK from the broker says less: a broker that dies before it saves loses what it had
acknowledged, and the boxes, told it was delivered, had deleted it.

An event is receipted once it is stored (or a copy of one stored), parked to be taken up
later (it is in the county's database, see cloud.ingest.deferred) or refused for what it
is (sending it again would change nothing). Not receipted: what the parking could not hold
(cause `flood`), and what is refused only for now, its time further ahead than clock skew
allows (cause `ahead`): the box keeps it and sends it again later. Receipts are gathered for
`EVERY_S` and sent as few messages as their ranges allow: what one gets lost is sent again
by the box and receipted again."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import orjson

from cloud.ingest.dead_letters import Cause, DeadLetter
from cloud.ingest.subscriber import Received
from cloud.ingest.suspend import sender_of
from cloud.ingest.writer import Batch
from protocols import encode
from protocols.events import MAX_SEQ
from protocols.receipts import MAX_RECEIPT_RANGES, Receipt, seq_ranges
from protocols.topics import receipts_topic

EVERY_S = 0.5
_EVENTS_SUFFIX = "/events"


def settled(
    messages: Iterable[Received], batch: Batch, unreceipted: set[int]
) -> dict[str, set[int]]:
    """The seqs of the events among `messages` (acknowledged together) the county holds
    now, by box. `unreceipted`: ids of the payloads not to receipt (what the parking
    refused, what a suspended box's queue held)."""
    seqs: dict[str, set[int]] = {}
    for event, _ in batch.events:  # the common case: each message decoded into its event
        box = seqs.get(event.node_id)
        if box is None:
            box = seqs[event.node_id] = set()
        box.add(event.seq)
    if not (batch.duplicates or batch.dead or batch.deferred or unreceipted):
        return seqs
    # Copies, parked, refused or dropped messages: rare, looked at one by one.
    decoded = {id(batch.sources.get(event.event_id)) for event, _ in batch.events}
    for message in messages:
        if (
            not message.topic.endswith(_EVENTS_SUFFIX)
            or id(message) in decoded
            or id(message.payload) in unreceipted
        ):
            continue
        seq = _seq_in(message.payload)
        node = sender_of(message.topic)
        if seq is not None and node is not None:
            seqs.setdefault(node, set()).add(seq)
    return seqs


def refused_for_now(dead: Iterable[DeadLetter]) -> set[int]:
    """The payloads among dead letters that sent again later may be taken: not receipted."""
    return {id(letter.payload) for letter in dead if letter.cause in (Cause.FLOOD, Cause.AHEAD)}


def _seq_in(payload: bytes) -> int | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    seq = value.get("seq") if isinstance(value, dict) else None
    # bool is an int to Python, not to the protocol
    if type(seq) is int and 0 <= seq <= MAX_SEQ:
        return seq
    return None


class Receipts:
    """Seqs to receipt, by box, until `take` makes messages of them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.waiting: dict[str, set[int]] = {}
        self.last_sent = clock()

    def add(self, seqs: dict[str, set[int]]) -> None:
        for node, more in seqs.items():
            self.waiting.setdefault(node, set()).update(more)

    def due(self) -> bool:
        return bool(self.waiting) and self.clock() - self.last_sent >= EVERY_S

    def take(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of every receipt waiting, and nothing waits any more."""
        waiting, self.waiting = self.waiting, {}
        self.last_sent = self.clock()
        now = datetime.now(UTC)
        messages = []
        for node, seqs in sorted(waiting.items()):
            ranges = seq_ranges(seqs)
            for start in range(0, len(ranges), MAX_RECEIPT_RANGES):
                receipt = Receipt(
                    node_id=node, sent_at=now, seqs=ranges[start : start + MAX_RECEIPT_RANGES]
                )
                messages.append((receipts_topic(node), encode(receipt)))
        return messages
