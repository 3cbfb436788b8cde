"""Snapshots on their way in: kept until their owner vouches for their bytes, then attached."""

# A snapshot's owner is an event of the node that sent it listing its variant and sha256
# (or, for a `snapshot`/`recheck_zone` answer, the command sent to that node, answered by
# it with the sha256). Snapshot and owner may reach different ingest processes, in either
# order, in transactions that do not see each other, so each side attaches what it finds:
# the snapshot's batch (its owner committed before), the owner's batch (the snapshot
# committed before; `attach_for_events`, `attach_for_answers`) and, for what both missed,
# the sweep, which also removes what was refused or waited too long.
#
# Life of an upload row (table snapshot_uploads, keyed by storage key):
#   journal (own commit) -> file written -> written (batch commit) -> attached or dropped.
# Every step locks the row; a snapshots row and a removal never race for one key.

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from cloud.ingest.snapshot_owners import Owner, Verdict, judge
from cloud.metrics import INGEST_SNAPSHOTS_DROPPED
from cloud.snapshots import SnapshotStore, sha256_hex, storage_key
from protocols.identifiers import uuid7_time
from protocols.topics import NodeTopic

logger = logging.getLogger(__name__)

SWEEP_LIMIT = 500  # uploads one sweep looks at, oldest first: a sweep stays short
# How far from its id's own time an event is looked for (as the API does).
EVENT_TIME_SLACK = timedelta(days=1)


@dataclass(frozen=True)
class Upload:
    storage_key: str
    node_id: str
    event_id: UUID
    variant: str
    sha256: str
    size_bytes: int
    received_at: datetime


@dataclass(frozen=True)
class Dropped:
    node_id: str
    event_id: UUID
    variant: str
    sha256: str
    reason: Verdict  # one of the dropped verdicts


def _made_at(event_id: UUID) -> datetime | None:
    """When a UUIDv7 was made; None for an id that is not one, or names no time a datetime
    holds (no event or command has such an id, and a key cannot be dated by it)."""
    if event_id.version != 7:
        return None
    try:
        return uuid7_time(event_id)
    except (ValueError, OverflowError):
        return None


def uploads_of(
    snapshots: Iterable[tuple[NodeTopic, bytes, datetime]],
) -> tuple[list[tuple[Upload, bytes]], list[Dropped]]:
    """A batch's snapshots as uploads with their bytes; those whose id is no UUIDv7 are
    dropped at once (nothing could ever vouch for them, and nothing is stored)."""
    uploads, dropped = [], []
    for topic, data, received_at in snapshots:
        if topic.event_id is None or topic.variant is None:
            raise ValueError(f"not a snapshot topic: {topic}")
        sha256, variant = sha256_hex(data), topic.variant.value
        if _made_at(topic.event_id) is None:
            dropped.append(
                Dropped(topic.node_id, topic.event_id, variant, sha256, Verdict.NO_EVENT)
            )
            continue
        key = storage_key(topic.node_id, topic.event_id, variant, sha256)
        upload = Upload(key, topic.node_id, topic.event_id, variant, sha256, len(data), received_at)
        uploads.append((upload, data))
    return uploads, dropped


COLUMNS = "storage_key, node_id, event_id, variant, sha256, size_bytes, received_at"
_UNNEST = (
    "unnest(%s::text[], %s::text[], %s::uuid[], %s::text[], %s::text[], %s::int4[], "
    "%s::timestamptz[])"
)


def _columns(uploads: Sequence[Upload]) -> tuple[list[Any], ...]:
    return (
        [u.storage_key for u in uploads],
        [u.node_id for u in uploads],
        [u.event_id for u in uploads],
        [u.variant for u in uploads],
        [u.sha256 for u in uploads],
        [u.size_bytes for u in uploads],
        [u.received_at for u in uploads],
    )


def _uploads(rows: Iterable[Sequence[Any]]) -> list[Upload]:
    return [Upload(*row[:7]) for row in rows]


def journal(conn: psycopg.Connection, uploads: Sequence[Upload]) -> None:
    """Record uploads before their files are written, in the caller's (own) commit: a file
    whose batch then never commits is still known, and the sweep removes it."""
    conn.execute(
        f"INSERT INTO snapshot_uploads ({COLUMNS}) SELECT * FROM {_UNNEST} "  # noqa: S608
        "ORDER BY 1 ON CONFLICT (storage_key) DO NOTHING",
        _columns(uploads),
    )


