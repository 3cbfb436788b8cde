"""How ingest cuts the stream into batches: a batch waits for more messages at most one
window after its oldest message arrived, a full batch (in messages or in bytes) goes at
once, and reading pauses while too much waits."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from cloud.ingest.subscriber import Received
from cloud.ingest.worker import IngestWorker
from cloud.settings import CloudSettings

WINDOW_MS = 10_000  # the largest window the settings allow


def worker(tmp_path: Path, batch_max: int = 100, batch_max_mb: int = 64) -> IngestWorker:
    settings = CloudSettings(
        database_url="postgresql://127.0.0.1:1/unused",
        data_dir=tmp_path,
        ingest_batch_ms=WINDOW_MS,
        ingest_batch_max=batch_max,
        ingest_batch_max_mb=batch_max_mb,
    )

    def never() -> psycopg.Connection:
        raise AssertionError("batching needs no database")

    return IngestWorker(settings, connect=never, timescale=False)


def message(mid: int, age: timedelta, payload: bytes = b"{}") -> Received:
    return Received(mid, 1, "gw/v1/nodes/qx-a/events", payload, datetime.now(UTC) - age)


def collect_within(ingest: IngestWorker, timeout_s: float) -> list[Received] | None:
    """What `_collect` returns, or None if it is still waiting after `timeout_s`."""
    result: list[list[Received]] = []
    thread = threading.Thread(target=lambda: result.append(ingest._collect()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        ingest.stop()  # lets the nap loop end; the thread then finishes on its own
        return None
    return result[0]


def test_messages_that_waited_a_whole_window_go_without_another_wait(tmp_path: Path) -> None:
    ingest = worker(tmp_path)
    # They arrived while the previous batch was being written, longer ago than the window.
    for mid in range(3):
        ingest.pending.append(message(mid, timedelta(milliseconds=WINDOW_MS + 1000)))
    ingest.arrived.set()
    batch = collect_within(ingest, timeout_s=5)
    assert batch is not None, "a batch whose window had passed waited for another window"
    assert [m.packet_id for m in batch] == [0, 1, 2]


def test_a_fresh_message_waits_for_company_within_the_window(tmp_path: Path) -> None:
    ingest = worker(tmp_path)
    ingest.pending.append(message(1, timedelta(0)))
    ingest.arrived.set()
    assert collect_within(ingest, timeout_s=0.5) is None  # still inside its window


def test_a_full_batch_goes_at_once_and_the_rest_waits_its_turn(tmp_path: Path) -> None:
    ingest = worker(tmp_path, batch_max=10)
    for mid in range(25):
        ingest.pending.append(message(mid, timedelta(0)))
    ingest.arrived.set()
    batch = collect_within(ingest, timeout_s=5)
    assert batch is not None
    assert [m.packet_id for m in batch] == list(range(10))
    assert len(ingest.pending) == 15
    assert ingest.arrived.is_set()


def test_a_stale_signal_with_nothing_pending_gives_an_empty_batch(tmp_path: Path) -> None:
    # The previous batch took the message whose arrival set the signal.
    ingest = worker(tmp_path)
    ingest.arrived.set()
    assert collect_within(ingest, timeout_s=5) == []


def test_a_batch_is_bounded_in_bytes_and_reading_pauses_on_bytes_waiting(tmp_path: Path) -> None:
    """5,000 answers of 250 KB made one 1.25 GB batch, which PostgreSQL refused, forever."""
    mib = 1024 * 1024
    ingest = worker(tmp_path, batch_max=5000, batch_max_mb=4)
    big = b"x" * (3 * mib // 2)
    for mid in range(9):
        ingest._on_message(message(mid, timedelta(0), big))
    assert not ingest.subscriber._reading.is_set()  # 13.5 MiB waiting: over three batches
    ingest._on_message(message(9, timedelta(0), b"x" * (5 * mib)))  # alone above the limit
    batches = [collect_within(ingest, timeout_s=5) for _ in range(6)]
    assert [[m.packet_id for m in b or []] for b in batches] == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
        [8],
        [9],
    ]
    assert ingest.subscriber._reading.is_set()
    assert ingest._pending_bytes() == 0
