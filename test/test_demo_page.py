"""The demo page /demo/realtime: its files over HTTP, and the page itself in headless Chromium
against a real `python main.py serve` process, where a click must change the recommendation
panel through the Socket.IO push alone.

Nothing is skipped: without Debian chromium or without `npm install` the browser tests fail
and say what to install (CI installs both).
"""
from __future__ import annotations

import json
import re
import tempfile
import urllib.request
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

import web.demo
from config import load_settings
from config.settings import PROJECT_ROOT
from web import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SOCKET_IO_CLIENT = PROJECT_ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
SCREENSHOT = Path(tempfile.gettempdir()) / "demo-realtime.png"
TIMEOUT_MS = 10_000
LATENCY_TEXT = re.compile(r"last push: (\d+\.\d) ms after your click, trigger: purchase on \S")


# ---- the page's files, through the Flask test client ----------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(load_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('demo') / 'store.db'}",
                                   redis_url=None))
    yield app.test_client()
    app.extensions["recommendation_service"].close()


def test_page_and_its_assets_are_served(client):
    page = client.get("/demo/realtime")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for asset in ("/static/demo/realtime.css", "/static/demo/realtime.js", "/static/vendor/socket.io.min.js"):
        assert asset in html
    assert "http://" not in html and "https://" not in html  # no CDN, no web fonts
    assert client.get("/static/demo/realtime.css").mimetype == "text/css"
    assert client.get("/static/demo/realtime.js").mimetype in ("text/javascript", "application/javascript")


def test_asset_paths_cannot_leave_the_demo_folder(client):
    for path in ("/static/demo/../../main.py", "/static/demo/%2e%2e/%2e%2e/main.py", "/static/demo/nope.js"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.get_json()["error"] == "not_found"


def test_socket_io_client_comes_from_node_modules(client):
    if not SOCKET_IO_CLIENT.is_file():
        pytest.fail(f"{SOCKET_IO_CLIENT} is missing: run `npm install` at the repository root")
    answer = client.get("/static/vendor/socket.io.min.js")
    assert answer.status_code == 200
    assert answer.mimetype in ("text/javascript", "application/javascript")
    assert answer.get_data() == SOCKET_IO_CLIENT.read_bytes()


def test_missing_socket_io_client_is_a_json_404(client, monkeypatch, tmp_path):
    monkeypatch.setattr(web.demo, "VENDOR_DIR", tmp_path)
    answer = client.get("/static/vendor/socket.io.min.js")
    assert answer.status_code == 404
    assert answer.get_json() == {"error": "not_found", "message": "run npm install to fetch the Socket.IO client"}


# ---- the page in headless Chromium against a real server ------------------------------------

def get_json(base_url: str, path: str) -> dict:
    with urllib.request.urlopen(base_url + path, timeout=5) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian chromium (apt-get install -y chromium)")
    if not SOCKET_IO_CLIENT.is_file():
        pytest.fail(f"{SOCKET_IO_CLIENT} is missing: run `npm install` at the repository root")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class DemoPage:
    """The page plus what it logged and requested, for the assertions."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.problems.append(message.text))
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        page.on("request", lambda request: self.requests.append(request.url))

    def testid(self, testid: str):
        return self.page.get_by_test_id(testid)

    def wait_for_panel(self, user_id: str) -> list[str]:
        """The item ids of the panel once it has been drawn for `user_id` (from `registered`)."""
        expect(self.testid("rec-list")).to_have_attribute("data-user", user_id)
        expect(self.testid("rec-item").first).to_be_visible()
        return self.rec_items()

    def rec_items(self) -> list[str]:
        return self.testid("rec-item").evaluate_all("items => items.map(item => item.dataset.itemId)")


@pytest.fixture
def demo(browser, server):
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    demo = DemoPage(context.new_page())
    demo.page.goto("/demo/realtime")
    expect(demo.testid("connection-text")).to_have_text("connected")
    yield demo
    context.close()


@pytest.mark.slow
@pytest.mark.browser
def test_purchase_changes_the_panel_through_the_push(demo, server):
    demo.testid("user-alice").click()
    before = demo.wait_for_panel("alice")

    demo.testid("category-kitchen").click()
    expect(demo.testid("catalog-summary")).to_contain_text("kitchen items")
    products = demo.testid("product-grid").evaluate("grid => [...grid.children].map(card => card.dataset.itemId)")
    seen = {entry["item_id"] for entry in get_json(server.url, "/users/alice")["history"]}
    product = next(item_id for item_id in products if item_id not in before and item_id not in seen)

    demo.page.evaluate("window.sameDocument = true")  # gone if anything reloads the page
    demo.testid(f"buy-{product}").click()
    expect(demo.testid("last-push")).to_have_text(LATENCY_TEXT)
    latency_ms = float(LATENCY_TEXT.search(demo.testid("last-push").inner_text()).group(1))
    after = demo.rec_items()
    demo.page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled")

    assert after and after != before, f"alice's panel did not change after buying {product}"
    assert 0 < latency_ms < TIMEOUT_MS
    assert demo.page.evaluate("window.sameDocument") is True
    fetched = [url for url in demo.requests if re.search(r"/(recommendations|recommend|realtime-recommend)\b", url)]
    assert fetched == [], "the panel must come from the Socket.IO push, not from HTTP"
    assert demo.problems == []


@pytest.mark.slow
@pytest.mark.browser
def test_a_new_user_id_gets_a_panel(demo):
    user_id = f"newcomer_{uuid.uuid4().hex[:8]}"
    demo.testid("user-bob").click()
    demo.wait_for_panel("bob")

    demo.testid("user-input").fill(user_id)
    demo.testid("user-use").click()

    assert demo.wait_for_panel(user_id)
    expect(demo.testid("rec-user")).to_have_text(user_id)
    expect(demo.testid("user-bob")).to_have_attribute("aria-pressed", "false")
    assert demo.problems == []