def store_uploads(
    conn: psycopg.Connection, store: SnapshotStore, received: Sequence[tuple[Upload, bytes]]
) -> tuple[list[Dropped], bool]:
    """A batch's snapshots, in its transaction: each file written before any row points at
    it, then attached, refused or left waiting. Returns what was dropped and whether any
    is waiting."""
    data = {upload.storage_key: raw for upload, raw in received}
    uploads = list({upload.storage_key: upload for upload, _ in received}.values())
    # Lock each upload's row (made again if a sweep removed it meanwhile) before its file
    # is written: a sweep never removes a file while it is being written.
    rows = conn.execute(
        f"INSERT INTO snapshot_uploads ({COLUMNS}) SELECT * FROM {_UNNEST} "  # noqa: S608
        "ORDER BY 1 ON CONFLICT (storage_key) DO UPDATE SET written = snapshot_uploads.written "
        "RETURNING storage_key, written",
        _columns(uploads),
    ).fetchall()
    unwritten = [key for key, written in rows if not written]
    for key in unwritten:
        store.put(key, data[key])
    if unwritten:
        conn.execute(
            "UPDATE snapshot_uploads SET written = true WHERE storage_key = ANY(%s)", (unwritten,)
        )
    verdicts = _judge(conn, uploads)
    dropped = _settle(conn, store, verdicts)
    return dropped, any(v is Verdict.WAIT for _, v in verdicts)


@dataclass(frozen=True)
class Quota:
    """What one box's snapshots may take: bytes waiting for their events at once, and bytes
    received in a day (attached or waiting)."""

    waiting_bytes: int = 64 * 1024 * 1024
    daily_bytes: int = 1024 * 1024 * 1024
    # Pictures waiting at once, whatever their size: three-byte "pictures" to made-up ids
    # fit a byte quota by the million, and each is a row the sweep looks at again and again
    # (300 a second held every box's events up by 47 s).
    waiting_count: int = 1000
    # Pictures a day, whatever their size: 700-byte pictures fit the byte quota 1.5 million
    # times a day, each a file (4 KiB of disk, an inode) and a row. A busy town box's
    # 43,000 events a day with a frame and a crop each stay well within it.
    daily_count: int = 200_000


DEFAULT_QUOTA = Quota()


def within_quota(
    conn: psycopg.Connection, received: Sequence[tuple[Upload, bytes]], quota: Quota
) -> tuple[list[tuple[Upload, bytes]], list[Dropped]]:
    """The batch's uploads that fit in their node's quota (counting what other batches, in
    any process, have waiting or attached), and the rest dropped before a file is written,
    their journal rows removed. A box's own events can vouch for any picture it sends: only
    a quota stops one that lists megabytes of them in event after event."""
    keys = [upload.storage_key for upload, _ in received]
    nodes = sorted({upload.node_id for upload, _ in received})
    rows = conn.execute(
        "SELECT node_id, sum(size_bytes), sum(size_bytes) FILTER (WHERE waiting), "
        "count(*) FILTER (WHERE waiting), count(*) FROM ("
        "  SELECT node_id, size_bytes, true AS waiting FROM snapshot_uploads "
        "  WHERE node_id = ANY(%s) AND NOT storage_key = ANY(%s) "
        "  UNION ALL "
        "  SELECT node_id, size_bytes, false FROM snapshots "
        "  WHERE node_id = ANY(%s) AND received_at > now() - interval '1 day') AS used "
        "GROUP BY node_id",
        (nodes, keys, nodes),
    ).fetchall()
    day = {node: int(total) for node, total, _, _, _ in rows}
    waiting = {node: int(part or 0) for node, _, part, _, _ in rows}
    count = {node: int(n) for node, _, _, n, _ in rows}
    day_count = {node: int(n) for node, _, _, _, n in rows}
    kept: list[tuple[Upload, bytes]] = []
    over: list[tuple[Upload, Verdict]] = []
    for upload, data in received:
        node, size = upload.node_id, upload.size_bytes
        if (
            day.get(node, 0) + size > quota.daily_bytes
            or day_count.get(node, 0) >= quota.daily_count
        ):
            over.append((upload, Verdict.DAY_QUOTA))
        elif (
            waiting.get(node, 0) + size > quota.waiting_bytes
            or count.get(node, 0) >= quota.waiting_count
        ):
            over.append((upload, Verdict.QUOTA))
        else:
            day[node] = day.get(node, 0) + size
            day_count[node] = day_count.get(node, 0) + 1
            waiting[node] = waiting.get(node, 0) + size
            count[node] = count.get(node, 0) + 1
            kept.append((upload, data))
    _forget(conn, [u.storage_key for u, _ in over])
    return kept, [Dropped(u.node_id, u.event_id, u.variant, u.sha256, v) for u, v in over]


