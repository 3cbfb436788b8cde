"""`gridwatch demo` run headless for a short while, as a newcomer runs it: every service up,
events from every box stored, a case opened in its grid, the operations screen usable with
the printed logins in headless Chromium, and Ctrl-C (SIGINT) leaving no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, shot
from tests.support.ports import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
BOXES = ["gw-511725106-01", "gw-511725106201-01", "gw-511725106202-01"]


class Demo:
    def __init__(self, directory: Path, assets: Path, output: str = "demo.out") -> None:
        self.directory = directory
        self.port = free_port()
        self.output = directory / output
        directory.mkdir(parents=True, exist_ok=True)
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gridwatch",
                    "demo",
                    "--dir",
                    str(directory / "county"),
                    "--port",
                    str(self.port),
                ],
                cwd=REPO,
                env={**os.environ, "GRIDWATCH_ASSETS": str(assets)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # SIGINT below goes to the demo alone, as Ctrl-C would
            )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def logins(self) -> dict[str, str]:
        return dict(re.findall(r"^ {4}([a-z-]+) +(\S+)$", self.text(), re.MULTILINE))

    def everything(self) -> list[psutil.Process]:
        """The demo, its children, and the servers it started that left its process tree
        (PostgreSQL daemonises): found by the demo's folder in their command line."""
        root = psutil.Process(self.process.pid)
        found = {p.pid: p for p in [root, *root.children(recursive=True)]}
        for p in psutil.process_iter(["cmdline"]):
            if str(self.directory) in " ".join(p.info["cmdline"] or []):
                found[p.pid] = p
        return list(found.values())


@pytest.fixture
def demo(tmp_path: Path, assets_dir: Path) -> Iterator[Demo]:
    running = Demo(tmp_path, assets_dir)
    yield running
    if running.process.poll() is None:
        os.killpg(running.process.pid, signal.SIGKILL)


