"""Provisioning a county's boxes from a sheet, within balena's rate limit: the tool against
a naive one-at-a-time script, through the real service, broker and database and the local
balena API double (balenaCloud cannot be reached here), in one run.

Run: .venv/bin/python -m bench.provision_bulk [--boxes 500] [--limit 3000] [--naive 40]
                                              [--latency 0.15]

A county of 40 towns, 400 villages and 613 grids; `--boxes` village boxes with two cameras
each. The double allows `--limit` requests per minute per key and answers 429 with
Retry-After beyond it, and answers each request after `--latency` seconds (a county's round
trip to balenaCloud; on loopback a script's sequential calls would cost nothing). The tool:
boxes in parallel, a client-side limit just under the double's, one named provisioning key,
devices addressed by id. The naive script: one box at a time with the SDK's own calls
(`device.register`, which mints a key per box; every call by uuid, so a lookup each), the
SDK's own 429 retry. The naive run covers `--naive` boxes (its
rate is steady). The last line is boxes/min (tool) / boxes/min (naive).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from balena import Balena, __version__
from balena.auth import Auth
from balena.models import Models
from balena.pine import PineClient
from pydantic import SecretStr

from cloud.access import Principal, Role
from cloud.auth import issue_access_token
from cloud.tiers import Level
from provisioning.balena_fleet import BalenaFleet
from provisioning.flow import Provisioner, node_env
from provisioning.plans import BoxPlan, OrgTree, make_plans
from provisioning.service import CountyService
from provisioning.settings import ProvisionSettings
from provisioning.sheets import BoxRow, CameraSpecRow, Line
from tests.support.balena_double import BalenaApiDouble, BalenaDouble
from tests.support.cloud import ServeProcess
from tests.support.county import COUNTY, TEST_JWT_SECRET, import_large_county
from tests.support.mosquitto import MosquittoBroker
from tests.support.postgres import LOCAL_SERVER, fresh_database

FLEET = "qu-county/village-boxes"


def sheet(org: OrgTree, boxes: int) -> tuple[list[Line[BoxRow]], list[Line[CameraSpecRow]]]:
    villages = sorted(u.code for u in org.units.values() if u.level == "village")
    grids: dict[str, list[str]] = {}
    for unit in org.units.values():
        if unit.level == "grid" and unit.parent_code:
            grids.setdefault(unit.parent_code, []).append(unit.code)
    box_lines, camera_lines = [], []
    for i in range(boxes):
        village, index = villages[i % len(villages)], 1 + i // len(villages)
        box_lines.append(Line(i + 2, BoxRow(unit_code=village, index=index)))
        for c in range(2):
            grid = sorted(grids[village])[c % len(grids[village])]
            camera_lines.append(
                Line(
                    2 * i + c + 2,
                    CameraSpecRow(
                        unit_code=village,
                        index=index,
                        camera_id=f"cam{c + 1:02d}",
                        vendor="hikvision",
                        host=f"192.168.{i % 250}.{64 + c}",
                        grid_code=grid,
                    ),
                )
            )
    return box_lines, camera_lines


def naive_box(
    sdk: Balena, service: CountyService, settings: ProvisionSettings, plan: BoxPlan
) -> None:
    """What a first script does: the SDK's own calls, by uuid, one box after the other."""
    import secrets

    service.register(plan.node_id, plan.registration())
    password = service.issue_credentials(plan.node_id)
    uuid = secrets.token_hex(16)
    sdk.models.device.register(FLEET, uuid)
    sdk.models.device.rename(uuid, plan.device_name)
    for key, value in plan.tags.items():
        sdk.models.device.tags.set(uuid, key, value)
    for name, value in node_env(settings, plan, password).items():
        sdk.models.device.env_var.set(uuid, name, value)
    service.register(plan.node_id, plan.registration(balena_uuid=uuid))
    service.put_config(plan.node_id, plan.desired_config())


