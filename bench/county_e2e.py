"""A county end to end at ten times its real event rate: 440 boxes, ~1,500 analysed channels
and 613 grids simulated through the real broker into the real service (ingest, routing into
cases, alerts, timers, fleet monitor) and PostgreSQL, in one run.

Run: .venv/bin/python -m bench.county_e2e [--minutes 10] [--speed 10]

`gridwatch simulate`'s county runs `--minutes` of real time at `--speed` (simulated seconds
per second), so its event rate is `--speed` times a real county's. Printed: events stored
against published (must be equal), publish-to-stored latency p99, publish-to-alert p99, the
service's CPU and peak memory. The last line is the sustained event rate over the county's
real peak need (its busiest hour's rate, from the same model of a day).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from cloud.db.schema import prepare_database
from cloud.demo.simulate import HOURLY, MARKET_FACTOR, Publisher, make_county, register, report, run
from cloud.settings import CloudSettings
from tests.support.cloud import ServeProcess
from tests.support.county import TEST_JWT_SECRET
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import LOCAL_SERVER, fresh_database


def peak_need(county_boxes: int, cameras: int, market_boxes: int) -> float:
    """Messages per second a real county needs at its busiest hour (start + end per
    situation; market cameras busier in the morning)."""
    busiest = max(HOURLY) / 3600
    ordinary = (county_boxes - market_boxes) * cameras * busiest
    markets = market_boxes * cameras * busiest * MARKET_FACTOR
    return 2 * (ordinary + markets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, default=3)
    args = parser.parse_args()
    county = make_county(40, 10, 1, args.cameras, grids_total=613)
    channels = sum(len(b.cameras) for b in county.boxes)
    hours = args.minutes * args.speed / 60
    with tempfile.TemporaryDirectory() as tmp, fresh_database(LOCAL_SERVER, "gw_bench_e2e") as url:
        directory = Path(tmp)
        with psycopg.connect(url, autocommit=True) as conn:
            prepare_database(conn, CloudSettings(database_url=url, timescale="off"))
        register(url, county)
        broker = MosquittoBroker(directory / "broker")
        broker.start()
        serve = ServeProcess(
            directory / "cloud", url, broker.url, ingest=True, CLOUD_JWT_SECRET=TEST_JWT_SECRET
        )
        try:
            serve.start_listening()
            assert serve.process is not None
            service = psutil.Process(serve.process.pid)
            cpu_before = sum(service.cpu_times()[:2])
            print(
                f"county: {len(county.boxes)} boxes, {channels} channels, {len(county.grids)} "
                f"grids; {args.minutes:g} min at {args.speed:g}x ({hours:.1f} simulated h)"
            )
            peak_rss = 0
            started = time.monotonic()
            # From 07:00 local: the morning peak, markets busy (the need below is that peak).
            tally = run(
                county, Publisher(broker.url, None, None, 4), hours, args.speed, seed=7, from_hour=7
            )
            elapsed = time.monotonic() - started
            result = report(url, county, tally, wait_s=300)
            peak_rss = service.memory_info().rss
            cpu = sum(service.cpu_times()[:2]) - cpu_before
            published, stored = result["events_published"], result["events_stored"]
            sustained = stored / elapsed
            need = peak_need(len(county.boxes), args.cameras, len(county.towns))
            print(
                f"events: {stored} stored of {published} published ({tally.replayed} replayed "
                f"after the outage), open gaps {result['open_gaps']}"
            )
            print(
                f"publish -> stored: p50 {result['stored_latency_p50_s']:.3f} s, "
                f"p99 {result['stored_latency_p99_s']:.3f} s"
            )
            print(
                f"publish -> alert: p50 {result['alert_latency_p50_s']:.3f} s, "
                f"p99 {result['alert_latency_p99_s']:.3f} s ({result['cases_opened']} cases, "
                f"{result['cases_escalated']} escalated)"
            )
            print(
                f"service: CPU {cpu:.0f} s over {elapsed:.0f} s ({100 * cpu / elapsed:.0f}% of a "
                f"core), RSS at the end {peak_rss / 2**20:.0f} MiB; PostgreSQL not counted"
            )
            print(
                f"sustained {sustained:.1f} events/s; the county's real peak need "
                f"{need:.2f} events/s"
            )
            if stored != published:
                print("LOST EVENTS")
            print(f"{sustained / need:.1f}")
        finally:
            serve.stop(60)
            broker.stop()


if __name__ == "__main__":
    main()
