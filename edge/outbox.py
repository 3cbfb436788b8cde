"""The durable outbox: every message a node sends is written here first, and deleted only
after the broker's PUBACK for it. SQLite in WAL mode with synchronous=FULL, so a write
that `add` returned from survives a power cut; a disk budget drops health, then snapshots,
then events, oldest first, and counts every drop."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
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
# Row overhead beyond topic and payload, for the budget (SQLite record and index entry).
_ROW_OVERHEAD = 64


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    priority: Priority
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Entry:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    priority: Priority


@dataclass
class _Ticket:
    """One caller's rows waiting for a (shared) commit."""

    rows: list[tuple[int, str, bytes, int, int]]
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


class Outbox:
    """Thread-safe. One connection writes (add, budget); deletes of acknowledged entries go
    through the same connection in small transactions."""

    def __init__(self, path: Path, *, budget_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()  # the write lock: one transaction at a time
        self._queue_lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before `add` returns (NORMAL may lose the last commits
        # in a power cut, which on a village box is the common way to stop).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
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

    # ---- writing ---------------------------------------------------------------------

    def add(self, messages: Iterable[Message]) -> None:
        """Store messages durably, making room within the budget; returns once they are on
        disk. Concurrent callers share one commit (group commit): whoever holds the write
        lock commits everything queued so far, its own and the others'."""
        rows = [(m.priority, m.topic, m.payload, m.qos, int(m.retain)) for m in messages]
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
        now = time.time()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._make_room(size)
                self._db.executemany(
                    "INSERT INTO entries (priority, topic, payload, qos, retain, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
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
        """The next entries to send, by priority then age, skipping those in flight."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, priority FROM entries "
                "ORDER BY priority, id LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        return [
            Entry(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), Priority(r[5]))
            for r in rows
            if r[0] not in exclude
        ][:limit]

    def remove(self, ids: Iterable[int]) -> None:
        """Delete entries the broker acknowledged."""
        keys = [(i,) for i in ids]
        if not keys:
            return
        with self._lock:
            # A lost delete only sends an entry twice (ids make that harmless): deletes need
            # no fsync of their own; the next FULL commit makes them durable too.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            freed = self._db.execute(
                f"SELECT COALESCE(SUM(length(topic) + length(payload)), 0), COUNT(*) "  # noqa: S608
                f"FROM entries WHERE id IN ({','.join('?' * len(keys))})",
                [k[0] for k in keys],
            ).fetchone()
            self._db.executemany("DELETE FROM entries WHERE id = ?", keys)
            self._db.execute("COMMIT")
            self._db.execute("PRAGMA synchronous=FULL")
            self._bytes -= freed[0] + freed[1] * _ROW_OVERHEAD

    def stats(self) -> OutboxStats:
        with self._lock:
            depth, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM entries"
            ).fetchone()
            return OutboxStats(
                depth=depth,
                bytes=self._bytes,
                oldest_age_s=None if oldest is None else max(0.0, time.time() - oldest),
                budget_bytes=self.budget_bytes,
                dropped_events=self.counter("dropped_events"),
                dropped_snapshots=self.counter("dropped_snapshots"),
                dropped_health=self.counter("dropped_health"),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
