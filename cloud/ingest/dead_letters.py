"""Dead letters: what ingest could not store, described (topic, node, size, sha256, first
bytes, field, reason, cause), one row per distinct message with its delivery count, and
dropped after the retention. A box could send megabytes of junk: none of it is kept.

Nor can it write rows without end: a node has at most DEAD_LETTERS_PER_NODE distinct ones
(50,000 tiny junk messages took 26 MB); past that, its new ones are counted on one row per
cause, topic the node's whole subtree (`<nodes>/<node>/#`) and sha256 `overflow:<cause>`,
which keeps the last one's size, first bytes, field, topic and reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import psycopg

from cloud.snapshots import sha256_hex
from protocols.topics import NODES

CONFLICT_REASON = "conflicting duplicate: an event with this id and other content came first"
# What a dead letter keeps of its message besides size and sha256: enough to recognise it.
DEAD_LETTER_PREFIX_BYTES = 256
DEAD_LETTERS_PER_NODE = 1000
OVERFLOW_SHA256 = "overflow"


class Cause(StrEnum):
    """Why a message became a dead letter (the metric's label, the operators' filter)."""

    INVALID = "invalid"  # the protocol refused it: the field and reason say why
    TOO_OLD = "too_old"  # an event older than CLOUD_INGEST_MAX_EVENT_AGE_DAYS
    CONFLICT = "conflict"  # an event id stored before with other content
    CRASH = "crash"  # it killed or hung the decoder it was tried in
    ERROR = "error"  # an exception nobody foresaw
    DATABASE = "database"  # the database refused it alone
    FLOOD = "flood"  # its box sent beyond its share with its parking limit full
    AHEAD = "ahead"  # a time further ahead than clock skew allows: taken once it has come


@dataclass
class DeadLetter:
    """A message ingest could not store. The payload is kept here only to describe it:
    the table holds its size, sha256 and first bytes."""

    topic: str
    payload: bytes
    field: str
    reason: str
    cause: Cause = Cause.INVALID


@dataclass
class _Row:
    """A dead letter as its table holds it."""

    topic: str
    node_id: str | None
    size_bytes: int
    sha256: str
    prefix: bytes
    field: str
    reason: str
    cause: str
    deliveries: int = 1

    def values(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]


def write_dead_letters(
    conn: psycopg.Connection, dead: Iterable[DeadLetter], *, per_node: int = DEAD_LETTERS_PER_NODE
) -> None:
    """One row per distinct message (topic and sha256): a redelivery adds to its count;
    a node's new ones past `per_node` rows are counted on its overflow rows. In key order,
    as every process locks them."""
    rows: dict[tuple[str, str], _Row] = {}
    for letter in dead:
        topic = _text(letter.topic, 1024)
        digest = sha256_hex(letter.payload)
        row = rows.get((topic, digest))
        if row is not None:
            row.deliveries += 1
            continue
        rows[(topic, digest)] = _Row(
            topic,
            _node_of(topic),
            len(letter.payload),
            digest,
            letter.payload[:DEAD_LETTER_PREFIX_BYTES],
            _text(letter.field, 256),
            _text(letter.reason, 2048),
            letter.cause.value,
        )
    if not rows:
        return
    rows = _within_node_limits(conn, rows, per_node)
    conn.execute(
        "INSERT INTO ingest_dead_letters (topic, node_id, size_bytes, sha256, prefix, "
        "field, reason, cause, deliveries) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::int4[], %s::text[], "
        "%s::bytea[], %s::text[], %s::text[], %s::text[], %s::int4[]) ORDER BY 1, 4 "
        "ON CONFLICT (topic, sha256) DO UPDATE SET "
        "deliveries = ingest_dead_letters.deliveries + excluded.deliveries, "
        "size_bytes = excluded.size_bytes, prefix = excluded.prefix, field = excluded.field, "
        "reason = excluded.reason, last_received_at = now()",
        [
            list(column)
            for column in zip(*(row.values() for _, row in sorted(rows.items())), strict=True)
        ],
    )


def _within_node_limits(
    conn: psycopg.Connection, rows: dict[tuple[str, str], _Row], per_node: int
) -> dict[tuple[str, str], _Row]:
    """`rows`, with each new message of a node that has `per_node` rows already counted on
    that node's overflow row for its cause instead. (Two processes at once may each fill a
    node's last room: it then has a few more rows, still bounded.)"""
    nodes = sorted({row.node_id for row in rows.values() if row.node_id is not None})
    used: dict[str, int] = dict(
        conn.execute(
            "SELECT node_id, count(*) FROM ingest_dead_letters "
            "WHERE node_id = ANY(%s) AND NOT starts_with(sha256, %s) GROUP BY node_id",
            (nodes, OVERFLOW_SHA256),
        ).fetchall()
    )
    if all(used.get(node, 0) + len(rows) <= per_node for node in nodes):
        return rows
    keys = sorted(rows)
    known = set(
        conn.execute(
            "SELECT topic, sha256 FROM ingest_dead_letters "
            "WHERE (topic, sha256) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([topic for topic, _ in keys], [digest for _, digest in keys]),
        ).fetchall()
    )
    kept: dict[tuple[str, str], _Row] = {}
    for key in keys:
        row, node = rows[key], rows[key].node_id
        if node is None or key in known:
            kept[key] = row
        elif used.get(node, 0) < per_node:
            used[node] = used.get(node, 0) + 1
            kept[key] = row
        else:
            overflow = (f"{NODES}/{node}/#", f"{OVERFLOW_SHA256}:{row.cause}")
            earlier = kept.get(overflow)
            kept[overflow] = _Row(
                overflow[0],
                node,
                row.size_bytes,
                overflow[1],
                row.prefix,
                row.field,
                (
                    f"more than {per_node} distinct dead letters from this node: the rest "
                    f"are counted here; the last one: {row.topic}: {row.field}: {row.reason}"
                )[:2048],
                row.cause,
                row.deliveries + (earlier.deliveries if earlier else 0),
            )
    return kept


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
