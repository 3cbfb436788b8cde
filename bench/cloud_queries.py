"""Hourly counts for one town over 90 days, with a county's history stored: from the rollups
(what the API reads) against counting the events themselves, in one run.

Run: .venv/bin/python -m bench.cloud_queries [--events 50000000] [--keep URL]

A fresh database on the local PostgreSQL (plain partitions, as without TimescaleDB) is
filled with `--events` events over 180 days from 1,500 cameras in 40 towns and 400 villages,
written by the database itself (generate_series) in daily slices, then the rollups are built
the way ingest keeps them. Both queries must give the same answer; the last line is the
ratio of the direct count's time to the rollups'.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import AsyncConnection, sql

from cloud.db.events import count_events
from cloud.db.schema import prepare_database
from cloud.db.timeseries import ensure_partitions, partition_name
from cloud.settings import CloudSettings
from tests.support.postgres import LOCAL_SERVER, fresh_database

DAYS = 180
CAMERAS = 1500
TOWNS = 40
VILLAGES_PER_TOWN = 10
COUNTY = "511725"
KINDS = ("intrusion", "loitering", "line_crossing", "crowd", "camera_tamper")
RUNS = 20


def unit_of(town: int, village: int) -> str:
    return f"{COUNTY}{town:03d}{village:03d}"


def fill(conn: psycopg.Connection, events: int, first_day: datetime) -> None:
    """`events` rows over DAYS days; camera i sits in town i % TOWNS. A third are starts.

    Ids are UUIDv7-shaped (time first), as the nodes make them. The day partitions are
    UNLOGGED while filling: 50 million rows of WAL would take an hour on this disk, and
    reading a table is the same whether it was logged or not."""
    per_day = events // DAYS
    for day in range(DAYS):
        lower = first_day + timedelta(days=day)
        conn.execute(
            sql.SQL("ALTER TABLE {} SET UNLOGGED").format(
                sql.Identifier(partition_name("events", lower.date()))
            )
        )
        conn.execute(
            """
            INSERT INTO events (observed_at, event_id, thread_id, node_id, seq, camera_id,
                                unit_code, kind, phase, severity, label, score)
            SELECT %(lower)s + (g * 86400.0 / %(n)s) * INTERVAL '1 second',
                   pg_temp.uuid7_at(%(lower)s, g, %(n)s), pg_temp.uuid7_at(%(lower)s, g, %(n)s),
                   'qx-node-' || (c / 4), %(offset)s + g, 'cam-' || c,
                   %(county)s || lpad((c %% %(towns)s)::text, 3, '0')
                              || lpad(((c / %(towns)s) %% %(villages)s)::text, 3, '0'),
                   (%(kinds)s::text[])[1 + (hashint4(g) & 1023) %% 5],
                   (ARRAY['start', 'update', 'end'])[1 + g %% 3],
                   'warning', 'person', 0.8
            FROM (SELECT g, (hashint4(g + %(offset)s) & 2147483647) %% %(cameras)s AS c
                  FROM generate_series(0, %(n)s - 1) AS g) AS s
            """,
            {
                "lower": lower,
                "n": per_day,
                "offset": day * per_day,
                "county": COUNTY,
                "towns": TOWNS,
                "villages": VILLAGES_PER_TOWN,
                "kinds": list(KINDS),
                "cameras": CAMERAS,
            },
        )
        if day % 30 == 29:
            print(f"  {day + 1} days filled", flush=True)


# A UUIDv7-shaped id for row g of n spread over the day from `lower` (48-bit Unix ms first).
UUID7_AT = """
CREATE FUNCTION pg_temp.uuid7_at(lower timestamptz, g int, n int) RETURNS uuid
LANGUAGE sql VOLATILE AS $$
SELECT (lpad(to_hex((extract(epoch FROM lower) * 1000 + g * 86400000.0 / n)::bigint), 12, '0')
        || '7' || substr(md5(random()::text), 1, 19))::uuid
