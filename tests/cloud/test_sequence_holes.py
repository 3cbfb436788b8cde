"""Holes in a node's sequence against the real PostgreSQL: the stream's order (holes filled
within the reorder window) leaves no seq_gaps row; what stays missing for the window is
recorded, as first seen, by the next batch or by the sweep, and closed when it arrives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from cloud.ingest.gaps import MAX_GAP, MAX_OPEN_GAPS, NodeSequence, advance
from cloud.ingest.writer import Batch, BatchWriter
from cloud.snapshots import LocalSnapshotStore
from protocols import encode
from protocols.fast_events import to_fast
from tests.factories import make_detection_event, make_node_health


def writer(tmp_path: Path, window_s: float) -> BatchWriter:
    return BatchWriter(
        timescale=False,
        store=LocalSnapshotStore(tmp_path),
        timezone=ZoneInfo("UTC"),
        reorder_window_s=window_s,
    )


def store(url: str, writer: BatchWriter, node: str, seqs: list[int]) -> None:
    now = datetime.now(UTC)
    events = [(to_fast(make_detection_event(node_id=node, seq=s)), now) for s in seqs]
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        writer.write(conn, Batch(events=events))


def gaps(url: str, node: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [
            tuple(r)
            for r in conn.execute(
                "SELECT first_seq, last_seq, closed_at IS NOT NULL FROM seq_gaps "
                "WHERE node_id = %s ORDER BY first_seq",
                (node,),
            ).fetchall()
        ]


def holes(url: str, node: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT holes FROM node_sequences WHERE node_id = %s", (node,)
        ).fetchone()
    assert row is not None
    return [(first, last) for first, last, _ in row[0]]


def age_holes(url: str, node: str, seconds: float) -> None:
    """As if the node's holes had been seen `seconds` earlier."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT holes FROM node_sequences WHERE node_id = %s", (node,)
        ).fetchone()
        assert row is not None
        older = [[first, last, seen - seconds] for first, last, seen in row[0]]
        conn.execute(
            "UPDATE node_sequences SET holes = %s::jsonb, "
            "oldest_hole = oldest_hole - make_interval(secs => %s) WHERE node_id = %s",
            (psycopg.types.json.Jsonb(older), seconds, node),
        )


def test_a_split_stream_fills_its_holes_and_leaves_no_gap_row(
    cloud_db: str, tmp_path: Path
) -> None:
    # Two ingest processes, each with every other seq of the node, batch after batch.
    a, b = writer(tmp_path, 60), writer(tmp_path, 60)
    node = "qx-split"
    store(cloud_db, a, node, [0, 2, 4, 6, 8])
    assert holes(cloud_db, node) == [(1, 1), (3, 3), (5, 5), (7, 7)]
    store(cloud_db, b, node, [1, 3, 5, 7, 9, 11])
    assert holes(cloud_db, node) == [(10, 10)]
    store(cloud_db, a, node, [10, 12])
    assert holes(cloud_db, node) == []
    assert gaps(cloud_db, node) == []


def test_a_hole_missing_for_the_window_is_recorded_as_first_seen_and_closed_later(
    cloud_db: str, tmp_path: Path
) -> None:
    w = writer(tmp_path, 60)
    node = "qx-lost"
    store(cloud_db, w, node, [0, 1, 5])
    assert (holes(cloud_db, node), gaps(cloud_db, node)) == ([(2, 4)], [])
    age_holes(cloud_db, node, 61)
    store(cloud_db, w, node, [6, 3])  # the next batch records it; 3 of it arrived meanwhile
    assert holes(cloud_db, node) == []
    assert gaps(cloud_db, node) == [(2, 2, False), (4, 4, False)]
    with psycopg.connect(cloud_db) as conn:
        row = conn.execute(
            "SELECT min(now() - detected_at) FROM seq_gaps WHERE node_id = %s", (node,)
        ).fetchone()
    assert row is not None
    assert row[0].total_seconds() > 60  # detected when first seen, not when recorded
    store(cloud_db, w, node, [2, 4])
    assert gaps(cloud_db, node) == [(2, 2, True), (4, 4, True)]