def naive_sdk(url: str, token: str) -> Balena:
    sdk = Balena({"data_directory": False, "retry_rate_limited_request": True})
    sdk.settings.set("api_endpoint", url)
    sdk.pine = PineClient(sdk.settings, __version__)
    sdk.auth = Auth(sdk.pine, sdk.settings)
    sdk.models = Models(sdk.pine, sdk.settings)
    sdk.auth.login_with_token(token)
    return sdk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=500)
    parser.add_argument("--limit", type=int, default=3000, help="balena requests/min per key")
    parser.add_argument("--naive", type=int, default=40, help="boxes for the naive script")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per balena request")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(LOCAL_SERVER, "gw_bench_provision") as url,
    ):
        directory = Path(tmp)
        import_large_county(url, directory / "county")
        broker = MosquittoBroker(directory / "broker")
        broker.start()
        serve = ServeProcess(
            directory / "cloud", url, broker.url, ingest=False, CLOUD_JWT_SECRET=TEST_JWT_SECRET
        )
        token = issue_access_token(
            Principal("bench-tech", Role.FIELD_TECHNICIAN, COUNTY, Level.COUNTY),
            key=TEST_JWT_SECRET.encode(),
            lifetime_s=7200,
        )
        try:
            serve.start_listening()
            double = BalenaDouble(limit=args.limit, window_s=60.0, latency_s=args.latency)
            double.add_fleet(FLEET)
            with BalenaApiDouble(double) as api:
                settings = ProvisionSettings(
                    cloud_url=f"http://127.0.0.1:{serve.port}",
                    cloud_token=SecretStr(token),
                    broker_url="mqtts://broker.county.example:8883",
                    backend="balena",
                    balena_api_url=api.url,
                    balena_token=SecretStr(double.user_token),
                    balena_fleet=FLEET,
                    # Just under the double's limit: 429s stay rare instead of a storm.
                    balena_requests_per_minute=int(args.limit * 0.95),
                    state_dir=directory / "state",
                    technician="bench",
                    attempts=10,
                )
                service = CountyService(settings)
                org = OrgTree.from_api(service.units())
                boxes, cameras = sheet(org, args.boxes + args.naive)
                plans = make_plans(boxes, cameras, org)
                ours, theirs = plans[: args.boxes], plans[args.boxes :]
                print(
                    f"county: {len(org.units)} units; {len(ours)} boxes for the tool, "
                    f"{len(theirs)} for the naive script; balena limit {args.limit}/min per key, "
                    f"{1000 * args.latency:.0f} ms per request"
                )

                fleet = BalenaFleet(settings)
                work = Provisioner(settings, service, fleet)
                started = time.perf_counter()
                seconds: list[float] = []

                def timed(plan: BoxPlan) -> str:
                    t = time.perf_counter()
                    outcome = work.provision(plan)
                    seconds.append(time.perf_counter() - t)
                    return outcome.status if outcome.status == "done" else outcome.error

                with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                    statuses = list(pool.map(timed, ours))
                tool_s = time.perf_counter() - started
                failed = [s for s in statuses if s != "done"]
                requests = len(double.requests)
                limited = sum(1 for r in double.requests if r.status == 429)
                keys = len(double.tables["api_key"])
                tool_rate = (len(ours) - len(failed)) / tool_s * 60
                print(
                    f"tool: {len(ours) - len(failed)}/{len(ours)} boxes in {tool_s:.0f} s = "
                    f"{tool_rate:.0f} boxes/min; {requests} balena requests "
                    f"({requests / len(ours):.1f}/box), {limited} answered 429; {keys} "
                    f"provisioning key(s); per box p50 {statistics.median(seconds):.2f} s"
                )
                if failed:
                    print(f"tool failures: {failed[:3]}")

                before = len(double.requests)
                sdk = naive_sdk(api.url, double.user_token)
                started = time.perf_counter()
                for plan in theirs:
                    naive_box(sdk, service, settings, plan)
                naive_s = time.perf_counter() - started
                naive_requests = len(double.requests) - before
                naive_rate = len(theirs) / naive_s * 60
                minted = len(double.tables["api_key"]) - keys
                print(
                    f"naive: {len(theirs)} boxes in {naive_s:.0f} s = {naive_rate:.0f} boxes/min; "
                    f"{naive_requests} balena requests ({naive_requests / len(theirs):.1f}/box); "
                    f"{minted} provisioning keys minted"
                )
                with psycopg.connect(url) as conn:
                    row = conn.execute("SELECT count(*) FROM node_credentials").fetchone()
                print(f"registry: {row[0] if row else 0} boxes with a broker account")
                print(f"{tool_rate / naive_rate:.1f}")
        finally:
            serve.stop(60)
            broker.stop()


if __name__ == "__main__":
    main()
