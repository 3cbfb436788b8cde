"""The durable outbox: every message a node sends is written here first. An event (one
with a `seq`) is deleted only when the county's receipt names it: the broker's PUBACK only
marks it sent, and one sent and not receipted is sent again after `receipt_timeout_s`,
then after doubling waits (a broker that died before saving lost it; the county stores it
once). Other messages go at the broker's PUBACK. SQLite in WAL mode with synchronous=FULL,
so a write that `add` returned from survives a power cut; a disk budget drops health, then
snapshots, then events, oldest first, and counts every drop."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

logger = logging.getLogger(__name__)


class Priority(IntEnum):
    """Drain order when the link comes back; lower first."""

    CONTROL = 0  # command responses, config reports
    ALERT = 1  # events of high severity, camera offline/tamper
    EVENT = 2
    TELEMETRY = 3
    SNAPSHOT = 4
    HEALTH = 5


# What goes first when the disk budget is full: the least valuable, oldest first.
DROP_ORDER = (
    Priority.HEALTH,
    Priority.SNAPSHOT,
    Priority.TELEMETRY,
    Priority.EVENT,
    Priority.ALERT,
)
DROP_COUNTER = {
    Priority.HEALTH: "dropped_health",
    Priority.SNAPSHOT: "dropped_snapshots",
    Priority.TELEMETRY: "dropped_events",
    Priority.EVENT: "dropped_events",
    Priority.ALERT: "dropped_events",
    Priority.CONTROL: "dropped_events",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_drain ON entries (priority, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Receipts (added to outboxes made before them): an event's seq; when the broker took it
# (NULL: not yet), how often, and when to send it again if no receipt names it.
_RECEIPT_COLUMNS = {
    "seq": "INTEGER",
    "sent_at": "REAL",
    "sends": "INTEGER NOT NULL DEFAULT 0",
    "resend_at": "REAL",
}
_RECEIPT_INDEXES = """
CREATE INDEX IF NOT EXISTS entries_unsent ON entries (priority, id) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS entries_resend ON entries (resend_at) WHERE sent_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_seq ON entries (seq) WHERE seq IS NOT NULL;
"""
# The longest wait between sends of an event no receipt names.
MAX_RESEND_WAIT_S = 3600.0
# Row overhead beyond topic and payload, for the budget (SQLite record and index entry).
_ROW_OVERHEAD = 64


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    priority: Priority
    qos: int = 1
    retain: bool = False
    seq: int | None = None  # an event's: kept until a receipt names it


@dataclass(frozen=True)
class Entry:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    priority: Priority
    seq: int | None = None


@dataclass
class _Ticket:
    """One caller's rows waiting for a (shared) commit."""

    rows: list[tuple[int, str, bytes, int, int, int | None]]
    done: bool = False
    error: Exception | None = None


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    oldest_age_s: float | None
    budget_bytes: int
    dropped_events: int
    dropped_snapshots: int
    dropped_health: int
    unreceipted: int = 0  # sent, and no receipt yet
    unreceipted_oldest_age_s: float | None = None
    unsent: int = 0