def attach_for_events(conn: psycopg.Connection, new_events: str) -> int:
    """Attach waiting snapshots of the batch's new events (in the temp table `new_events`),
    in the batch's transaction; returns how many. Only what is attached here: a snapshot
    the event refuses is left for the sweep, so the event path never waits on the store."""
    # The batch joined to the few waiting uploads, not `event_id IN (batch)`, which grouped
    # the batch first (measured with 5 uploads waiting: 1.3 against 2.6 ms a 5,000-event
    # batch; 0.3 ms with none).
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM snapshot_uploads WHERE storage_key IN ("  # noqa: S608
        f"SELECT u.storage_key FROM {new_events} e JOIN snapshot_uploads u USING (event_id) "
        "WHERE u.written) ORDER BY storage_key FOR UPDATE SKIP LOCKED"
    ).fetchall()
    return _attach_found(conn, _uploads(rows))


def attach_for_answers(conn: psycopg.Connection, request_ids: list[UUID]) -> int:
    """Attach waiting snapshots of the batch's command answers (as `attach_for_events`)."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM snapshot_uploads "  # noqa: S608
        "WHERE written AND event_id = ANY(%s) ORDER BY storage_key FOR UPDATE SKIP LOCKED",
        (request_ids,),
    ).fetchall()
    return _attach_found(conn, _uploads(rows))


def _attach_found(conn: psycopg.Connection, uploads: list[Upload]) -> int:
    if not uploads:
        return 0
    attach = [u for u, v in _judge(conn, uploads) if v is Verdict.ATTACH]
    inserted = _insert_snapshots(conn, attach)
    _forget(conn, inserted)
    return len(inserted)


def sweep(
    conn: psycopg.Connection, store: SnapshotStore, *, now: datetime, wait: timedelta
) -> tuple[list[Dropped], bool]:
    """In the caller's transaction: attach what both sides missed, remove what was refused
    or waited longer than `wait` (file, then row), oldest first, skipping rows other
    processes hold. Returns what was dropped and whether uploads are still waiting."""
    deadline = now - wait
    rows = conn.execute(
        f"SELECT {COLUMNS}, written FROM snapshot_uploads "  # noqa: S608
        "WHERE written OR received_at < %s ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (deadline, SWEEP_LIMIT),
    ).fetchall()
    written = _uploads(r for r in rows if r[7])
    unwritten = _uploads(r for r in rows if not r[7])
    verdicts = [(u, Verdict.UNWRITTEN) for u in unwritten]
    for upload, found in _judge(conn, written):
        late = found is Verdict.WAIT and upload.received_at < deadline
        verdicts.append((upload, Verdict.NO_EVENT if late else found))
    dropped = _settle(conn, store, verdicts)
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM snapshot_uploads WHERE written)").fetchone()
    return dropped, bool(row and row[0])


def _judge(conn: psycopg.Connection, uploads: Sequence[Upload]) -> list[tuple[Upload, Verdict]]:
    """Each upload's verdict, from what its id names: events, commands, answers."""
    if not uploads:
        return []
    made = [uuid7_time(u.event_id) for u in uploads]  # each a UUIDv7 (see uploads_of)
    rows = conn.execute(
        "SELECT v.storage_key, "
        # Through the event's id claim, to its row by the partition key: a search by id
        # and time range was planned as a scan of the day's partition (5.4 ms a picture at
        # 168,000 events) while the partition had no statistics yet.
        "  (SELECT coalesce(json_agg(json_build_object('node_id', e.node_id, "
        "          'snapshots', e.snapshots)), '[]') FROM event_ids i "
        "   JOIN events e ON e.observed_at = i.observed_at AND e.event_id = i.event_id "
        "   WHERE i.event_id = v.event_id AND i.observed_at >= v.lower "
        "     AND i.observed_at < v.upper), "
        "  coalesce((SELECT c.node_id FROM commands c WHERE c.request_id = v.event_id), "
        "           (SELECT k.node_id FROM case_checks k WHERE k.request_id = v.event_id)), "
        "  r.node_id, r.data ->> 'sha256', r.data ->> 'snapshot_topic' "
        "FROM unnest(%s::text[], %s::uuid[], %s::timestamptz[], %s::timestamptz[]) "
        "     AS v(storage_key, event_id, lower, upper) "
        "LEFT JOIN command_responses r ON r.request_id = v.event_id",
        (
            [u.storage_key for u in uploads],
            [u.event_id for u in uploads],
            [m - EVENT_TIME_SLACK for m in made],
            [m + EVENT_TIME_SLACK for m in made],
        ),
    ).fetchall()
    owners = {row[0]: Owner(*row[1:]) for row in rows}
    return [
        (
            u,
            judge(
                owners[u.storage_key],
                node_id=u.node_id,
                event_id=u.event_id,
                variant=u.variant,
                sha256=u.sha256,
            ),
        )
        for u in uploads
    ]