def api(demo: Demo, user: str, password: str) -> httpx.Client:
    token = httpx.post(
        f"{demo.base}/api/v1/auth/token", data={"username": user, "password": password}, timeout=10
    ).json()["access_token"]
    return httpx.Client(
        base_url=f"{demo.base}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_the_demo_shows_the_county_at_work_and_stops_cleanly(demo: Demo, assets_dir: Path) -> None:
    wait_until(lambda: "stop                Ctrl-C" in demo.text(), 240, "the demo's banner")
    # The clips are served as RTSP cameras (GStreamer's server; `make test` installs it).
    assert "cameras             rtsp://127.0.0.1:" in demo.text(), demo.text()
    logins = demo.logins()
    assert set(logins) == {
        "admin",
        "county-op",
        "town-op",
        "village-op",
        "worker",
        "tech",
        "police",
        "emergency",
    }, demo.text()
    county = api(demo, "county-op", logins["county-op"])

    def nodes() -> dict[str, Any]:
        return {n["node_id"]: n for n in county.get("/fleet/nodes").json()}

    wait_until(
        lambda: all(nodes().get(b, {}).get("status") == "online" for b in BOXES),
        120,
        "the three boxes online",
    )

    def stored(box: str) -> int:
        return len(county.get("/events", params={"node_id": box, "limit": 5}).json()["items"])

    wait_until(lambda: all(stored(b) > 0 for b in BOXES), 180, "events from every box")
    expected_grids = {"511725106201001", "511725106201002", "511725106202001", "511725106"}

    def camera_cases() -> list[dict[str, Any]]:
        items = county.get("/cases", params={"source": "camera"}).json()["items"]
        return [c for c in items if c["unit_code"] in expected_grids]

    wait_until(lambda: bool(camera_cases()), 120, "a case opened in its grid")
    # Nobody acknowledges: the demo's one-minute deadline passes and the case goes up a tier.
    wait_until(lambda: any(c["escalations"] > 0 for c in camera_cases()), 150, "an escalation")

    # The grid blows the whistle, the departments report for duty: the county dispatches a
    # case jointly to the police, whose officer (a demo login) does their part.
    case_id = next(c["case_id"] for c in camera_cases() if c["state"] == "intake")
    for step in ({"action": "acknowledge"}, {"action": "confirm"}):
        done = county.post(f"/cases/{case_id}/actions", json=step)
        assert done.status_code == 200, done.text
    dispatched = county.post(
        f"/cases/{case_id}/actions", json={"action": "dispatch", "departments": ["police"]}
    )
    assert dispatched.status_code == 200, dispatched.text
    police = api(demo, "police", logins["police"])
    assert case_id in [c["case_id"] for c in police.get("/cases").json()["items"]]
    resolved = police.post(
        f"/cases/{case_id}/actions", json={"action": "resolve", "comment": "民警已到场处置"}
    )
    assert resolved.status_code == 200, resolved.text
    # The county admin is there for what only an admin does: rules, webhooks, tokens.
    admin = api(demo, "admin", logins["admin"])
    assert admin.get("/case-rules").json()["rules"]["deadlines"]["medium"]["ack_s"] == 60
    assert admin.get("/webhooks").status_code == 200

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{demo.base}/")
        page.fill("#username", "town-op")
        page.fill("#password", logins["town-op"])
        page.click("#login button[type=submit]")
        expect(page.locator("#crumbs")).to_have_text("土溪镇")
        expect(page.locator("#units")).to_contain_text("双凤村")
        expect(page.locator("#worst-nodes tbody tr")).to_have_count(3)
        shot(page, "demo-town-overview")
        browser.close()

    # The banner's commands work as printed, pasted in another terminal.
    [printed] = re.findall(r"^  new password +(.+)$", demo.text(), re.MULTILINE)
    reset = subprocess.run(
        ["bash", "-c", printed.replace("<user>", "worker")],
        cwd="/",  # a new terminal starts anywhere
        env={k: v for k, v in os.environ.items() if not k.startswith("CLOUD_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reset.returncode == 0, reset.stderr
    [new_password] = re.findall(r"^password worker (\S+)$", reset.stdout, re.MULTILINE)
    assert api(demo, "worker", new_password).get("/cases").status_code == 200
    assert f"alerts, live        {REPO}/.venv/bin/gridwatch alerts tail" in demo.text()

    # A second demo from the same folder is refused, and the first goes on (it broke it:
    # two ingests on one account, two agents on one outbox).
    again = Demo(demo.directory, assets_dir, output="again.out")
    assert again.process.wait(60) != 0
    assert "a demo is already running from" in again.text(), again.text()
    assert online(county) == set(BOXES)

    processes = demo.everything()
    assert len(processes) >= 8  # demo, PostgreSQL, Mosquitto, service, cameras, three boxes
    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(90) == 0, demo.text()[-2000:]
    # PostgreSQL's last processes may exit just after the demo: wait for them, bounded.
    _, left = psutil.wait_procs(processes, timeout=30)
    left = [p for p in left if p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [" ".join(p.cmdline()) for p in left]
    assert "stopped." in demo.text()


def test_the_demo_started_again_after_a_crash_gives_the_same_county(
    tmp_path: Path, assets_dir: Path
) -> None:
    """Everything killed (-9, as a power cut), and meanwhile something else took the
    broker's port: the next start moves the broker, provisions the boxes again with its new
    address, and shows the same county with its boxes online and its history kept."""
    first = Demo(tmp_path, assets_dir)
    try:
        wait_until(lambda: "stop                Ctrl-C" in first.text(), 240, "the banner")
        logins = first.logins()
        county = api(first, "county-op", logins["county-op"])
        wait_until(lambda: online(county) == set(BOXES), 120, "the three boxes online")
        wait_until(lambda: bool(newest(county)), 180, "events stored")
        before = newest(county)
        # The county admin changes a deadline: a later start must leave it alone.
        admin = api(first, "admin", logins["admin"])
        rules = admin.get("/case-rules").json()
        rules["rules"]["deadlines"]["low"]["ack_s"] = 120
        changed = admin.put(
            "/case-rules",
            json={
                "rules": rules["rules"],
                "reason": "a longer low deadline",
                "based_on": rules["version"],
            },
        )
        assert changed.status_code == 200, changed.text
    finally:
        # Listed before the kill: a killed process has no command line to be found by, and
        # its pid stays taken until it is reaped (PostgreSQL's lock names it).
        crashed = first.everything()
        for process in crashed:
            process.kill()
        psutil.wait_procs(crashed, timeout=30)
    broker_port = int((tmp_path / "county" / "broker" / "port").read_text())
    with socket.socket() as squatter:  # something else took the broker's port meanwhile
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # its old links linger
        squatter.bind(("127.0.0.1", broker_port))
        squatter.listen()
        second = Demo(tmp_path, assets_dir)
        try:
            wait_until(lambda: "stop                Ctrl-C" in second.text(), 240, "the banner")
            assert f"127.0.0.1:{broker_port}" not in second.text()
            county = api(second, "county-op", logins["county-op"])  # the same logins
            assert "logins              admin, county-op, town-op" in second.text()
            in_force = county.get("/case-rules").json()
            assert (in_force["reason"], in_force["set_by"]) == ("a longer low deadline", "admin")
            wait_until(lambda: online(county) == set(BOXES), 120, "the boxes online again")
            wait_until(lambda: bool(newest(county) - before), 120, "new events")
            assert all(  # the history kept
                county.get(f"/events/{event_id}").status_code == 200 for event_id in before
            )
            processes = second.everything()
            second.process.send_signal(signal.SIGHUP)  # its terminal closed
            assert second.process.wait(90) == 0, second.text()[-2000:]
            # Nothing left behind, the PostgreSQL the crash left unstopped included.
            _, left = psutil.wait_procs(processes, timeout=30)
            left = [p for p in left if p.status() != psutil.STATUS_ZOMBIE]
            assert left == [], [" ".join(p.cmdline()) for p in left]
        finally:
            if second.process.poll() is None:
                os.killpg(second.process.pid, signal.SIGKILL)


def online(county: httpx.Client) -> set[str]:
    return {n["node_id"] for n in county.get("/fleet/nodes").json() if n["status"] == "online"}


def newest(county: httpx.Client) -> set[str]:
    """The ids of the newest events stored."""
    return {e["event_id"] for e in county.get("/events", params={"limit": 20}).json()["items"]}
