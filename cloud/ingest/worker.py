"""The ingest process: an MQTT 5 shared subscription with a persistent session, read by
cloud/ingest/subscriber.py, and manual acknowledgement. A batch (bounded by size and time)
is decoded, written and committed, and only then is each of its messages acknowledged: a
crash at any point loses nothing, and the broker's redelivery stores nothing twice.

One thread decodes and writes; it overlaps the two by decoding the next batch while the
database moves the current one's events into place (see `IngestWorker._store`)."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from cloud.db.timeseries import MAINTAIN_EVERY, maintain, refresh_late
from cloud.db.upkeep import follow_policies
from cloud.errors import StorageError
from cloud.ingest.answers import Answers
from cloud.ingest.dead_letters import Cause, DeadLetter, prune_dead_letters
from cloud.ingest.decode import decode_batch, unexpected
from cloud.ingest.deferred import (
    Share,
    parked_nodes,
    prune_days,
    refused_anyway,
    take,
    units_by_box,
)
from cloud.ingest.quarantine import Quarantine, QuarantineUnavailable
from cloud.ingest.receipts import Receipts, refused_for_now, settled
from cloud.ingest.snapshot_uploads import Quota, report_dropped
from cloud.ingest.subscriber import Received, Subscriber
from cloud.ingest.suspend import Guard, Limit, by_sender, sender_of, suspend
from cloud.ingest.throttle import Throttle
from cloud.ingest.writer import Batch, BatchWriter, Moving, lag_ms, prune_event_ids
from cloud.metrics import INGEST_DAY_REACHED, INGEST_DROPPED_SUSPENDED, record_batch
from cloud.settings import CloudSettings
from cloud.snapshots import snapshot_store
from protocols.topics import Channel, all_nodes_filter, shared

logger = logging.getLogger(__name__)

# What ingest stores: everything nodes publish.
CHANNELS = (
    Channel.EVENTS,
    Channel.STATE,
    Channel.HEALTH,
    Channel.TELEMETRY,
    Channel.CONFIG_REPORTED,
    Channel.RESPONSES,
    Channel.SNAPSHOTS,
)
# Messages the broker may send before our acks (MQTT 5 Receive Maximum), in batches: the
# next batches arrive while one is being written (with one batch's worth, receiving and
# writing took turns). The broker must allow as many (Mosquitto: max_inflight_messages), and
# queue enough for a session that is away (max_queued_messages).
RECEIVE_BATCHES = 3
TAKE_UP_EVERY_S = 1.0  # parked messages are taken up at least this often, however busy
FOLLOW_SUSPENSIONS_EVERY_S = 1.0  # other processes' suspensions, and lifts, seen this soon
STATE_SUFFIX = "/state"
SESSION_EXPIRY_S = 86_400  # the broker keeps our messages a day while ingest is away
# Leaving the group: once unsubscribed, this long without a message means the session's
# queue is empty (the broker sends what it holds at once, up to the receive maximum).
LEAVE_QUIET_S = 5.0

# At most how often holes in nodes' sequences that no batch touches are checked against the
# reorder window (half the window when shorter, at least a second): a node gone quiet after
# a loss has its gap recorded within the window and this.
SWEEP_EVERY_S = 10.0
# On TimescaleDB: how often late rows' hours are refreshed and the policies' jobs checked
# (within the hourly aggregates' own refresh interval, five minutes).
AGGREGATES_EVERY_S = 60.0


def subscriptions(settings: CloudSettings) -> list[str]:
    filters = [all_nodes_filter(channel) for channel in CHANNELS]
    return (
        [shared(f, settings.ingest_group) for f in filters] if settings.ingest_shared else filters
    )


def tune_garbage_collector() -> None:
    """Ingest keeps tens of thousands of young objects alive at once (a batch being
    decoded, the messages waiting behind it), and the collector rescans them every time it
    runs: with the default thresholds decoding a batch took twice as long, and with young
    collections every 50,000 allocations they still cost about 7 of ingest's 51-57 µs an
    event. The data holds no reference cycles, so the automatic collector is switched off
    and the worker collects at each sweep, at most every 10 s, for what other code leaves;
    what exists after start-up (modules, settings) is frozen out of the scans."""
    gc.collect()
    gc.freeze()
    gc.disable()


# conn.transaction(), entered and left by hand around the decoding of the next batch.
Transaction = contextlib.AbstractContextManager[Any]
# A batch read and decoded, not yet stored.
Decoded = tuple[list[Received], Batch]


class _Retry(Exception):
    """The fast path could not start a batch: the plain path retries it."""


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    what = "snapshot store" if isinstance(error, StorageError) else "database"
    logger.warning("%s unavailable, retrying: %s", what, error)


class IngestWorker:
    def __init__(
        self,
        settings: CloudSettings,
        *,
        connect: Callable[[], psycopg.Connection],
        timescale: bool,
        leaving: bool = False,
    ) -> None:
        self.settings = settings
        self.leaving = leaving
        self.connect = connect
        self.timescale = timescale
        self.writer = BatchWriter(
            timescale=timescale,
            store=snapshot_store(settings),
            timezone=ZoneInfo(settings.timezone),
            reorder_window_s=settings.ingest_reorder_window_s,
            snapshot_wait_s=settings.ingest_snapshot_wait_s,
            deferred_max_bytes=settings.ingest_node_deferred_max_mb * 1024 * 1024,
            snapshot_quota=Quota(
                waiting_bytes=settings.ingest_snapshot_waiting_max_mb * 1024 * 1024,
                daily_bytes=settings.ingest_snapshot_daily_max_mb * 1024 * 1024,
            ),
        )
        self.max_age = timedelta(days=settings.ingest_max_event_age_days)
        self.quarantine = Quarantine()
        self.throttle = Throttle()
        self.answers = Answers(connect)
        self.share = Share(
            settings.ingest_node_rate,
            settings.ingest_node_burst,
            daily=settings.ingest_node_daily_units,
            timezone=ZoneInfo(settings.timezone),
        )
        self.parked = True  # whether messages may be parked (not known: so at first)
        self.guard = Guard(
            Limit(
                settings.ingest_suspend_refused_rate,
                settings.ingest_suspend_window_s,
                "messages the county refuses",
            ),
            Limit(
                settings.ingest_suspend_parked_rate,
                settings.ingest_suspend_parked_window_s,
                "valid messages beyond its share, in units,",
            ),
            settings.ingest_suspend_s,
        )
        self.refused: list[str] = []  # topics dropped before decoding, for the guard
        self.receipts = Receipts()
        # Payloads not to receipt (see receipts): what the parking refused, what a
        # suspended box's queue held.
        self._unreceipted: set[int] = set()
        self._dropping: set[str] = set()  # suspended boxes whose queue is being dropped
        self.pending: deque[Received] = deque()
        self.max_pending = RECEIVE_BATCHES * settings.ingest_batch_max
        # Bytes as well as messages: 5,000 forged 250 KB answers made a 1.25 GB batch that
        # PostgreSQL refuses ("invalid message length"), retried forever. Each counter has
        # one writer (the subscriber's thread, the writer's), so no lock.
        self.batch_max_bytes = settings.ingest_batch_max_mb * 1024 * 1024
        self.max_pending_bytes = RECEIVE_BATCHES * self.batch_max_bytes
        self.received_bytes = 0
        self.taken_bytes = 0
        self.arrived = threading.Event()  # pending went from empty to not empty

        self.stop_event = threading.Event()
        self.stored = 0
        self.acked = 0
        self.dead = 0
        self._conn: psycopg.Connection | None = None
        self.subscriber = Subscriber(
            settings,
            settings.ingest_client,
            subscriptions(settings),
            on_message=self._on_message,
            receive_max=min(65_535, self.max_pending),
            session_expiry_s=SESSION_EXPIRY_S,
            leaving=leaving,
        )

    def _on_message(self, message: Received) -> None:
        # A deque append is atomic and costs no lock or wake-up per message (a Queue did,
        # for each of tens of thousands a second); the writer takes whole runs at once.
        pending = self.pending
        pending.append(message)
        self.received_bytes += len(message.payload)
        waiting = len(pending)
        if waiting == 1:
            self.arrived.set()
        if (  # overfull (checked inline: this runs for every message)
            waiting > self.max_pending
            or self.received_bytes - self.taken_bytes > self.max_pending_bytes
        ):
            # Unacknowledged messages are bounded by the Receive Maximum; QoS 0 ones are
            # not. Stop reading until the writer catches up; the broker keeps the rest.
            self.subscriber.pause()

    # ---- the loop ---------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        """Until stopped: batches in, committed, acknowledged."""
        self.subscriber.start()
        next_maintenance = next_sweep = next_take_up = next_suspensions = time.monotonic()
        next_aggregates = time.monotonic()
        sweep_every_s = min(SWEEP_EVERY_S, max(1.0, self.settings.ingest_reorder_window_s / 2))
        decoded: Decoded | None = None
        try:
            while not self.stop_event.is_set():
                if decoded is None:
                    messages = self._collect()
                    decoded = (messages, self._decode(messages)) if messages else None
                if decoded is not None:
                    decoded = self._store(*decoded)
                elif self.leaving and self._left():
                    break
                if self.receipts.due():
                    self.subscriber.publish(self.receipts.take())
                # Parked messages when nothing waits, and once a second whatever waits.
                idle = decoded is None and not self.pending
                if self.parked and (idle or time.monotonic() >= next_take_up):
                    next_take_up = time.monotonic() + TAKE_UP_EVERY_S
                    self._with_database(self._take_up)
                if time.monotonic() >= next_suspensions:
                    next_suspensions = time.monotonic() + FOLLOW_SUSPENSIONS_EVERY_S
                    self._with_database(self._follow_suspensions)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_every_s
                    self._with_database(self._record_stale_holes)
                    self._with_database(self._sweep_snapshots)
                    if not gc.isenabled():  # see tune_garbage_collector
                        gc.collect()
                if time.monotonic() >= next_maintenance:
                    next_maintenance = time.monotonic() + MAINTAIN_EVERY.total_seconds()
                    self._with_database(self._maintain)
                if self.timescale and time.monotonic() >= next_aggregates:
                    next_aggregates = time.monotonic() + AGGREGATES_EVERY_S
                    self._with_database(self._keep_aggregates)
        finally:
            self.subscriber.publish(self.receipts.take())  # sent with the last acks
            self.subscriber.stop()
            self.answers.close()
            if self._conn is not None:
                self._conn.close()

    def _left(self) -> bool:
        """Leaving the group: everything the session held is stored and acknowledged."""
        quiet_s = time.monotonic() - self.subscriber.last_message_at
        if self.subscriber.ready and not self.pending and quiet_s >= LEAVE_QUIET_S:
            logger.info(
                "ingest left the group client_id=%s: its session ends with this connection",
                self.settings.ingest_client,
            )
            return True
        return False

    def _ready(self) -> list[Received]:
        """The next batch when it need not wait (full, or its window is over), else none."""
        if not self.pending:
            return []
        if not self._full() and datetime.now(UTC) < self._deadline():
            return []
        return self._take()

    def _pending_bytes(self) -> int:
        return self.received_bytes - self.taken_bytes

    def _full(self) -> bool:
        """Whether what waits makes a whole batch (messages or bytes)."""
        return (
            len(self.pending) >= self.settings.ingest_batch_max
            or self._pending_bytes() >= self.batch_max_bytes
        )

    def _deadline(self) -> datetime:
        """When the oldest waiting message has waited its batch window."""
        return self.pending[0].received_at + timedelta(milliseconds=self.settings.ingest_batch_ms)

    def _collect(self) -> list[Received]:
        """Up to `ingest_batch_max` messages, waiting at most `ingest_batch_ms` after the
        oldest arrived: latency stays bounded at low rates and batches grow under load.
        Messages that arrived while the previous batch was written have waited already and
        go at once (counting the window from the start of collection instead added a whole
        window to every message under steady load)."""
        if not self.pending and not self.arrived.wait(0.2):
            return []
        self.arrived.clear()
        if not self.pending:
            return []  # a signal whose message the previous batch already took
        deadline = self._deadline()
        while not self._full():
            remaining = (deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                break
            self.stop_event.wait(min(remaining, 0.005))  # short naps while a batch fills
        return self._take()

    def _take(self) -> list[Received]:
        """The next batch: up to `ingest_batch_max` messages and `ingest_batch_max_mb`
        bytes (one message at least, whatever its size)."""
        pending, most = self.pending, self.settings.ingest_batch_max
        waiting_bytes = self._pending_bytes()
        if waiting_bytes <= self.batch_max_bytes:
            # The common case: whatever is taken fits the byte bound.
            count = min(len(pending), most)
            messages = [pending.popleft() for _ in range(count)]
            size = waiting_bytes if not pending else sum([len(m.payload) for m in messages])
            return self._taken(messages, size)
        messages = []
        size = 0
        while self.pending and len(messages) < most:
            more = len(self.pending[0].payload)
            if messages and size + more > self.batch_max_bytes:
                break
            messages.append(self.pending.popleft())
            size += more
        return self._taken(messages, size)

    def _taken(self, messages: list[Received], size: int) -> list[Received]:
        self.taken_bytes += size
        if (
            len(self.pending) <= self.max_pending
            and self._pending_bytes() <= self.max_pending_bytes
        ):
            self.subscriber.resume()
        if self.pending:
            self.arrived.set()
        return messages

    def _decode(self, messages: list[Received], *, taken_up: bool = False) -> Batch:
        """The batch decoded, but what is beyond its box's share (parked: `taken_up` are
        parked ones, whose share was counted); messages delivered before (the broker's DUP
        flag: a process may have died on them) are tried in the quarantine first."""
        # Dropped here are acknowledged all the same, by the caller. Parked ones were
        # receipted when parked: they are never dropped (a suspended box's wait, see
        # _take_up).
        if self.guard.suspended and not taken_up:
            messages = self._shut_out(messages)
        kept = self.answers.asked(self.throttle.admit(messages))
        if len(kept) < len(messages):
            ids = {id(m) for m in kept}
            self.refused += [m.topic for m in messages if id(m) not in ids]
        messages = kept
        parked: list[Received] = []
        day_units: dict[str, float] = {}
        if not taken_up:
            messages, beyond, day_units = self.share.split(messages)
            for message in beyond:  # what will be refused anyway is, now and cheaply
                (messages if refused_anyway(message) else parked).append(message)
            self.parked |= bool(parked)
        batch = self._decode_now(messages)
        batch.deferred = parked
        batch.day_units = day_units
        return batch

    def _shut_out(self, messages: list[Received]) -> list[Received]:
        """Drop what suspended boxes sent before the broker shut them out (their queue, up
        to millions of messages, stood in front of every other box's for as long as it
        took to park it): acknowledged, not receipted, so a box keeps those events and
        sends them again once let back in. Their state (the broker's last will) is kept."""
        kept: list[Received] = []
        for message in messages:
            node = sender_of(message.topic)
            if (
                node is not None
                and self.guard.shut_out(node)
                and not message.topic.endswith(STATE_SUFFIX)
            ):
                self._unreceipted.add(id(message.payload))
                INGEST_DROPPED_SUSPENDED.inc()
                if node not in self._dropping:
                    self._dropping.add(node)
                    logger.warning(
                        "box %s is suspended: what the broker still held of it is dropped "
                        "unreceipted (it sends its events again once let back in)",
                        node,
                    )
            else:
                kept.append(message)
        return kept

    def _follow_suspensions(self, conn: psycopg.Connection) -> None:
        """Every process's suspensions and lifts, from the database (see Guard.follow)."""
        with conn.transaction():
            rows = conn.execute(
                "SELECT node_id, extract(epoch FROM until - now()) FROM node_suspensions "
                "WHERE until > now()"
            ).fetchall()
        remaining = {str(n): float(s) for n, s in rows}
        for node in remaining.keys() - self.guard.suspended.keys():
            logger.info("box %s is suspended (%.0f s left)", node, remaining[node])
        for node in self.guard.follow(remaining):
            self._dropping.discard(node)
            logger.info("box %s let back in: its messages are taken and counted afresh", node)

    def _decode_now(self, messages: list[Received]) -> Batch:
        suspects = [m for m in messages if m.duplicate]
        if not suspects:
            return decode_batch(messages, max_age=self.max_age)
        try:
            survivors, dead = self.quarantine.screen(suspects)
        except QuarantineUnavailable as exc:
            logger.error("quarantine unavailable (%s): decoding redeliveries here", exc)
            return decode_batch(messages, max_age=self.max_age)
        logger.info(
            "redelivered messages screened in the quarantine: %d, ended a decoder: %d",
            len(suspects),
            len(dead),
        )
        crashed = {id(d) for d in suspects} - {id(s) for s in survivors}
        batch = decode_batch([m for m in messages if id(m) not in crashed], max_age=self.max_age)
        batch.dead += dead
        return batch

    def _store(self, messages: list[Received], batch: Batch) -> Decoded | None:
        """Store a decoded batch; returns the next one when it was ready meanwhile.

        While the database moves this batch's events into place, the next batch (if it
        need not wait) is decoded: with one thread, the two would otherwise take turns and
        each leave a core idle. Any failure on this fast path is retried on the plain one."""
        started = time.monotonic()
        transaction, moving = self._begin(batch)
        ready = self._ready()
        following = (ready, self._decode(ready)) if ready else None
        try:
            if transaction is None:
                raise _Retry
            assert self._conn is not None
            self._finish(self._conn, batch, moving, started)
            transaction.__exit__(None, None, None)
        except (_Retry, psycopg.Error, StorageError) as exc:
            if transaction is not None:
                self._abandon(transaction, moving, exc)
            self._store_retrying(messages, batch)
        except Exception as exc:  # noqa: BLE001 - one message's doing: found by storing singly
            if transaction is not None:
                self._abandon(transaction, moving, exc)
            logger.error("batch failed (%r); storing one by one", exc)
            self._store_singly(messages)
        self._acknowledge(messages, batch)
        return following

    def _begin(self, batch: Batch) -> tuple[Transaction | None, Moving | None]:
        """Open the batch's transaction and send its events; (None, None) when that failed
        (the plain path then retries it)."""
        try:
            conn = self._connection()
            self.writer.journal_snapshots(conn, batch)  # its own commit, see the method
        except psycopg.Error as exc:
            self._drop_broken(exc)
            return None, None
        transaction = conn.transaction()
        try:
            transaction.__enter__()
        except psycopg.Error as exc:
            self._drop_broken(exc)
            return None, None
        try:
            return transaction, self.writer.begin(conn, batch)
        except (psycopg.Error, StorageError) as exc:
            self._abandon(transaction, None, exc)
            return None, None

    def _abandon(self, transaction: Transaction, moving: Moving | None, exc: BaseException) -> None:
        """Roll back a fast-path batch after `exc`; a broken connection is dropped."""
        with contextlib.suppress(psycopg.Error):
            if moving is not None:
                moving.abandon(exc)
        with contextlib.suppress(psycopg.Error):
            transaction.__exit__(type(exc), exc, exc.__traceback__)
        self._drop_broken(exc)

    def _drop_broken(self, exc: BaseException) -> None:
        if self._conn is not None and (
            isinstance(exc, psycopg.OperationalError) or self._conn.broken
        ):
            self._conn.close()
            self._conn = None

    def _store_retrying(self, messages: list[Received], batch: Batch) -> None:
        try:
            self._with_database(lambda conn: self._write(conn, batch))
        except (psycopg.Error, Exception) as exc:  # noqa: BLE001 - see below
            # Not the database being away (that is retried): something in this batch the
            # database refuses, or an exception nobody foresaw. Store message by message;
            # what still fails is a dead letter, so one bad message never blocks the stream
            # or loops the process.
            logger.error("batch refused (%r); storing one by one", exc)
            self._store_singly(messages)

    def _acknowledge(self, messages: list[Received], batch: Batch) -> None:
        self.subscriber.ack(messages)  # only now: the batch is committed
        self.acked += len(messages)
        self.receipts.add(settled(messages, batch, self._unreceipted))
        self._unreceipted = set()

    def _store_singly(self, messages: list[Received]) -> None:
        for message in messages:
            single = self._decode([message])
            try:
                self._with_database(lambda conn, b=single: self._write(conn, b))  # type: ignore[misc]
            except psycopg.Error as exc:
                letter = DeadLetter(
                    message.topic, message.payload, "database", str(exc)[:2000], Cause.DATABASE
                )
                self._write_dead(letter)
            except Exception as exc:  # noqa: BLE001 - the message's doing: a dead letter
                self._write_dead(unexpected(message, exc))

    def _write_dead(self, letter: DeadLetter) -> None:
        dead = Batch(dead=[letter])
        self._with_database(lambda conn: self._write(conn, dead))

    def _write(self, conn: psycopg.Connection, batch: Batch) -> None:
        started = time.monotonic()
        self.writer.journal_snapshots(conn, batch)  # its own commit, see the method
        with conn.transaction():  # one commit per batch, progress included
            self._finish(conn, batch, self.writer.begin(conn, batch), started)

    def _finish(
        self, conn: psycopg.Connection, batch: Batch, moving: Moving | None, started: float
    ) -> None:
        """The rest of a batch in its transaction, and the process's progress row."""
        now = datetime.now(UTC)
        lag = lag_ms(batch, now)
        result = self.writer.finish(conn, batch, moving)
        self._unreceipted |= refused_for_now(result.dead)
        self._count_day(result.day_units)
        self._guard(conn, [letter.topic for letter in result.dead], batch.deferred)
        report_dropped(result.snapshots_dropped)
        conn.execute(
            "INSERT INTO ingest_progress (client_id, committed_at, batch_size, lag_ms, "
            "messages) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (client_id) DO UPDATE SET "
            "committed_at = excluded.committed_at, batch_size = excluded.batch_size, "
            "lag_ms = excluded.lag_ms, "
            "messages = ingest_progress.messages + excluded.messages",
            (self.settings.ingest_client, now, len(batch), lag, len(batch)),
        )
        self.stored += result.events_stored
        self.dead += len(result.dead)
        record_batch(batch, result, time.monotonic() - started, lag / 1000)
        if result.dead:
            logger.warning(
                "dead letters=%d first=%s field=%s cause=%s: %s",
                len(result.dead),
                result.dead[0].topic,
                result.dead[0].field,
                result.dead[0].cause.value,
                result.dead[0].reason,
            )

    def _maintain(self, conn: psycopg.Connection) -> None:
        retention = self.settings.retention
        maintain(conn, timescale=self.timescale, retention=retention)
        with conn.transaction():
            dropped = prune_dead_letters(conn, days=retention.dead_letters_days)
            claims = prune_event_ids(conn, max_age=self.max_age, now=datetime.now(UTC))
            prune_days(conn)
        if dropped or claims:
            logger.info(
                "past retention: dead letters dropped=%d, event id claims dropped=%d",
                dropped,
                claims,
            )

    def _keep_aggregates(self, conn: psycopg.Connection) -> None:
        """TimescaleDB: late rows counted, and policies its scheduler left stalled run."""
        # Each on its own: a refresh that fails must not keep stalled policies from running.
        try:
            if hours := refresh_late(conn, self.writer.timezone):
                logger.info("aggregates refreshed over %d hours of late rows", hours)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:  # its marks stay, to be tried again; events go on
            logger.error("refreshing the aggregates over late rows failed: %s", exc)
        try:
            follow_policies(conn, datetime.now(UTC))
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:  # shown by the jobs' metric; events go on being stored
            logger.error("running stalled policies failed: %s", exc)

    def _take_up(self, conn: psycopg.Connection) -> None:
        """Store parked messages (see cloud.ingest.deferred), as their boxes' shares allow,
        in one transaction; if something in them is refused, one by one, what still fails
        a dead letter."""
        nodes = parked_nodes(conn)
        if not nodes:
            self.parked = False
            return
        # A suspended box's parked messages wait until it is let back in: they were
        # receipted, so its outbox no longer holds them (dropping them lost them for good).
        nodes = [node for node in nodes if not self.guard.shut_out(node)]
        if not nodes:
            return
        room = {node: self.share.room(node) for node in nodes}
        try:
            with conn.transaction():
                messages = take(conn, room)
                day_units = self.share.charge(messages)
                if messages:
                    self._store_taken(conn, messages, day_units)
        except psycopg.OperationalError:
            raise  # the database away: retried
        except Exception as exc:  # noqa: BLE001 - one message's doing: found one by one
            logger.error("parked messages refused (%r): taking them up one by one", exc)
            for node in nodes:
                self._take_up_singly(conn, node, room[node])

    def _take_up_singly(self, conn: psycopg.Connection, node: str, most: int) -> None:
        for _ in range(most):
            with conn.transaction():
                messages = take(conn, {node: 1})
                if not messages:
                    return
                try:
                    with conn.transaction():
                        self._store_taken(conn, messages, self.share.charge(messages))
                except psycopg.OperationalError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the message's doing: a dead letter
                    letter = unexpected(messages[0], exc)
                    self._finish(conn, Batch(dead=[letter]), None, time.monotonic())

    def _store_taken(
        self, conn: psycopg.Connection, messages: list[Received], day_units: dict[str, float]
    ) -> None:
        batch = self._decode(messages, taken_up=True)
        batch.day_units = day_units
        self._finish(conn, batch, self.writer.begin(conn, batch), time.monotonic())

    def _guard(self, conn: psycopg.Connection, dead: list[str], parked: list[Received]) -> None:
        """Count what the county refused of each box (dropped before decoding, and the
        batch's dead letters) and what it parked; suspend, in the batch's transaction, the
        boxes past a limit."""
        refused, self.refused = self.refused + dead, []
        tripped = self.guard.count("refused", by_sender(refused))
        if parked:
            tripped |= self.guard.count("parked", units_by_box(parked))
        if tripped:
            suspend(conn, tripped, seconds=self.settings.ingest_suspend_s)

    def _count_day(self, totals: dict[str, int]) -> None:
        """The boxes' day totals after a batch; a box that reaches its day is told in the
        log once (the rest of its day's messages wait parked for the next)."""
        for node in self.share.recorded(totals):
            INGEST_DAY_REACHED.inc()
            logger.warning(
                "box %s has had %d units stored today (CLOUD_INGEST_NODE_DAILY_UNITS): "
                "its messages wait parked until the county's next day",
                node,
                totals[node],
            )

    def _record_stale_holes(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            self.writer.record_stale_holes(conn)

    def _sweep_snapshots(self, conn: psycopg.Connection) -> None:
        # The store being away postpones the sweep (rolled back, nothing counted) instead
        # of holding up the stream as a batch's snapshots must.
        try:
            with conn.transaction():
                dropped = self.writer.sweep_snapshots(conn, datetime.now(UTC))
        except StorageError as exc:
            logger.warning("snapshot sweep postponed: %s", exc)
            return
        report_dropped(dropped)

    def _pause(self, seconds: float) -> None:
        """Tenacity's sleep between retries, cut short when the worker is stopped."""
        self.stop_event.wait(seconds)

    def _with_database(self, action: Callable[[psycopg.Connection], None]) -> None:
        """Run `action`, retrying with backoff while the database or the snapshot store is
        away. Nothing is acknowledged meanwhile, so the broker keeps every message."""
        for attempt in Retrying(
            retry=retry_if_exception_type((psycopg.OperationalError, StorageError)),
            wait=wait_exponential_jitter(multiplier=0.5, max=30, jitter=0.5),
            stop=lambda _: self.stop_event.is_set(),
            sleep=self._pause,
            reraise=True,
            before_sleep=_log_retry,
        ):
            with attempt:
                conn = self._connection()
                try:
                    action(conn)
                except psycopg.OperationalError:
                    conn.close()
                    self._conn = None
                    raise

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
            self.writer.prepare(self._conn)
        return self._conn