$$
"""


def build_rollups(conn: psycopg.Connection, timezone: str) -> None:
    conn.execute(
        "INSERT INTO events_hourly (bucket, unit_code, node_id, camera_id, kind, events) "
        "SELECT date_trunc('hour', observed_at), unit_code, node_id, camera_id, kind, "
        "count(*) FROM events WHERE phase = 'start' GROUP BY 1, 2, 3, 4, 5"
    )
    conn.execute(
        "INSERT INTO events_daily (bucket, unit_code, node_id, camera_id, kind, events) "
        "SELECT date_trunc('day', bucket, %s), unit_code, node_id, camera_id, kind, "
        "sum(events) FROM events_hourly GROUP BY 1, 2, 3, 4, 5",
        [timezone],
    )
    conn.execute("VACUUM ANALYZE events_hourly")
    conn.execute("VACUUM ANALYZE events_daily")
    conn.execute("ANALYZE events")


DIRECT = """
SELECT date_trunc('hour', observed_at) AS bucket, kind, count(*)::bigint AS events
FROM events
WHERE observed_at >= %s AND observed_at < %s AND unit_code LIKE %s AND phase = 'start'
GROUP BY 1, 2 ORDER BY 1, 2
"""


async def timed(url: str, start: datetime, end: datetime, town: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"rollups": [], "direct": []}
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        rollup_rows = await count_events(
            conn, bucket="hour", start=start, end=end, unit=town, kind=None, camera_id=None
        )
        direct_rows = await (await conn.execute(DIRECT, [start, end, town + "%"])).fetchall()
        answer = [(r["bucket"], r["kind"], r["events"]) for r in rollup_rows]
        if answer != [tuple(r) for r in direct_rows]:
            raise SystemExit("the rollups and the direct count disagree")
        print(f"  {len(answer)} (hour, kind) rows, {sum(r[2] for r in answer)} situations")
        for _ in range(RUNS):
            t = time.perf_counter()
            await count_events(
                conn, bucket="hour", start=start, end=end, unit=town, kind=None, camera_id=None
            )
            times["rollups"].append(time.perf_counter() - t)
        for _ in range(max(3, RUNS // 4)):
            t = time.perf_counter()
            await (await conn.execute(DIRECT, [start, end, town + "%"])).fetchall()
            times["direct"].append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000_000)
    args = parser.parse_args()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=DAYS - 1)
    with fresh_database(LOCAL_SERVER, "gw_bench_queries") as url:
        settings = CloudSettings(database_url=url, timescale="off")
        with psycopg.connect(url, autocommit=True) as conn:
            prepare_database(conn, settings)
            ensure_partitions(conn, first_day.date(), days_ahead=DAYS)
            conn.execute(UUID7_AT)
            t = time.perf_counter()
            fill(conn, args.events, first_day)
            filled_s = time.perf_counter() - t
            t = time.perf_counter()
            build_rollups(conn, settings.timezone)
            rollup_s = time.perf_counter() - t
            sizes = conn.execute(
                "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM events_hourly), "
                "pg_size_pretty(pg_database_size(current_database()))"
            ).fetchone()
        assert sizes is not None
        print(f"stored {sizes[0]} events in {filled_s:.0f} s; rollups built in {rollup_s:.0f} s")
        print(f"  {sizes[1]} hourly rollup rows; database {sizes[2]}")
        start, end = today - timedelta(days=89), today + timedelta(days=1)
        town = COUNTY + "007"
        times = asyncio.run(timed(url, start, end, town))
    rollups = statistics.median(times["rollups"])
    direct = statistics.median(times["direct"])
    p95 = sorted(times["rollups"])[int(0.95 * (len(times["rollups"]) - 1))]
    print(
        f"hourly counts, one town, 90 days, from the rollups: p50 {rollups * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms"
    )
    print(f"the same from the events themselves:                 p50 {direct * 1000:.1f} ms")
    print(f"{direct / rollups:.1f}")


if __name__ == "__main__":
    main()
