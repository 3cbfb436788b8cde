"""Whose a snapshot is: the rules that attach it to its node's event or command answer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from protocols.enums import SnapshotVariant
from protocols.topics import snapshot_topic


class Verdict(StrEnum):
    ATTACH = "attach"
    WAIT = "wait"  # nothing names it yet: its owner may still come
    # Dropped (the values are the reasons counted and logged):
    OTHER_NODE = "other_node"  # the event or command is another node's
    SHA256 = "sha256"  # its owner lists other bytes for that variant
    VARIANT = "variant"  # its owner lists no such variant
    NO_EVENT = "no_event"  # nothing of its node vouched for it within the wait
    UNWRITTEN = "unwritten"  # recorded, maybe written, but its batch never committed
    QUOTA = "quota"  # its node had enough waiting already: not written
    DAY_QUOTA = "day_quota"  # its node had sent its day's bytes already: not written

    @property
    def dropped(self) -> bool:
        return self not in (Verdict.ATTACH, Verdict.WAIT)


@dataclass(frozen=True)
class Owner:
    """What a snapshot's id names: events with that id (their node and snapshot list), the
    node a command with that request id went to, and that command's answer."""

    events: list[dict[str, Any]]
    addressed_to: str | None
    answered_by: str | None
    answered_sha256: str | None
    answered_topic: str | None


def judge(owner: Owner, *, node_id: str, event_id: UUID, variant: str, sha256: str) -> Verdict:
    """Attach only to the sending node's own event listing (variant, sha256), or to its own
    answer to a command sent to it naming the sha256 and the topic the picture came on."""
    own = [e for e in owner.events if e["node_id"] == node_id]
    if own:
        listed = [s for e in own for s in e["snapshots"] or []]
        if any(s.get("variant") == variant and s.get("sha256") == sha256 for s in listed):
            return Verdict.ATTACH
        if any(s.get("variant") == variant for s in listed):
            return Verdict.SHA256
        return Verdict.VARIANT
    if owner.events:
        return Verdict.OTHER_NODE
    if owner.addressed_to is None:
        return Verdict.WAIT  # an event not stored yet (or never: the wait decides)
    if owner.addressed_to != node_id:
        return Verdict.OTHER_NODE
    if owner.answered_by is None:
        return Verdict.WAIT
    if owner.answered_by != node_id:
        return Verdict.OTHER_NODE  # another node answered first: nothing vouches for it
    if owner.answered_topic != snapshot_topic(node_id, event_id, SnapshotVariant(variant)):
        return Verdict.VARIANT
    return Verdict.ATTACH if owner.answered_sha256 == sha256 else Verdict.SHA256
