"""The monitoring dashboard /dashboard: its files and the once-a-second figures through the Flask
test client, the API-key check on `subscribe_dashboard`, and the page in headless Chromium against
a real `python main.py serve` process, where posting events must move the charts. That server has
an API key, so the browser tests cover both ways the page gets it (`?key=` and the password box).

Nothing is skipped: without Debian chromium or `npm ci` the browser tests fail and say what to
install.
"""
from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import pytest
import requests
from live_server import start_server
from playwright.sync_api import Page, expect, sync_playwright

import web.dashboard
from config import load_settings
from config.settings import PROJECT_ROOT
from web import create_app
from web.dashboard import FEED_KEY
from web.extensions import socketio

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
UPLOT = PROJECT_ROOT / "node_modules" / "uplot" / "dist"
SCREENSHOT = Path(tempfile.gettempdir()) / "dashboard.png"
TIMEOUT_MS = 10_000
EVENTS = 20
KEY = "s3cret"


def make_app(directory: Path, **settings):
    return create_app(load_settings(database_url=f"sqlite:///{directory / 'store.db'}", redis_url=None,
                                    rate_limit="", **settings))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("dashboard"))
    yield app
    app.extensions["recommendation_service"].close()


@pytest.fixture
def client(app):
    return app.test_client()


# ---- the page's files ----------------------------------------------------------------------------

def test_page_and_its_assets_are_served_from_this_server_only(client):
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for asset in ("/static/dashboard/dashboard.css", "/static/dashboard/dashboard.js",
                  "/static/vendor/uplot/uPlot.iife.min.js", "/static/vendor/uplot/uPlot.min.css",
                  "/static/vendor/socket.io.min.js"):
        assert asset in html
        assert client.get(asset).status_code == 200, asset
    assert "http://" not in html and "https://" not in html  # no CDN, no web fonts
    assert client.get("/static/vendor/uplot/uPlot.iife.min.js").get_data() == (UPLOT / "uPlot.iife.min.js").read_bytes()