def test_the_sweep_records_the_holes_of_a_node_gone_quiet(cloud_db: str, tmp_path: Path) -> None:
    w = writer(tmp_path, 60)
    node = "qx-quiet"
    store(cloud_db, w, node, [0, 3])
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        assert w.record_stale_holes(conn) == 0  # seen just now: may still arrive
    assert gaps(cloud_db, node) == []
    age_holes(cloud_db, node, 61)
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        assert w.record_stale_holes(conn) == 1
    assert (holes(cloud_db, node), gaps(cloud_db, node)) == ([], [(1, 2, False)])


def test_a_node_that_lost_its_last_events_and_went_quiet_shows_the_gap(
    cloud_db: str, tmp_path: Path
) -> None:
    """Its health says which seq it gave out last: what is missing up to it is a hole at
    once, and a gap once missing for the window, without waiting for a next event."""
    w = writer(tmp_path, 60)
    node = "qx-lost-tail"
    store(cloud_db, w, node, [0, 1, 2])
    health = make_node_health(node_id=node, last_seq=6)
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        w.write(conn, Batch(health=[(health, encode(health), datetime.now(UTC))]))
    assert holes(cloud_db, node) == [(3, 6)]
    age_holes(cloud_db, node, 61)
    with psycopg.connect(cloud_db, autocommit=True) as conn, conn.transaction():
        assert w.record_stale_holes(conn) == 1
    assert gaps(cloud_db, node) == [(3, 6, False)]
    store(cloud_db, w, node, [3, 4, 5, 6])  # sent again: the gap closes
    assert gaps(cloud_db, node) == [(3, 6, True)]


def test_a_node_skipping_seqs_without_end_keeps_a_bounded_number_open(
    cloud_db: str, tmp_path: Path
) -> None:
    """A hole after every event: the oldest beyond MAX_OPEN_GAPS are written off (recorded
    gaps each, young holes as one spanning row), and the newest stay exact."""
    node = "qx-holey"
    recorded = writer(tmp_path, 0)  # every hole recorded at once
    store(cloud_db, recorded, node, list(range(0, 2 * (MAX_OPEN_GAPS + 10) + 1, 2)))
    young = writer(tmp_path, 60)
    start = 2 * (MAX_OPEN_GAPS + 10) + 2
    store(cloud_db, young, node, list(range(start, start + 2 * 100 + 1, 2)))
    open_rows = [g for g in gaps(cloud_db, node) if not g[2]]
    kept_holes = holes(cloud_db, node)
    assert len(open_rows) + len(kept_holes) == MAX_OPEN_GAPS
    assert len(kept_holes) == 101  # the newest, all of them (530 to 532 left one too)
    with psycopg.connect(cloud_db) as conn:
        written_off = conn.execute(
            "SELECT count(*), min(first_seq) FROM seq_gaps "
            "WHERE node_id = %s AND written_off_by = 'ingest'",
            (node,),
        ).fetchone()
    # The first batch's 10 lowest holes as one spanning row, then 101 recorded gaps each.
    assert written_off == (1 + 101, 1)
    # A late event still closes its (kept) gap.
    late = open_rows[-1][0]
    store(cloud_db, young, node, [late])
    assert (late, late, True) in gaps(cloud_db, node)


def test_a_jump_beyond_any_outbox_is_no_gap_of_missing_events() -> None:
    """One forged seq of 2^63 - 1 put the county's missing-events figure at 9.2e18."""
    state = advance(NodeSequence(10), [12, 2**63 - 1, 2**63 - 3])
    assert [(g.first, g.last) for g in state.gaps] == [(11, 11), (2**63 - 2, 2**63 - 2)]
    assert state.jumps == [(12, 2**63 - 3)]
    assert state.high == 2**63 - 1
    near = advance(NodeSequence(0), [MAX_GAP + 1])
    assert [(g.first, g.last) for g in near.gaps] == [(1, MAX_GAP)]  # a real loss: counted
