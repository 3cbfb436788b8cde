"""What the county has stored of a node's events, so the node may forget them.

The broker is a relay, not a store: a PUBACK says only that the broker took a message, and a
broker that dies before it saves loses what it acknowledged. A node therefore keeps each
event until a receipt names its `seq`, and sends it again when none comes (the county stores
an event once, however often it arrives)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from protocols.base import Payload, UtcDatetime
from protocols.events import MAX_SEQ
from protocols.identifiers import NodeId

MAX_RECEIPT_RANGES = 1024  # 43 KB at most, within the channel's 64 KiB

Seq = Annotated[int, Field(ge=0, le=MAX_SEQ)]


class Receipt(Payload):
    """On `receipts`, cloud → node. Each range `[first, last]` (inclusive) names events of
    the node that the county now holds for good: stored, held to be stored later, or refused
    for what they are (sending them again would not change that). Ranges come in no
    particular order and may repeat what an earlier receipt said."""

    node_id: NodeId
    sent_at: UtcDatetime
    seqs: list[tuple[Seq, Seq]] = Field(
        min_length=1,
        max_length=MAX_RECEIPT_RANGES,
        description="Ranges of `seq`, `[first, last]`, first ≤ last.",
        examples=[[[1041, 1187], [1190, 1190]]],
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> Self:
        for first, last in self.seqs:
            if first > last:
                raise ValueError(f"range [{first}, {last}] ends before it starts")
        return self


def seq_ranges(seqs: list[int] | set[int]) -> list[tuple[int, int]]:
    """The fewest inclusive ranges covering `seqs`, in order."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges
