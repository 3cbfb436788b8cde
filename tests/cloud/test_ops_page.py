"""The operations page in a real headless Chromium (Debian's, driven by Playwright) against
the real service process, broker and database: a town operator signs in, sees only the
town, watches an alert arrive live and opens a box's page. Screenshots are kept in
`test-artifacts/` (or $GRIDWATCH_ARTIFACTS) for people to look at."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from protocols.enums import Severity, StreamStatus
from protocols.health import CameraHealth
from tests.cloud.county_fixtures import OTHER_NODE, VILLAGE_NODE, County, county_database
from tests.factories import make_node_health
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, shot
from tests.support.cloud import FakeNodes, ServeProcess, serving
from tests.support.county import TEST_JWT_SECRET
from tests.support.mosquitto import MosquittoBroker

COUNTY_ZONE = ZoneInfo("Asia/Shanghai")  # the service's CLOUD_TIMEZONE (its default)


@pytest.fixture(scope="module")
def county(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    yield from county_database(postgres_admin_url, tmp_path_factory.mktemp("ops"))


@pytest.fixture(scope="module")
def serve(
    county: County, broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    yield from serving(
        tmp_path_factory.mktemp("serve"),
        county.url,
        broker.url,
        ingest=True,
        CLOUD_JWT_SECRET=TEST_JWT_SECRET,
        CLOUD_INGEST_CLIENT_ID="ingest-ops",
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # A browser far from the county (CLOUD_TIMEZONE, Asia/Shanghai): the screen still shows
    # the county's hours and days.
    context = browser.new_context(
        viewport={"width": 1600, "height": 1000},
        locale="zh-CN",
        timezone_id="America/Los_Angeles",
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # A refused sign-in is an answer the page handles, not an error of the page.
    expected = "the server responded with a status of 401"
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and expected not in m.text else None,
    )

    yield page
    context.close()
    assert errors == [], errors  # no script error on the page, ever


def axis(page: Page, chart_id: str) -> list[str]:
    """The category labels of a chart's x axis, as ECharts holds them."""
    labels: list[str] = page.evaluate(
        "(id) => echarts.getInstanceByDom(document.getElementById(id)).getOption().xAxis[0].data",
        chart_id,
    )
    return labels


LABEL_BOXES = """(id) => {
  const chart = echarts.getInstanceByDom(document.getElementById(id));
  return chart.getZr().storage.getDisplayList(true)
    .filter((e) => e.type === "tspan" && e.style.text)
    .map((e) => {
      const box = e.getBoundingRect().clone();
      box.applyTransform(e.getComputedTransform());
      return [e.style.text, box.x, box.y, box.width, box.height];
    });
}"""


def overlapping_labels(page: Page, chart_id: str) -> list[tuple[str, str]]:
    """Pairs of texts drawn on a chart over each other (the canvas, as ECharts laid it out)."""
    boxes = page.evaluate(LABEL_BOXES, chart_id)
    return [
        (a[0], b[0])
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a[1] < b[1] + b[3] and b[1] < a[1] + a[3] and a[2] < b[2] + b[4] and b[2] < a[2] + a[4]
    ]


def sign_in(page: Page, serve: ServeProcess, county: County, username: str) -> None:
    page.goto(f"http://127.0.0.1:{serve.port}/")
    page.fill("#username", username)
    page.fill("#password", county.passwords[username])
    page.click("#login button[type=submit]")
    expect(page.locator("#main-view")).to_be_visible()


def test_a_wrong_password_is_refused_in_chinese(
    page: Page, serve: ServeProcess, county: County
) -> None:
    page.goto(f"http://127.0.0.1:{serve.port}/")
    page.fill("#username", "town-op")
    page.fill("#password", "not the password")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("用户名或密码错误")
    expect(page.locator("#main-view")).to_be_hidden()