def _settle(
    conn: psycopg.Connection, store: SnapshotStore, verdicts: list[tuple[Upload, Verdict]]
) -> list[Dropped]:
    """Attach and remove what has a verdict; leave what waits. Files no snapshots row names
    are deleted before their rows go (a failed delete rolls the transaction back: the rows
    stay, for the batch's retry or the next sweep)."""
    attach = [u for u, v in verdicts if v is Verdict.ATTACH]
    drop = [(u, v) for u, v in verdicts if v.dropped]
    _insert_snapshots(conn, attach)
    settled = attach + [u for u, _ in drop]
    if not settled:
        return []
    named = _named(conn, settled)
    for upload in settled:
        if upload.storage_key not in named:
            store.delete(upload.storage_key)
    _forget(conn, [u.storage_key for u in settled])
    return [Dropped(u.node_id, u.event_id, u.variant, u.sha256, reason) for u, reason in drop]


def _insert_snapshots(conn: psycopg.Connection, uploads: list[Upload]) -> list[str]:
    """The snapshots rows of attached uploads; the keys inserted (a node's event has one
    picture per variant: a second is not attached)."""
    if not uploads:
        return []
    rows = conn.execute(
        f"INSERT INTO snapshots ({COLUMNS}) SELECT * FROM {_UNNEST} "  # noqa: S608
        "ORDER BY 3, 4, 2 ON CONFLICT DO NOTHING RETURNING storage_key",
        _columns(uploads),
    ).fetchall()
    return [key for (key,) in rows]


def _named(conn: psycopg.Connection, uploads: list[Upload]) -> set[str]:
    """Which of the uploads' keys a snapshots row names (through the table's primary key)."""
    rows = conn.execute(
        "SELECT s.storage_key FROM snapshots s "
        "JOIN unnest(%s::uuid[], %s::text[], %s::text[]) AS v(event_id, variant, node_id) "
        "USING (event_id, variant, node_id)",
        ([u.event_id for u in uploads], [u.variant for u in uploads], [u.node_id for u in uploads]),
    ).fetchall()
    return {key for (key,) in rows}


def _forget(conn: psycopg.Connection, keys: list[str]) -> None:
    if keys:
        conn.execute("DELETE FROM snapshot_uploads WHERE storage_key = ANY(%s)", (keys,))


def report_dropped(dropped: Iterable[Dropped]) -> None:
    """Count and log each dropped snapshot (after its transaction committed)."""
    for d in dropped:
        INGEST_SNAPSHOTS_DROPPED.labels(d.reason.value).inc()
        logger.warning(
            "snapshot dropped reason=%s node_id=%s event_id=%s variant=%s sha256=%s",
            d.reason.value,
            d.node_id,
            d.event_id,
            d.variant,
            d.sha256,
        )
