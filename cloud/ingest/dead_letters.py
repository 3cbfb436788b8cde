"""Dead letters: what ingest could not store, described (topic, node, size, sha256, first
bytes, field, reason, cause), one row per distinct message with its delivery count, and
dropped after the retention. A box could send megabytes of junk: none of it is kept."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg

from cloud.snapshots import sha256_hex

CONFLICT_REASON = "conflicting duplicate: an event with this id and other content came first"
# What a dead letter keeps of its message besides size and sha256: enough to recognise it.
DEAD_LETTER_PREFIX_BYTES = 256


class Cause(StrEnum):
    """Why a message became a dead letter (the metric's label, the operators' filter)."""

    INVALID = "invalid"  # the protocol refused it: the field and reason say why
    TOO_OLD = "too_old"  # an event older than CLOUD_INGEST_MAX_EVENT_AGE_DAYS
    CONFLICT = "conflict"  # an event id stored before with other content
    CRASH = "crash"  # it killed or hung the decoder it was tried in
    ERROR = "error"  # an exception nobody foresaw
    DATABASE = "database"  # the database refused it alone


@dataclass
class DeadLetter:
    """A message ingest could not store. The payload is kept here only to describe it:
    the table holds its size, sha256 and first bytes."""

    topic: str
    payload: bytes
    field: str
    reason: str
    cause: Cause = Cause.INVALID


def write_dead_letters(conn: psycopg.Connection, dead: Iterable[DeadLetter]) -> None:
    """One row per distinct message (topic and sha256): a redelivery adds to its count.
    In key order, as every process locks them."""
    rows: dict[tuple[str, str], list[Any]] = {}
    for letter in dead:
        topic = _text(letter.topic, 1024)
        digest = sha256_hex(letter.payload)
        row = rows.get((topic, digest))
        if row is not None:
            row[-1] += 1
            continue
        rows[(topic, digest)] = [
            topic,
            _node_of(topic),
            len(letter.payload),
            digest,
            letter.payload[:DEAD_LETTER_PREFIX_BYTES],
            _text(letter.field, 256),
            _text(letter.reason, 2048),
            letter.cause.value,
            1,
        ]
    conn.execute(
        "INSERT INTO ingest_dead_letters (topic, node_id, size_bytes, sha256, prefix, "
        "field, reason, cause, deliveries) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::int4[], %s::text[], "
        "%s::bytea[], %s::text[], %s::text[], %s::text[], %s::int4[]) ORDER BY 1, 4 "
        "ON CONFLICT (topic, sha256) DO UPDATE SET "
        "deliveries = ingest_dead_letters.deliveries + excluded.deliveries, "
        "last_received_at = now()",
        [list(column) for column in zip(*(row for _, row in sorted(rows.items())), strict=True)],
    )


def prune_dead_letters(conn: psycopg.Connection, *, days: int) -> int:
    """Drop dead letters not delivered again for `days`; returns how many."""
    cur = conn.execute(
        "DELETE FROM ingest_dead_letters "
        "WHERE last_received_at < now() - make_interval(days => %s)",
        (days,),
    )
    return cur.rowcount


def _text(value: str, limit: int) -> str:
    """Text PostgreSQL takes: no NUL, no lone surrogate (both may come from a payload)."""
    return value[:limit].replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode()


def _node_of(topic: str) -> str | None:
    parts = topic.split("/", 4)
    if len(parts) > 3 and parts[:3] == ["gw", "v1", "nodes"]:
        return _text(parts[3], 64)
    return None