def test_a_town_operator_sees_the_town_live_and_a_box_page(
    page: Page, serve: ServeProcess, county: County, broker: MosquittoBroker, tmp_path: Path
) -> None:
    nodes = FakeNodes(broker.port, tmp_path / "nodes")
    try:
        cameras = [
            CameraHealth(
                camera_id=camera,
                status=status,
                input_fps=25.0,
                analysed_fps=5.0,
                reconnects=0,
            )
            for camera, status in (
                ("cam01", StreamStatus.CONNECTED),
                ("cam02", StreamStatus.OFFLINE),
            )
        ]
        nodes.publish_health(make_node_health(node_id=VILLAGE_NODE, cameras=cameras))
        sign_in(page, serve, county, "town-op")

        # The town and nothing else: its villages, its box, Chinese by default.
        expect(page.locator("#crumbs")).to_have_text("土溪镇")
        expect(page.locator("#units tbody tr")).to_have_count(2)
        expect(page.locator("#units")).to_contain_text("双凤村")
        expect(page.locator("#units")).not_to_contain_text("东门社区")
        expect(page.locator(f"#worst-nodes tr[data-node='{VILLAGE_NODE}']")).to_contain_text("1/2")
        expect(page.locator(f"#worst-nodes tr[data-node='{OTHER_NODE}']")).to_have_count(0)
        expect(page.locator(f"#worst-nodes tr[data-node='{VILLAGE_NODE}']")).to_contain_text("在线")
        expect(page.locator(".fleet-panel h2")).to_have_text("设备运行")
        expect(page.locator("#map canvas")).to_have_count(1)

        # An alert elsewhere in the county, then one in this town: only the town's arrives.
        expect(page.locator("#alert-link")).to_have_class("status-dot live")
        nodes.publish(OTHER_NODE, [1], camera_id="cam01", severity=Severity.HIGH)
        nodes.publish(VILLAGE_NODE, [1], camera_id="cam01", severity=Severity.HIGH)
        alert = page.locator("#alert-feed li").first
        expect(alert).to_contain_text(VILLAGE_NODE, timeout=30_000)
        expect(alert).to_contain_text("闯入")
        expect(page.locator("#alert-feed li")).to_have_count(1)
        # The figures behind it follow: one open case in the town, on the map and the list.
        expect(page.locator("#kpi-open")).to_have_text("1")
        expect(page.locator("#units tr[data-unit='511725106201']")).to_contain_text("1")

        shot(page, "town-overview-zh")
        assert overlapping_labels(page, "chart-states") == []
        # Days and hours on the charts are the county's, not the browser's.
        county_now = [datetime.now(COUNTY_ZONE)]
        days = axis(page, "chart-times")
        hours = axis(page, "chart-events")
        county_now.append(datetime.now(COUNTY_ZONE))
        assert days[-1] in {now.strftime("%m-%d") for now in county_now}
        assert hours[-1] in {now.strftime("%H:00") for now in county_now}

        # English on request.
        page.click("header .lang-toggle")
        expect(page.locator(".fleet-panel h2")).to_have_text("Fleet health")
        assert overlapping_labels(page, "chart-states") == []
        expect(page.locator("#alert-feed li").first).to_contain_text("intrusion")

        shot(page, "town-overview-en")

        # The box's page: its cameras with their stream status, config, a command.
        page.click(f"#worst-nodes a[href='#/node/{VILLAGE_NODE}']")
        expect(page.locator("#node-page")).to_be_visible()
        expect(page.locator("#node-status")).to_contain_text("online")
        expect(page.locator("#node-cameras thead")).to_contain_text("Stream")
        expect(page.locator("#node-cameras thead")).not_to_contain_text("object")
        expect(page.locator("#node-cameras tr[data-camera='cam02']")).to_contain_text("offline")
        expect(page.locator("#node-drift")).to_contain_text("config")
        page.select_option("#command", "identify")
        page.click("#send-command")
        expect(page.locator("#node-commands tbody tr").first).to_contain_text("identify")
        expect(page.locator("#node-commands tbody tr").first).to_contain_text("pending")
        shot(page, "node-page-en")
        # In Chinese, the commands and their states are words, not the protocol's names.
        page.click("header .lang-toggle")
        expect(page.locator("#command option[value='identify']")).to_have_text("闪灯识别")
        expect(page.locator("#node-commands tbody tr").first).to_contain_text("闪灯识别")
        expect(page.locator("#node-commands tbody tr").first).to_contain_text("等待执行")
        expect(page.locator("#node-facts")).to_contain_text("磁盘空间")
    finally:
        nodes.close()


def test_a_village_operator_cannot_drill_out_of_the_village(
    page: Page, serve: ServeProcess, county: County
) -> None:
    sign_in(page, serve, county, "village-op")
    expect(page.locator("#crumbs")).to_have_text("双凤村")
    page.goto(f"http://127.0.0.1:{serve.port}/ops/#/unit/511725100")  # another town
    expect(page.locator("#crumbs")).to_have_text("双凤村")
    # Its two grids, and itself with what is its own (its box): the rows add up.
    expect(page.locator("#units tbody tr")).to_have_count(3)
    expect(page.locator("#units tbody tr").last).to_contain_text("双凤村 (本级)")
    expect(page.locator("#units tbody tr").last).to_contain_text("/1")  # its one box


def test_a_technician_sees_the_fleet_and_a_box_naming_cameras_it_does_not_have(
    page: Page, serve: ServeProcess, county: County, broker: MosquittoBroker, tmp_path: Path
) -> None:
    """The technician reads the fleet and its work orders, not events: the overview draws
    what the role may read (before, one refused request left every figure empty)."""
    nodes = FakeNodes(broker.port, tmp_path / "nodes")
    try:
        sign_in(page, serve, county, "tech")
        expect(page.locator("#crumbs")).to_have_text("土溪镇")
        expect(page.locator("#kpi-nodes-online")).not_to_have_text("–")
        nodes.publish(VILLAGE_NODE, [7], camera_id="cam99", severity=Severity.HIGH)
        expect(page.locator("#alert-feed li").first).to_contain_text("未登记摄像头", timeout=30_000)
        expect(page.locator("#kpi-problems")).to_have_text("1")
        page.click(f"#worst-nodes a[href='#/node/{VILLAGE_NODE}']")
        expect(page.locator("#node-page")).to_contain_text("未登记摄像头")
        shot(page, "technician-unregistered-camera")
    finally:
        nodes.close()


