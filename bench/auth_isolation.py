"""Sign-in that cannot slow the API: `GET /api/v1/cases` latency idle and while clients post
wrong passwords as fast as they can, through the real service and database, in one run.

Run: .venv/bin/python -m bench.auth_isolation [--attackers 16] [--requests 400]

A small county on a private PostgreSQL database, `gridwatch cloud serve --no-ingest`. One
client reads a town operator's case list `--requests` times, one request after another:
idle; while `--attackers` clients flood /healthz, the cheapest answer there is (what any
flood of requests costs on this box, the attackers' own CPU included); then while they post
wrong passwords, first as the service answers them (past the allowance, 429 before any
hashing), then with the failure counts wiped continuously, so that every attempt would be
hashed (the worst case: one hash at a time off the event loop, a few waiting, the rest
told to try again, is what keeps the API answering). Then the revocation check alone: a
request's token checked against its user's token version, from the cache and from the
database. The attackers come from addresses of their own (127.0.0.2 on), as many machines would.
The last line is p50 while every sign-in is hashed / p50 while the same clients flood
/healthz: the two differ only in what the attackers ask, so it is what sign-in itself costs
the other users (the lines before give each against idle: on a small box the attackers'
own CPU costs as much as anything they ask).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx2 as httpx
import psycopg

from cloud.api.deps import TokenVersions
from cloud.auth import read_access_token
from cloud.settings import CloudSettings
from tests.cloud.county_fixtures import county_database
from tests.support.cloud import ServeProcess
from tests.support.county import TEST_JWT_SECRET
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import LOCAL_SERVER


def latencies_ms(base: str, token: str, requests: int) -> list[float]:
    out = []
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(f"{base}/cases")
            out.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return out


def attack(base: str, stop: threading.Event, answers: list[int], index: int, target: str) -> None:
    # Each attacker from an address of its own (127.0.0.2, .3, ...): many machines, each
    # within its own allowance, the worst case for the hashing queue.
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{index + 2}")
    with httpx.Client(transport=transport, timeout=60) as client:
        n = 0
        while not stop.is_set():
            n += 1
            if target == "sign-in":
                response = client.post(
                    f"{base}/auth/token",
                    data={"username": f"guess-{index}-{n}", "password": "wrong"},
                )
            else:  # the cheapest answer the service gives: any flood costs at least this
                response = client.get(base.removesuffix("/api/v1") + "/healthz")
            answers.append(response.status_code)


def under_attack(
    base: str,
    token: str,
    requests: int,
    attackers: int,
    meanwhile: Callable[[], None],
    target: str = "sign-in",
) -> tuple[list[float], list[int]]:
    stop = threading.Event()
    answers: list[int] = []
    threads = [
        threading.Thread(target=attack, args=(base, stop, answers, i, target), daemon=True)
        for i in range(attackers)
    ]

    def repeat() -> None:
        while not stop.is_set():
            meanwhile()

    helper = threading.Thread(target=repeat)
    for thread in [*threads, helper]:
        thread.start()
    time.sleep(1.0)  # the attack under way before measuring, not synchronising
    try:
        return latencies_ms(base, token, requests), answers
    finally:
        stop.set()
        for thread in [*threads, helper]:
            thread.join(60)


def summary(name: str, values: list[float]) -> float:
    p50 = statistics.median(values)
    p99 = statistics.quantiles(values, n=100)[98]
    print(f"{name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return p50


class _OneConnection:
    """The app's pool as TokenVersions uses it, lending one open connection."""

    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self.conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
        yield self.conn


async def revocation_check_us(url: str, token: str, rounds: int) -> tuple[float, float]:
    """p50 of one token's check: from the cache, and from the database (cache cleared)."""
    claims = read_access_token(token, key=TEST_JWT_SECRET.encode())
    versions = TokenVersions()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        app = SimpleNamespace(state=SimpleNamespace(pool=_OneConnection(conn)))
        assert await versions.holds(app, claims)
        cached, fresh = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            await versions.holds(app, claims)
            cached.append((time.perf_counter() - started) * 1e6)
        for _ in range(rounds // 10):
            versions._cache.clear()
            started = time.perf_counter()
            await versions.holds(app, claims)
            fresh.append((time.perf_counter() - started) * 1e6)
    return statistics.median(cached), statistics.median(fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = MosquittoBroker(root / "broker").start()
        with contextmanager(county_database)(LOCAL_SERVER, root) as county:
            serve = ServeProcess(
                root / "serve",
                county.url,
                broker.url,
                ingest=False,
                CLOUD_JWT_SECRET=TEST_JWT_SECRET,
                CLOUD_TIMESCALE="off",
            ).start_listening()
            try:
                token = serve.sign_in("town-op", county.passwords["town-op"])
                latencies_ms(serve.base, token, 50)  # warm up
                idle = summary("idle", latencies_ms(serve.base, token, args.requests))
                flood, _ = under_attack(
                    serve.base,
                    token,
                    args.requests,
                    args.attackers,
                    lambda: time.sleep(0.1),
                    target="healthz",
                )
                flooded = summary(f"{args.attackers} clients flooding /healthz", flood)
                throttled, answers = under_attack(
                    serve.base, token, args.requests, args.attackers, lambda: time.sleep(0.1)
                )
                summary(f"{args.attackers} attackers, throttled", throttled)
                refused = sum(1 for a in answers if a == 429)
                print(f"  attempts {len(answers)}, of them 429: {refused}")

                def wipe(url: str = county.url) -> None:
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute("DELETE FROM sign_in_failures")
                    time.sleep(0.05)

                hashed, answers = under_attack(
                    serve.base, token, args.requests, args.attackers, wipe
                )
                loaded = summary(f"{args.attackers} attackers, every attempt hashed", hashed)
                hashed_n = sum(1 for a in answers if a == 401)
                print(f"  attempts {len(answers)}, of them hashed (401): {hashed_n}")
                cached_us, fresh_us = asyncio.run(revocation_check_us(county.url, token, 20_000))
                print(
                    f"revocation check: p50 {cached_us:.1f} µs from the cache, "
                    f"{fresh_us:.0f} µs from the database"
                )
            finally:
                serve.stop()
                broker.stop()
            print(f"/healthz flood/idle p50 (what any flood costs here): {flooded / idle:.2f}")
            print(f"every sign-in hashed/idle p50: {loaded / idle:.2f}")
            print(f"ratio sign-in flood/healthz flood p50: {loaded / flooded:.2f}")


if __name__ == "__main__":
    CloudSettings()  # fail early on a broken environment
    main()