class Outbox:
    """Thread-safe. One connection writes (add, budget); deletes of acknowledged entries go
    through the same connection in small transactions."""

    def __init__(
        self,
        path: Path,
        *,
        budget_bytes: int,
        receipt_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.path = path
        self.budget_bytes = budget_bytes
        self.receipt_timeout_s = receipt_timeout_s
        self._lock = threading.Lock()  # the write lock: one transaction at a time
        self._queue_lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before `add` returns (NORMAL may lose the last commits
        # in a power cut, which on a village box is the common way to stop).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
        for column, kind in _RECEIPT_COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE entries ADD COLUMN {column} {kind}")
        self._db.executescript(_RECEIPT_INDEXES)
        self._bytes = self._db.execute(
            "SELECT COALESCE(SUM(length(topic) + length(payload)), 0) + COUNT(*) * ? FROM entries",
            (_ROW_OVERHEAD,),
        ).fetchone()[0]
        self._seq = self.counter("next_seq")

    # ---- counters --------------------------------------------------------------------

    def counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _bump(self, name: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def next_seq(self) -> int:
        """The node's next event sequence number; persisted with the next `add`, so it only
        grows across restarts."""
        with self._lock:
            value = self._seq
            self._seq += 1
            return value

    def last_seq(self) -> int | None:
        """The highest seq given out, None before the first."""
        with self._lock:
            return self._seq - 1 if self._seq > 0 else None

    # ---- writing ---------------------------------------------------------------------

    def add(self, messages: Iterable[Message]) -> None:
        """Store messages durably, making room within the budget; returns once they are on
        disk. Concurrent callers share one commit (group commit): whoever holds the write
        lock commits everything queued so far, its own and the others'."""
        rows = [(m.priority, m.topic, m.payload, m.qos, int(m.retain), m.seq) for m in messages]
        if not rows:
            return
        ticket = _Ticket(rows)
        with self._queue_lock:
            self._queue.append(ticket)
        with self._lock:
            if not ticket.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if ticket.error is not None:
            raise ticket.error

    def _commit(self, batch: list[_Ticket]) -> None:
        rows = [row for ticket in batch for row in ticket.rows]
        size = sum(len(r[1]) + len(r[2]) + _ROW_OVERHEAD for r in rows)
        now = self.clock()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._make_room(size)
                self._db.executemany(
                    "INSERT INTO entries (priority, topic, payload, qos, retain, seq, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(*r, now) for r in rows],
                )
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES ('next_seq', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                    (self._seq,),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += size
        except (sqlite3.Error, OSError) as exc:  # every waiter of this commit learns of it
            for ticket in batch:
                ticket.error = exc
        finally:
            for ticket in batch:
                ticket.done = True

    def _make_room(self, needed: int) -> None:
        """Drop whole entries, least valuable and oldest first, until `needed` fits."""
        excess = self._bytes + needed - self.budget_bytes
        for priority in DROP_ORDER:
            if excess <= 0:
                return
            victims = self._db.execute(
                "SELECT id, length(topic) + length(payload) FROM entries WHERE priority = ? "
                "ORDER BY id",
                (priority,),
            ).fetchall()
            chosen, freed = [], 0
            for entry_id, length in victims:
                if freed >= excess:
                    break
                chosen.append((entry_id,))
                freed += length + _ROW_OVERHEAD
            if chosen:
                self._db.executemany("DELETE FROM entries WHERE id = ?", chosen)
                self._bump(DROP_COUNTER[priority], len(chosen))
                self._bytes -= freed
                excess -= freed
                logger.warning(
                    "outbox full: dropped %d %s entries (budget %d bytes)",
                    len(chosen),
                    priority.name.lower(),
                    self.budget_bytes,
                )

    # ---- draining --------------------------------------------------------------------

    def pending(self, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[Entry]:
        """The next entries to send, skipping those in flight: events whose receipt is
        overdue first (the oldest sent), then what was never sent, by priority then age."""
        columns = "id, topic, payload, qos, retain, priority, seq"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {columns} FROM entries WHERE sent_at IS NOT NULL "  # noqa: S608
                "AND resend_at <= ? ORDER BY resend_at LIMIT ?",
                (self.clock(), limit + len(exclude)),
            ).fetchall()
            rows += self._db.execute(
                f"SELECT {columns} FROM entries WHERE sent_at IS NULL "  # noqa: S608
                "ORDER BY priority, id LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        return [
            Entry(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), Priority(r[5]), r[6])
            for r in rows
            if r[0] not in exclude
        ][:limit]

    def remove(self, ids: Iterable[int]) -> None:
        """Delete entries the broker acknowledged (not events: see `mark_sent`)."""
        keys = [(i,) for i in ids]
        if keys:
            self._delete("id = ?", keys)

    def mark_sent(self, ids: Iterable[int]) -> None:
        """Events the broker acknowledged: kept until a receipt names them, and sent again
        if none has by their time (`receipt_timeout_s`, doubling with each send)."""
        keys = [(i,) for i in ids]
        if not keys:
            return
        now = self.clock()
        with self._unsynced():
            self._db.executemany(
                "UPDATE entries SET sent_at = coalesce(sent_at, ?), sends = sends + 1, "
                "resend_at = ? + min(?, ? * (1 << min(sends, 16))) WHERE id = ?",
                [(now, now, MAX_RESEND_WAIT_S, self.receipt_timeout_s, k[0]) for k in keys],
            )

    def receipted(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Forget the events a receipt names (seq ranges, inclusive); returns how many."""
        keys = [(first, last) for first, last in ranges]
        if not keys:
            return 0
        return self._delete("seq BETWEEN ? AND ?", keys)

    @contextmanager
    def _unsynced(self) -> Iterator[None]:
        """One transaction without an fsync of its own, under the write lock: what it
        changes (a delete, a mark of sent) lost in a power cut only sends an entry again
        (ids make that harmless); the next FULL commit makes it durable too."""
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def _delete(self, condition: str, keys: Sequence[tuple[int, ...]]) -> int:
        with self._unsynced():
            size = count = 0
            for key in keys:
                freed = self._db.execute(
                    "SELECT COALESCE(SUM(length(topic) + length(payload)), 0), COUNT(*) "  # noqa: S608
                    f"FROM entries WHERE {condition}",
                    key,
                ).fetchone()
                size += freed[0]
                count += freed[1]
            self._db.executemany(f"DELETE FROM entries WHERE {condition}", keys)  # noqa: S608
            self._bytes -= size + count * _ROW_OVERHEAD  # under the write lock, as in _commit
        return int(count)

    def stats(self) -> OutboxStats:
        with self._lock:
            depth, oldest, unreceipted, oldest_sent = self._db.execute(
                "SELECT COUNT(*), MIN(created_at), COUNT(sent_at), "
                "MIN(created_at) FILTER (WHERE sent_at IS NOT NULL) FROM entries"
            ).fetchone()
            now = self.clock()
            return OutboxStats(
                depth=depth,
                bytes=self._bytes,
                oldest_age_s=None if oldest is None else max(0.0, now - oldest),
                budget_bytes=self.budget_bytes,
                dropped_events=self.counter("dropped_events"),
                dropped_snapshots=self.counter("dropped_snapshots"),
                dropped_health=self.counter("dropped_health"),
                unreceipted=unreceipted,
                unreceipted_oldest_age_s=None
                if oldest_sent is None
                else max(0.0, now - oldest_sent),
                unsent=depth - unreceipted,
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
