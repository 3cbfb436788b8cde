"""Events turned into cases at a county's scale: gridwatch's set-based routing inside
ingest's transaction against routing one event at a time without indexes, in one run.

Run: .venv/bin/python -m bench.case_routing [--batches 20] [--open-cases 100000]

A fresh database holds a county of 40 towns, 400 villages and 613 grids, 1,500 cameras
and `--open-cases` open cases (some overdue, so the escalation timer has work). Then:

  (a) naive: for each new event, look up its camera's unit and its rule, look for the open
      case of that camera and kind by scanning (no index), insert or update it;
  (b) gridwatch: BatchWriter.write of 5,000-event batches (COPY, dedup, rollups, one routing
      statement, sequences), with the escalation timer running beside it.

It prints events/s of (b) whole and of its routing statement alone, (a)'s events/s, and
the p50 of a grid worker's "my open cases" page at that scale. Last line: (b) routing
events/s / (a) events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from cloud.access import Principal, Role
from cloud.db import cases as cases_db
from cloud.db.escalation import escalate_due
from cloud.db.routing import route_events
from cloud.db.schema import prepare_database
from cloud.ingest.writer import Batch, BatchWriter
from cloud.org_import import OrgFiles, import_org
from cloud.settings import CloudSettings
from cloud.snapshots import LocalSnapshotStore
from cloud.tiers import Level
from protocols.enums import EventKind, EventPhase, Severity
from protocols.events import DetectionEvent
from protocols.fast_events import to_fast
from tests.factories import make_detection_event
from tests.support.county import COUNTY, write_large_county
from tests.support.postgres import LOCAL_SERVER, fresh_database

CAMERAS = 1500
BATCH = 5000
KINDS = (EventKind.INTRUSION, EventKind.LOITERING, EventKind.CROWD, EventKind.MOTION)
ADMIN = Principal("bench", Role.COUNTY_ADMIN, COUNTY, Level.COUNTY)


def setup_county(conn: psycopg.Connection, directory: Path, open_cases: int) -> list[str]:
    files = write_large_county(directory)
    t = time.perf_counter()
    import_org(
        conn,
        OrgFiles(files.units, files.departments, files.staff, files.geometry, files.cameras),
        ADMIN,
    )
    print(
        f"county of 1,054 units, 613 people, {CAMERAS} cameras imported in "
        f"{time.perf_counter() - t:.2f} s"
    )
    grids = [r[0] for r in conn.execute("SELECT code FROM org_units WHERE level = 'grid'")]
    # Open cases from reports and earlier detections, spread over the grids; one in ten
    # overdue so the escalation timer works during the run.
    conn.execute(
        """
        INSERT INTO cases (case_id, source, category, severity, state, title, unit_code,
                           responsible_unit_code, opened_at, ack_due_at, resolve_due_at)
        SELECT gen_random_uuid(), 'report', 'safety_hazard', 'medium',
               (ARRAY['intake', 'triage', 'handling'])[1 + i %% 3], 'report ' || i,
               g.code, g.code, now() - make_interval(mins => i %% 10000),
               now() + make_interval(mins => CASE WHEN i %% 10 = 0 THEN -1 ELSE 30 END),
               now() + interval '1 day'
        FROM generate_series(1, %s) i
        JOIN (SELECT code, row_number() OVER (ORDER BY code) - 1 AS n FROM org_units
              WHERE level = 'grid') g ON g.n = i %% 613
        """,
        (open_cases,),
    )
    conn.execute("VACUUM ANALYZE cases")
    return grids


def make_events(count: int, seqs: dict[str, int], rng: random.Random) -> list[DetectionEvent]:
    """A third starts, the rest updates of earlier situations, from all cameras; each node's
    seq counts up as on a real node."""
    events = []
    for i in range(count):
        camera = rng.randrange(CAMERAS)
        kind = KINDS[rng.randrange(len(KINDS))]
        phase = EventPhase.START if i % 3 == 0 else EventPhase.UPDATE
        node_id = f"node-{camera // 4}"
        seqs[node_id] = seqs.get(node_id, 0) + 1
        events.append(
            make_detection_event(
                node_id=node_id,
                camera_id=f"cam{camera % 4}",
                seq=seqs[node_id],
                kind=kind,
                phase=phase,
                severity=Severity.MEDIUM,
                count=5,
                dwell_s=30.0,
                snapshots=[],
            )
        )
    return events


def naive_route(conn: psycopg.Connection, events: list[DetectionEvent]) -> None:
    """One event at a time, every lookup a query, the open case found by a scan."""
    for event in events:
        if event.phase is not EventPhase.START:
            continue
        unit = conn.execute(
            "SELECT unit_code FROM cameras WHERE node_id = %s AND camera_id = %s",
            (event.node_id, event.camera_id),
        ).fetchone()
        rule = conn.execute(
            "SELECT opens_case, ack_s, resolve_s FROM case_rules "
            "WHERE category = %s AND severity = %s",
            (event.kind.value, event.severity.value),
        ).fetchone()
        if unit is None or rule is None or not rule[0]:
            continue
        open_case = conn.execute(
            "SELECT case_id FROM cases WHERE node_id = %s AND camera_id = %s "
            "AND category = %s AND state <> 'closed'",
            (event.node_id, event.camera_id, event.kind.value),
        ).fetchone()
        if open_case:
            conn.execute(
                "UPDATE cases SET event_count = event_count + 1, last_event_at = %s "
                "WHERE case_id = %s",
                (event.observed_at, open_case[0]),
            )
        else:
            conn.execute(
                "INSERT INTO cases (case_id, source, category, severity, state, title, "
                "unit_code, responsible_unit_code, node_id, camera_id, event_count, "
                "opened_at, ack_due_at, resolve_due_at) VALUES (gen_random_uuid(), 'camera', "
                "%s, %s, 'intake', 'naive', %s, %s, %s, %s, 1, now(), "
                "now() + make_interval(secs => %s), now() + make_interval(secs => %s))",
                (
                    event.kind.value,
                    event.severity.value,
                    unit[0],
                    unit[0],
                    event.node_id,
                    event.camera_id,
                    rule[1],
                    rule[2],
                ),
            )


def timer_thread(url: str, stop: threading.Event, escalated: list[int]) -> None:
    async def loop() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                escalated.append(len(await escalate_due(conn, now=datetime.now(UTC))))
                await asyncio.sleep(0.5)

    asyncio.run(loop())


async def my_open_cases(url: str, grid: str, runs: int = 50) -> tuple[float, int]:
    worker = Principal("worker-0", Role.GRID_WORKER, grid, Level.GRID)
    times = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(runs):
            t = time.perf_counter()
            rows, _ = await cases_db.list_cases(
                conn, worker, cases_db.CaseFilter(open_only=True), cursor=None, limit=50
            )
            times.append(time.perf_counter() - t)
    return statistics.median(times), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--open-cases", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(7)
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(LOCAL_SERVER, "gw_bench_cases") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        grids = setup_county(conn, Path(tmp), args.open_cases)
        writer = BatchWriter(
            timescale=False, store=LocalSnapshotStore(Path(tmp)), timezone=ZoneInfo("UTC")
        )

        stop, escalated = threading.Event(), []
        timers = threading.Thread(target=timer_thread, args=(url, stop, escalated))
        timers.start()
        seqs: dict[str, int] = {}
        write_s, route_s = 0.0, 0.0
        for _ in range(args.batches):
            events = make_events(BATCH, seqs, rng)
            now = datetime.now(UTC)
            t = time.perf_counter()
            with conn.transaction():
                writer.write(conn, Batch(events=[(to_fast(e), now) for e in events]))
            write_s += time.perf_counter() - t
        # The routing statement alone, on batches the writer has staged but not routed.
        for _ in range(args.batches):
            events = make_events(BATCH, seqs, rng)
            with conn.transaction():
                conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS events_inserted (observed_at "
                    "timestamptz, node_id text, camera_id text, unit_code text, kind "
                    "text, phase text, seq bigint, event_id uuid, thread_id uuid, "
                    "severity text) ON COMMIT DELETE ROWS"
                )
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO events_inserted VALUES (%s, %s, %s, (SELECT unit_code "
                        "FROM cameras WHERE node_id = %s AND camera_id = %s), %s, %s, %s, %s, "
                        "%s, %s)",
                        [
                            (
                                e.observed_at,
                                e.node_id,
                                e.camera_id,
                                e.node_id,
                                e.camera_id,
                                e.kind.value,
                                e.phase.value,
                                e.seq,
                                e.event_id,
                                e.thread_id,
                                e.severity.value,
                            )
                            for e in events
                        ],
                    )
                t = time.perf_counter()
                route_events(conn)
                route_s += time.perf_counter() - t
        stop.set()
        timers.join()
        total = args.batches * BATCH
        open_now = conn.execute("SELECT count(*) FROM cases WHERE state <> 'closed'").fetchone()
        print(
            f"{open_now[0] if open_now else 0} open cases; the timer escalated "
            f"{sum(escalated)} during the run"
        )
        print(
            f"(b) ingest with routing: {total / write_s:,.0f} events/s "
            f"({args.batches} batches of {BATCH})"
        )
        print(f"(b) the routing statement alone: {total / route_s:,.0f} events/s")

        sample = make_events(1500, seqs, rng)
        t = time.perf_counter()
        with conn.transaction():
            naive_route(conn, sample)
        naive = len(sample) / (time.perf_counter() - t)
        print(f"(a) naive routing, one event at a time, no index: {naive:,.0f} events/s")

        p50, rows = asyncio.run(my_open_cases(url, grids[0]))
        print(f"a grid worker's open cases ({rows} on the first page): p50 {p50 * 1000:.1f} ms")
        print(f"{(total / route_s) / naive:.1f}")


if __name__ == "__main__":
    main()