def test_unknown_or_escaping_asset_paths_are_json_404s(client):
    for path in ("/static/dashboard/nope.js", "/static/dashboard/../../main.py", "/static/vendor/uplot/nope.js",
                 "/static/vendor/uplot/../../uplot/package.json"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.get_json()["error"] == "not_found", path


def test_missing_uplot_is_a_json_404_saying_what_to_run(client, monkeypatch, tmp_path):
    monkeypatch.setattr(web.dashboard, "UPLOT_DIR", tmp_path / "absent")
    answer = client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert answer.status_code == 404
    assert answer.get_json() == {"error": "not_found", "message": "run npm ci to fetch uPlot"}


# ---- the figures ---------------------------------------------------------------------------------

def test_each_tick_reports_the_interval_since_the_previous_one(app, client):
    feed = app.extensions[FEED_KEY]
    feed.tick()  # start a fresh interval
    for product in ("iphone", "ipad"):
        answer = client.post("/event", json={"user_id": "dash", "product_id": product, "event_type": "view"})
        assert answer.status_code == 201
    client.get("/similar/iphone")  # a miss, then a hit
    client.get("/similar/iphone")
    busy = feed.tick()
    idle = feed.tick()

    assert busy["requests_per_second"] > 0 and busy["events_per_second"] > 0
    assert busy["requests_per_second"] / busy["events_per_second"] == pytest.approx(2, rel=0.01)  # 4 requests, 2 events
    assert 0 < busy["p50_ms"] <= busy["p99_ms"]
    assert busy["cache_hit_rate"]["similar"] == 0.5
    assert busy["cache_hit_rate"]["profiles"] is None  # nobody looked one up
    assert busy["cache_hit_rate"]["overall"] == 0.5  # events answer without a cache lookup
    assert busy["connected_users"] == 0
    assert busy["last_retrain"]["time"] > 0 and busy["last_retrain"]["duration_seconds"] > 0
    assert busy["model_version"] == app.extensions["recommendation_service"].engine.fitted_through_seq
    assert (idle["requests_per_second"], idle["events_per_second"], idle["p50_ms"], idle["cache_hit_rate"]["overall"]) \
        == (0, 0, None, None)
    assert list(feed.history)[-2:] == [busy, idle]


# ---- subscribe_dashboard and the API key ---------------------------------------------------------

@pytest.fixture
def started_tasks(monkeypatch):
    """Background tasks the handlers start, recorded instead of run (the browser test runs the real one)."""
    started = []
    monkeypatch.setattr(socketio, "start_background_task", lambda target, *args: started.append(target))
    return started


def subscribe(app, data=None):
    return socketio.test_client(app).emit("subscribe_dashboard", data, callback=True)


def test_without_an_api_key_anyone_may_subscribe_and_the_feed_starts_once(app, started_tasks):
    first, second = subscribe(app), subscribe(app, {"key": "ignored"})
    assert first["subscribed"] is True and first["interval_seconds"] == 1
    assert isinstance(first["history"], list) and second["subscribed"] is True
    assert len(started_tasks) == 1


def test_with_an_api_key_the_subscription_needs_it(tmp_path, started_tasks):
    app = make_app(tmp_path, api_key="s3cret")
    try:
        assert subscribe(app) == {"error": "unauthorized", "message": "missing key"}
        assert subscribe(app, {"key": None}) == {"error": "unauthorized", "message": "missing key"}
        for wrong in ("nope", "", "s3cret ", "ünïcode", 42, ["s3cret"]):
            assert subscribe(app, {"key": wrong}) == {"error": "unauthorized", "message": "invalid key"}, wrong
        assert started_tasks == []
        assert subscribe(app, {"key": "s3cret"})["subscribed"] is True
        assert len(started_tasks) == 1
    finally:
        app.extensions["recommendation_service"].close()


# ---- the page in headless Chromium against a real server ------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian chromium (apt-get install -y chromium)")
    if not (UPLOT / "uPlot.iife.min.js").is_file():
        pytest.fail(f"{UPLOT} is missing: run `npm ci` at the repository root")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class DashboardPage:
    """The page plus the problems it logged and the URLs it fetched."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.problems.append(message.text))
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        page.on("request", lambda request: self.requests.append(request.url))

    def testid(self, testid: str):
        return self.page.get_by_test_id(testid)

    def chart_data(self, chart: str) -> list[list]:
        """The arrays uPlot draws: [times, series...]."""
        return self.page.evaluate(f"window.dashboard.charts.{chart}.data")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("dashboard-server"), API_KEY=KEY)
    yield live
    live.stop()


@pytest.fixture
def open_page(browser):
    contexts = []

    def open_page(url: str) -> DashboardPage:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        dashboard = DashboardPage(context.new_page())
        dashboard.page.goto(url)
        return dashboard

    yield open_page
    for context in contexts:
        context.close()


def integrate(times: list[float], rates: list[float]) -> float:
    """How many things a per-second rate series counts: each point covers the interval before it."""
    return sum(rate * (later - earlier) for rate, earlier, later in zip(rates[1:], times, times[1:]))


@pytest.mark.slow
@pytest.mark.browser
def test_the_charts_move_while_events_are_posted(open_page, keyed_server):
    server = keyed_server
    dashboard = open_page(f"{server.url}/dashboard?key={KEY}")
    expect(dashboard.testid("connection-text")).to_have_text("connected")
    expect(dashboard.testid("chart-events")).not_to_have_attribute("data-points", "0")  # the first stats arrived
    points_before = int(dashboard.testid("chart-events").get_attribute("data-points"))

    with requests.Session() as session:
        for number in range(EVENTS):
            answer = session.post(f"{server.url}/event", headers={"X-API-Key": KEY},
                                  json={"user_id": f"watcher{number % 4}", "product_id": "coffee_maker",
                                        "event_type": "view"})
            assert answer.status_code == 201
            assert session.get(f"{server.url}/popular").status_code == 200  # cached after the first
            time.sleep(0.05)  # spread over about a second, so the events land in one or two ticks

    # The text shows the rate for one second; the chart keeps it. Summed over time it is every event.
    dashboard.page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=value-events]').textContent) > 0")
    dashboard.page.wait_for_function(f"""() => {{
        const [times, rates] = window.dashboard.charts.events.data;
        let events = 0;
        for (let i = 1; i < times.length; i++) events += rates[i] * (times[i] - times[i - 1]);
        return events > {EVENTS} - 0.5;
    }}""")
    expect(dashboard.testid("value-events")).to_have_text("0.0", timeout=3000)  # back to idle

    times, events_per_second = dashboard.chart_data("events")
    _, requests_per_second = dashboard.chart_data("requests")
    _, p50, p99 = dashboard.chart_data("latency")
    _, hit_rates, *_ = dashboard.chart_data("cache")
    dashboard.page.screenshot(path=str(SCREENSHOT), animations="disabled")

    assert int(dashboard.testid("chart-events").get_attribute("data-points")) > points_before
    assert integrate(times, events_per_second) == pytest.approx(EVENTS, abs=0.5)
    assert integrate(times, requests_per_second) > 2 * EVENTS - 0.5  # an event and a /popular read each time
    assert max(rate for rate in hit_rates if rate is not None) > 0.5
    assert any(value is not None and value > 0 for value in p50)
    assert all(low <= high for low, high in zip(p50, p99) if low is not None)
    assert dashboard.testid("value-retrain").inner_text().endswith(tuple("0123456789"))
    assert all(url.startswith(server.url) for url in dashboard.requests), "the page must load nothing from outside"
    assert dashboard.problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_without_the_key_the_page_asks_for_it(open_page, keyed_server):
    dashboard = open_page(f"{keyed_server.url}/dashboard")
    expect(dashboard.testid("connection-text")).to_have_text("API key needed")
    expect(dashboard.testid("key-form")).to_be_visible()
    expect(dashboard.testid("key-message")).to_have_text("")  # no complaint before a key was typed

    dashboard.testid("key-input").fill("wrong")
    dashboard.testid("key-submit").click()
    expect(dashboard.testid("key-message")).to_have_text("invalid key")
    dashboard.testid("key-input").fill(KEY)
    dashboard.testid("key-submit").click()
    expect(dashboard.testid("connection-text")).to_have_text("connected")
    expect(dashboard.testid("key-form")).to_be_hidden()
    expect(dashboard.testid("chart-requests")).not_to_have_attribute("data-points", "0")
    assert dashboard.problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_the_experiments_panel_shows_each_variant_with_its_interval_and_traffic(open_page, keyed_server):
    """Through a real server: an experiment, lists served and clicked over HTTP; the panel must show
    what GET /experiments/<id> counts, per variant, with the CTR interval and the traffic chart."""
    server, headers, users = keyed_server, {"X-API-Key": KEY}, 40
    with requests.Session() as session:
        created = session.post(f"{server.url}/experiments", headers=headers, json={
            "name": "panel-check", "variants": [{"name": "control", "share": 0.5, "case": "popular"},
                                                {"name": "hybrid", "share": 0.5, "case": "hybrid"}]})
        assert created.status_code == 201, created.text
        experiment_id = created.json()["experiment_id"]
        try:
            for number in range(users):
                user_id = f"panel_user_{number}"
                answer = session.get(f"{server.url}/recommendations/{user_id}?count=5", headers=headers).json()
                if number % 3 == 0:  # a click on a third of the lists
                    assert session.post(f"{server.url}/interactions", headers=headers, json={
                        "user_id": user_id, "item_id": answer["recommendations"][0]["item"], "event_type": "view",
                        "recommendation_id": answer["recommendation_id"]}).status_code == 201
            deadline = time.monotonic() + 10  # impressions are written in batches, every 0.1 s
            while True:
                result = session.get(f"{server.url}/experiments/{experiment_id}", headers=headers).json()
                counted = sum(variant["impressions"] for variant in result["variants"])
                if counted == users or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert counted == users

            dashboard = open_page(f"{server.url}/dashboard?key={KEY}")
            expect(dashboard.testid("experiment-name")).to_have_text("panel-check")
            expect(dashboard.testid("experiment-status")).to_contain_text("running")
            rows = dashboard.testid("variant-row")
            expect(rows).to_have_count(2)
            for variant in result["variants"]:
                row = dashboard.page.locator(f'[data-testid="variant-row"][data-variant="{variant["name"]}"]')
                expect(row.get_by_test_id("variant-impressions")).to_have_text(str(variant["impressions"]))
                expect(row.get_by_test_id("variant-clicks")).to_have_text(str(variant["clicks"]))
                # The page rounds with JavaScript's toFixed(1), which may round a half the other way.
                shown = [float(n) for n in re.findall(r"[\d.]+(?=%)", row.get_by_test_id("variant-ctr").inner_text())]
                low, high = variant["ctr_ci"]
                assert shown == pytest.approx([100 * variant["ctr"], 100 * low, 100 * high], abs=0.051)
                expect(row.locator(".ci-band")).to_have_count(1)
            expect(dashboard.testid("chart-traffic")).not_to_have_attribute("data-points", "0")
            times, *shares = dashboard.chart_data("traffic")
            assert [sum(column) for column in zip(*shares)] == pytest.approx([1.0] * len(times))
            assert dashboard.problems == []
        finally:
            session.post(f"{server.url}/experiments/{experiment_id}/stop", headers=headers)