@pytest.mark.parametrize(
    ("username", "shown", "hidden"),
    [
        ("county-op", [".fleet-panel", ".cases-panel", ".trends-panel", ".map-panel"], []),
        ("village-op", [".fleet-panel", ".cases-panel", ".trends-panel", ".map-panel"], []),
        ("worker", [".cases-panel", ".trends-panel"], [".fleet-panel", ".map-panel"]),
        ("tech", [".fleet-panel", ".cases-panel", ".map-panel"], [".trends-panel"]),
        ("police", [".cases-panel"], [".fleet-panel", ".map-panel", ".trends-panel"]),
        ("auditor", [".fleet-panel", ".cases-panel", ".trends-panel", ".map-panel"], []),
    ],
)
def test_every_role_sees_the_panels_it_may_read_and_no_request_fails(
    page: Page,
    serve: ServeProcess,
    county: County,
    username: str,
    shown: list[str],
    hidden: list[str],
) -> None:
    """Each panel draws alone (one refused request blanked the technician's and the grid
    worker's whole screens); a panel the role may not read is not shown. The page fixture
    fails on any failed request or script error."""
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    sign_in(page, serve, county, username)
    figures = {
        ".fleet-panel": "#kpi-nodes-online",
        ".cases-panel": "#kpi-open",
        ".map-panel": "#units tbody tr",
        ".trends-panel": "#chart-events canvas",
    }
    for selector in shown:
        expect(page.locator(selector)).to_be_visible()
        figure = page.locator(figures[selector]).first
        if selector in (".fleet-panel", ".cases-panel"):
            expect(figure).not_to_have_text("–")
        else:
            expect(figure).to_be_attached()
    for selector in hidden:
        expect(page.locator(selector)).to_be_hidden()
    assert failed == []


def test_a_grid_worker_on_a_phone_sees_the_whole_screen_and_no_box_links(
    browser: Browser, serve: ServeProcess, county: County, broker: MosquittoBroker, tmp_path: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, locale="zh-CN"
    )
    phone = context.new_page()
    nodes = FakeNodes(broker.port, tmp_path / "nodes")
    try:
        sign_in(phone, serve, county, "worker")
        expect(phone.locator("#kpi-open")).not_to_have_text("–")
        expect(phone.locator("#alert-link")).to_have_class("status-dot live")
        nodes.publish(VILLAGE_NODE, [900], camera_id="cam01", severity=Severity.HIGH)
        expect(phone.locator("#alert-feed li").first).to_contain_text(VILLAGE_NODE, timeout=30_000)
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        sign_out = phone.locator("#logout").bounding_box()
        node_links = phone.locator("#alert-feed a[href^='#/node/']").count()
        boxes_named = phone.locator("#alert-feed .node").count()
    finally:
        nodes.close()
        context.close()
    assert overflow <= 0  # nothing wider than the phone (the header was 432 px)
    assert sign_out is not None
    assert sign_out["x"] + sign_out["width"] <= 390
    assert node_links == 0  # a box's page is not the grid worker's to read
    assert boxes_named > 0  # named, not linked


@pytest.mark.parametrize(
    ("path", "shows"),
    # /redoc leads to the same page.
    [("/docs", ".opblock-summary-path[data-path='/api/v1/cases']"), ("/redoc", ".swagger-ui")],
)
def test_the_api_documentation_loads_with_no_request_beyond_the_service(
    page: Page, serve: ServeProcess, path: str, shows: str
) -> None:
    """County networks are often closed to the internet: Swagger UI comes from the service
    itself (FastAPI's own page loads it from a CDN and stayed blank)."""
    own = f"http://127.0.0.1:{serve.port}/"
    elsewhere: list[str] = []

    def only_own(route: Route) -> None:
        if route.request.url.startswith(own) or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_own)
    page.goto(own + path.lstrip("/"))
    expect(page.locator(shows).first).to_be_visible(timeout=30_000)
    assert elsewhere == []


def test_a_suspended_box_says_on_its_page_until_when_and_why(
    page: Page, serve: ServeProcess, county: County
) -> None:
    reason = "sent messages the county refuses at more than 1000 a second for 10 s"
    with psycopg.connect(county.url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO node_suspensions (node_id, since, until, reason, suspended_by) "
            "VALUES (%s, now(), now() + interval '10 minutes', %s, 'ingest')",
            (VILLAGE_NODE, reason),
        )
    try:
        sign_in(page, serve, county, "tech")
        page.goto(f"http://127.0.0.1:{serve.port}/ops/#/node/{VILLAGE_NODE}")
        facts = page.locator("#node-facts")
        expect(facts).to_contain_text("暂停接入至")
        expect(facts).to_contain_text(reason)
    finally:
        with psycopg.connect(county.url, autocommit=True) as conn:
            conn.execute("DELETE FROM node_suspensions")
