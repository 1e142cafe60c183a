"""Issue 9's defects found by probing, and what a newcomer tripped on: a test (or a few) per defect.

Inputs go through the Flask test client; connections, chunked bodies, Socket.IO and the pages go
to real `python main.py serve` processes, with python-socketio clients, raw sockets and Chromium.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import socketio
from playwright.sync_api import expect, sync_playwright

from recommenders.hybrid import METHODS
from web import create_app
from web.errors import MAX_JSON_DEPTH
from web.landing import CONTENT_SECURITY_POLICY
from web.openapi import DOCS_ASSETS

KEY = "probing-key-0123456789"
KEY_HEADER = {"X-API-Key": KEY}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DAY = 24 * 3600
IDLE_TIMEOUT, HEADER_TIMEOUT = 2.0, 1.0  # the live server's, in seconds
PAGES = ("/", "/demo/realtime", "/dashboard", "/docs")


@pytest.fixture(scope="module")
def make_client(service):
    def make(**overrides):
        return create_app(service.settings.model_copy(update=overrides), service=service).test_client()
    return make


@pytest.fixture(scope="module")
def client(make_client):
    return make_client()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def assert_error(answer, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["error"] == code and body["message"], body
    return body


# ---- a timestamp more than a day ahead ----------------------------------------------------------

@pytest.mark.parametrize("route, body", [
    ("/event", {"product_id": "ipad", "event_type": "view"}),
    ("/interactions", {"item_id": "ipad", "event_type": "purchase"}),
])
def test_an_event_dated_more_than_a_day_ahead_is_refused(client, route, body):
    user = unique("clock")
    month_ahead = time.time() + 30 * DAY
    refused = assert_error(client.post(route, json={**body, "user_id": user, "timestamp": month_ahead}),
                           422, "validation_error")
    assert refused["details"] == [{"field": "timestamp", "message": "timestamp is more than 86400 seconds in the future"}]
    iso_ahead = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2 * DAY))
    assert_error(client.post(route, json={**body, "user_id": user, "timestamp": iso_ahead}), 422, "validation_error")
    assert client.get(f"/users/{user}").status_code == 404  # nothing was stored
    # a clock a few hours fast is tolerated
    assert client.post(route, json={**body, "user_id": user, "timestamp": time.time() + 23 * 3600}).status_code == 201


def test_the_tolerance_is_a_setting(make_client):
    strict = make_client(timestamp_max_future_seconds=60)
    event = {"user_id": unique("clock"), "product_id": "ipad", "event_type": "view"}
    assert_error(strict.post("/event", json={**event, "timestamp": time.time() + 120}), 422, "validation_error")
    assert strict.post("/event", json={**event, "timestamp": time.time() + 30}).status_code == 201


# ---- JSON nested too deeply ---------------------------------------------------------------------

def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 20_000])  # 20,000: Python's parser raised RecursionError
@pytest.mark.parametrize("route, template", [
    ("/interactions", '{"user_id": "alice", "item_id": "iphone", "rating": 5, "event_id": %s}'),
    ("/event", '{"user_id": "alice", "product_id": "iphone", "event_type": "view", "timestamp": %s}'),
    ("/items", '{"item_id": "deep", "name": "Deep", "tags": %s}'),
    ("/users", '{"user_id": %s}'),
])
def test_json_nested_deeper_than_the_limit_is_400(client, route, template, depth):
    answer = client.post(route, data=template % nested(depth), content_type="application/json")
    body = assert_error(answer, 400, "bad_request")
    assert body["message"] == f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels"


def test_json_within_the_limit_and_brackets_inside_strings_are_fine(client):
    name = "[" * 100 + "{" * 100
    answer = client.post("/items", json={"item_id": unique("brackets"), "name": name, "tags": ["a[[[", "{{{"]})
    assert answer.status_code == 201 and answer.get_json()["item"]["name"] == name
    within = '{"user_id": "alice", "item_id": "iphone", "rating": 5, "event_id": %s}' % nested(MAX_JSON_DEPTH - 1)
    assert_error(client.post("/interactions", data=within, content_type="application/json"), 422, "validation_error")


# ---- NUL in a category --------------------------------------------------------------------------

NUL_CATEGORY = "kit\u0000chen"
CATEGORY_INPUTS = {  # every place a category is taken: (method, route) -> request
    ("GET", "/items"): lambda client: client.get("/items", query_string={"category": NUL_CATEGORY}),
    ("GET", "/popular"): lambda client: client.get("/popular", query_string={"category": NUL_CATEGORY}),
    ("GET", "/recommend"): lambda client: client.get(
        "/recommend", query_string={"user_id": "alice", "category": NUL_CATEGORY}),
    ("POST", "/items"): lambda client: client.post(
        "/items", json={"item_id": unique("nul"), "name": "Thing", "category": NUL_CATEGORY}),
    ("PATCH", "/items/{item_id}"): lambda client: client.patch("/items/iphone", json={"category": NUL_CATEGORY}),
}


def test_nul_in_a_category_is_422_wherever_a_category_is_taken(client):
    for (method, route), send in CATEGORY_INPUTS.items():
        body = assert_error(send(client), 422, "validation_error")
        assert body["details"][0]["field"] == "category", (method, route, body)


def test_every_route_taking_a_category_is_covered(client):
    """A route that starts taking a category must join CATEGORY_INPUTS."""
    document = client.get("/openapi.json").get_json()
    taking = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = {parameter["name"] for parameter in operation.get("parameters", ())}
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in body:
                # a body that is one of several models (POST /rules) has no properties of its own
                names |= set(document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]].get("properties", ()))
            if "category" in names:
                taking.add((method.upper(), path))
    assert taking == set(CATEGORY_INPUTS)


# ---- /metrics under API_KEY_READS ---------------------------------------------------------------

def test_metrics_need_the_key_when_reads_are_protected(make_client):
    protected = make_client(api_key=KEY, api_key_reads=True)
    assert_error(protected.get("/metrics"), 401, "unauthorized")
    answer = protected.get("/metrics", headers=KEY_HEADER)
    assert answer.status_code == 200 and b"http_requests_total" in answer.get_data()
    assert make_client(api_key=KEY).get("/metrics").status_code == 200  # reads open: so is /metrics


@pytest.mark.parametrize("route, field", [("/interactions", "item_id"), ("/event", "product_id")])
def test_an_event_id_reused_for_another_event_is_409_and_a_retry_is_not(client, route, field):
    event_id = f"reuse-{route.strip('/')}"
    first = {"user_id": "reuser", field: "iphone", "event_type": "view", "event_id": event_id}
    assert client.post(route, json=first).status_code == 201
    assert client.post(route, json=first).status_code == 201  # a retry: same event, dated on arrival
    for changed in ({field: "ipad"}, {"user_id": "someone_else"}, {"event_type": "purchase"},
                    {"timestamp": 1_700_000_000}):
        answer = client.post(route, json={**first, **changed})
        assert assert_error(answer, 409, "conflict")["message"] == f"event_id '{event_id}' was recorded for another event"
    dated = {**first, "event_id": f"{event_id}-dated", "timestamp": 1_700_000_000}
    assert client.post(route, json=dated).status_code == 201
    assert client.post(route, json=dated).status_code == 201
    assert client.post(route, json={**dated, "timestamp": 1_700_000_001}).status_code == 409
    assert "409" in client.get("/openapi.json").get_json()["paths"][route]["post"]["responses"]


# ---- the newcomer's trips: `weighted`, unknown categories ---------------------------------------

def test_weighted_is_accepted_as_the_default_hybrid_method(client):
    weighted = client.get("/recommend?user_id=alice&method=weighted&count=5")
    assert weighted.status_code == 200, weighted.get_data(as_text=True)
    assert weighted.get_json()["method"] == "weighted"
    default = client.get("/recommend?user_id=alice&count=5").get_json()
    assert [r["item"] for r in weighted.get_json()["recommendations"]] == [r["item"] for r in default["recommendations"]]
    for method in METHODS:
        assert client.get(f"/recommend?user_id=alice&method={method}").status_code == 200, method
    document = client.get("/openapi.json").get_json()
    method_parameter = next(p for p in document["paths"]["/recommend"]["get"]["parameters"] if p["name"] == "method")
    assert method_parameter["schema"]["enum"] == list(METHODS)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert all(f"`{method}`" in readme for method in METHODS)


def test_an_unknown_category_is_404_on_items_as_on_popular(client):
    for path in ("/items?category=no_such_category", "/popular?category=no_such_category"):
        assert assert_error(client.get(path), 404, "not_found")["message"] == "unknown category 'no_such_category'"
    known = client.get("/items?category=kitchen&offset=100000")  # past the end of a known one: empty, not 404
    assert known.status_code == 200 and known.get_json()["items"] == [] and known.get_json()["total"] > 0
    assert "404" in client.get("/openapi.json").get_json()["paths"]["/items"]["get"]["responses"]


# ---- a real server (short connection timeouts): chunked bodies, Socket.IO, connections --------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from live_server import start_server

    server = start_server(tmp_path_factory.mktemp("probing-server"), RATE_LIMIT="",
                          HTTP_IDLE_TIMEOUT_SECONDS=str(IDLE_TIMEOUT), HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT))
    yield server
    server.stop()


def test_a_chunked_body_over_the_limit_is_413(live):
    user = unique("chunked")
    valid = json.dumps({"user_id": user, "item_id": "iphone", "rating": 5}).encode()
    padded = valid + b" " * 70_000  # valid JSON even when cut at 64 KiB: it was stored, with 201

    def chunks(body: bytes):
        yield from (body[start:start + 8192] for start in range(0, len(body), 8192))

    answer = requests.post(f"{live.url}/interactions", data=chunks(padded),
                           headers={"Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"
    assert requests.get(f"{live.url}/users/{user}", timeout=5).status_code == 404  # nothing stored
    assert requests.post(f"{live.url}/interactions", data=chunks(valid), headers={"Content-Type": "application/json"},
                         timeout=10).status_code == 201  # a chunked body within the limit is fine
    exactly = valid + b" " * (65536 - len(valid))
    assert requests.post(f"{live.url}/interactions", data=chunks(exactly), headers={"Content-Type": "application/json"},
                         timeout=10).status_code == 201


# ---- Socket.IO: bad calls answer an `error` event -------------------------------------------------

class Subscriber:
    """A python-socketio client that records `registered`, `realtime_recommendation` and `error` events."""

    def __init__(self, url: str, transport: str = "websocket") -> None:
        self.events: dict[str, list] = {"registered": [], "realtime_recommendation": [], "error": []}
        self._arrived = threading.Condition()
        self.client = socketio.Client(reconnection=False)
        for name in self.events:
            self.client.on(name, lambda payload=None, name=name: self._record(name, payload))
        self.client.connect(url, transports=[transport] if transport == "websocket" else None, wait_timeout=5)

    def _record(self, name: str, payload) -> None:
        with self._arrived:
            self.events[name].append(payload)
            self._arrived.notify_all()

    def wait_for(self, name: str, count: int = 1) -> list:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.events[name]) >= count, 5), (name, self.events)
            return self.events[name]

    def close(self) -> None:
        self.client.disconnect()


def test_register_user_with_wrong_arguments_gets_an_error_event(live):
    subscriber = Subscriber(live.url)
    try:
        subscriber.client.emit("register_user")
        subscriber.client.emit("register_user", ({"user_id": "alice"}, "extra"))
        subscriber.client.eio.send('2["register_user",{"user_id":' + nested(50_000) + "}]")  # deeper than json.dumps goes
        subscriber.client.eio.send('2["register_user",{"user_id": "alice"')  # not JSON
        subscriber.client.emit("unregister_user", ("a", "b", "c"))
        errors = subscriber.wait_for("error", 5)
        assert [error["message"] for error in errors] == [
            'register_user takes one argument, {"user_id": ...}; got 0',
            'register_user takes one argument, {"user_id": ...}; got 2',
            f"register_user: the message is not JSON, or is nested deeper than {MAX_JSON_DEPTH} levels",
            f"register_user: the message is not JSON, or is nested deeper than {MAX_JSON_DEPTH} levels",
            'unregister_user takes one argument, {"user_id": ...}; got 3',
        ]
        assert {error["error"] for error in errors} == {"validation_error"}
        assert subscriber.client.call("register_user", {"user_id": "alice"}, timeout=5)["user_id"] == "alice"
    finally:
        subscriber.close()
    time.sleep(0.2)
    log = live.stderr.read_text()
    assert "Traceback" not in log and "handler error" not in log, log[-3000:]


# ---- Socket.IO credentials: rate limited, and revoked with the user ------------------------------

ATTEMPTS = 5


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    from live_server import start_server

    server = start_server(tmp_path_factory.mktemp("limited-server"), API_KEY=KEY, RATE_LIMIT=f"{ATTEMPTS} per minute")
    yield server
    server.stop()


def issue_token(url: str, user_id: str) -> str:
    answer = requests.post(f"{url}/auth/token", json={"user_id": user_id}, headers=KEY_HEADER, timeout=5)
    answer.raise_for_status()
    return answer.json()["token"]


def test_failed_register_user_tokens_are_rate_limited(limited):
    subscriber = Subscriber(limited.url)
    try:
        for guess in range(ATTEMPTS):
            assert subscriber.client.call("register_user", {"user_id": "alice", "token": f"guess-{guess}"},
                                          timeout=5) is None
        assert {error["error"] for error in subscriber.wait_for("error", ATTEMPTS)} == {"unauthorized"}
        # over the budget even the right token is refused, or a right guess would stand out
        valid = issue_token(limited.url, "alice")
        assert subscriber.client.call("register_user", {"user_id": "alice", "token": valid}, timeout=5) is None
        refused = subscriber.wait_for("error", ATTEMPTS + 1)[-1]
        assert refused["error"] == "too_many_requests"
        assert re.fullmatch(rf"rate limit exceeded: {ATTEMPTS} per 1 minute failed attempts; retry in \d+ s",
                            refused["message"]), refused
        assert subscriber.events["registered"] == []
    finally:
        subscriber.close()
    later = Subscriber(limited.url)  # a new connection from the same address shares the budget
    try:
        assert later.client.call("register_user", {"user_id": "alice", "token": valid}, timeout=5) is None
        assert later.wait_for("error")[0]["error"] == "too_many_requests"
    finally:
        later.close()


def test_failed_dashboard_keys_are_rate_limited(limited):
    subscriber = Subscriber(limited.url)
    try:
        for guess in range(ATTEMPTS):
            answer = subscriber.client.call("subscribe_dashboard", {"key": f"guess-{guess}"}, timeout=5)
            assert answer == {"error": "unauthorized", "message": "invalid key"}
        answer = subscriber.client.call("subscribe_dashboard", {"key": KEY}, timeout=5)
        assert answer["error"] == "too_many_requests"
        assert subscriber.wait_for("error")[0] == answer
    finally:
        subscriber.close()


def test_attempts_are_counted_in_redis_and_in_memory_while_redis_is_away(service):
    from web.rate_limits import AttemptLimiter

    namespace = f"test-attempts-{uuid.uuid4().hex}"
    app = create_app(service.settings.model_copy(update={"rate_limit": "2 per minute"}), service=service)
    first = AttemptLimiter("2 per minute", "redis://127.0.0.1:6379/0", namespace)
    second = AttemptLimiter("2 per minute", "redis://127.0.0.1:6379/0", namespace)  # another process
    away = AttemptLimiter("2 per minute", "redis://127.0.0.1:1/0", namespace)
    with app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.7"}):
        first.failed("register_user")
        assert not second.blocked("register_user")
        second.failed("register_user")
        assert first.blocked("register_user") and second.blocked("register_user")
        assert not first.blocked("subscribe_dashboard")  # each kind has its own budget
        away.failed("register_user")
        away.failed("register_user")
        assert away.blocked("register_user")
    with app.test_request_context(environ_base={"REMOTE_ADDR": "192.0.2.8"}):
        assert not first.blocked("register_user")  # and each address


def test_deleting_a_user_revokes_their_socket_tokens(tmp_path):
    from live_server import start_server

    user = unique("leaver")
    first = start_server(tmp_path / "first", API_KEY=KEY, RATE_LIMIT="")
    second = None
    try:
        requests.post(f"{first.url}/users", json={"user_id": user}, headers=KEY_HEADER, timeout=5).raise_for_status()
        before = issue_token(first.url, user)
        subscriber = Subscriber(first.url)
        assert subscriber.client.call("register_user", {"user_id": user, "token": before}, timeout=5)["user_id"] == user
        subscriber.close()

        deleted = requests.delete(f"{first.url}/users/{user}", headers=KEY_HEADER, timeout=5)
        assert deleted.status_code == 200
        time.sleep(1.05)  # a token's issue time has whole seconds: the next second's is after the deletion
        after = issue_token(first.url, user)
        # Another process on the same store, started after the deletion: the log tells it too.
        second = start_server(tmp_path / "second", API_KEY=KEY, RATE_LIMIT="",
                              DATABASE_URL=f"sqlite:///{tmp_path / 'first' / 'server.db'}")
        for server in (first, second):
            subscriber = Subscriber(server.url)
            try:
                assert subscriber.client.call("register_user", {"user_id": user, "token": before}, timeout=5) is None
                assert subscriber.wait_for("error")[0] == {
                    "error": "unauthorized",
                    "message": f"registering as {user} needs a valid token from POST /auth/token"}
                answer = subscriber.client.call("register_user", {"user_id": user, "token": after}, timeout=5)
                assert answer["user_id"] == user  # a token issued after the deletion works
            finally:
                subscriber.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


# ---- security headers of the pages, /docs/assets ------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
def test_html_pages_send_security_headers(client, path):
    answer = client.get(path)
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    policy = answer.headers["Content-Security-Policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert "<script>" not in answer.get_data(as_text=True)  # no inline script: the policy forbids them


def test_scripts_and_stylesheets_are_not_sniffed_and_json_answers_are_unchanged(client):
    for path in ("/docs/init.js", "/docs/assets/swagger-ui-bundle.js", "/static/demo/realtime.js",
                 "/static/landing/landing.css"):
        answer = client.get(path)
        assert answer.status_code == 200 and answer.headers["X-Content-Type-Options"] == "nosniff", path
    api = client.get("/health/live")
    assert "Content-Security-Policy" not in api.headers and "X-Frame-Options" not in api.headers


def test_docs_assets_serve_only_the_files_docs_uses(client):
    page = client.get("/docs").get_data(as_text=True)
    assert {f"/docs/assets/{name}" for name in DOCS_ASSETS} <= set(re.findall(r'(?:href|src)="([^"]+)"', page))
    for name in DOCS_ASSETS:
        assert client.get(f"/docs/assets/{name}").status_code == 200
    for name in ("index.html", "swagger-initializer.js", "oauth2-redirect.html", "swagger-ui-bundle.js.map",
                 "package.json", "README.md", "swagger-ui.js", "../swagger-ui-dist/index.html", "nope.js"):
        assert_error(client.get(f"/docs/assets/{name}"), 404, "not_found")


# ---- the landing page, and the start-up log naming its pages ---------------------------------

def test_the_landing_page_links_the_demo_the_dashboard_and_the_docs(make_client):
    answer = make_client(api_key=KEY, api_key_reads=True).get("/")  # open like the pages it links
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    links = set(re.findall(r'href="([^"]+)"', answer.get_data(as_text=True)))
    assert {"/demo/realtime", "/dashboard", "/docs"} <= links


def test_the_start_up_log_names_the_landing_pages(live):
    out = live.stdout.read_text()
    for name, path in (("demo", "/demo/realtime"), ("dashboard", "/dashboard"), ("API docs", "/docs")):
        assert re.search(rf"^  {name}: +{re.escape(live.url)}{path}$", out, re.M), out


# ---- connection timeouts -------------------------------------------------------------------------

def connect(server) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.process.port), timeout=10)
    return connection


def read_until_closed(connection: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, received = time.monotonic(), b""
    while chunk := connection.recv(4096):
        received += chunk
    return received, time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(live):
    with connect(live) as silent:
        received, waited = read_until_closed(silent)
    assert received == b"" and IDLE_TIMEOUT - 0.2 < waited < IDLE_TIMEOUT + 2


@pytest.mark.parametrize("sent", [b"GET /hea", b"GET /health HTTP/1.1\r\nHost: x\r\n"], ids=["half a line", "no end"])
def test_a_request_whose_headers_do_not_finish_gets_408_after_the_header_timeout(live, sent):
    with connect(live) as slow:
        slow.sendall(sent)
        received, waited = read_until_closed(slow)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout") and b"Connection: close" in head
    assert json.loads(body) == {"error": "request_timeout",
                                "message": f"the request line and headers took longer than {HEADER_TIMEOUT:g} s"}
    assert HEADER_TIMEOUT - 0.2 < waited < HEADER_TIMEOUT + 2


def test_dripping_headers_do_not_extend_the_header_timeout(live):
    with connect(live) as drip:
        started = time.monotonic()
        drip.sendall(b"GET /health HTTP/1.1\r\n")
        try:
            for _ in range(20):  # one header line every 0.3 s: each read is quick, the whole is not
                time.sleep(0.3)
                drip.sendall(b"X-Drip: 1\r\n")
        except OSError:  # the server closed the connection
            pass
        received, _ = read_until_closed(drip)
    assert received.startswith(b"HTTP/1.1 408") and time.monotonic() - started < HEADER_TIMEOUT + 2


def test_a_keep_alive_connection_is_closed_once_idle_and_a_stalled_body_is_dropped(live):
    with connect(live) as keep_alive:
        keep_alive.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        received, waited = read_until_closed(keep_alive)
    assert received.startswith(b"HTTP/1.1 200") and waited < IDLE_TIMEOUT + 2
    with connect(live) as stalled:
        stalled.sendall(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"user")
        received, waited = read_until_closed(stalled)
    assert received.startswith(b"HTTP/1.1 400") and waited < IDLE_TIMEOUT + 2


def test_the_server_still_serves_after_the_timeouts(live):
    idle = [connect(live) for _ in range(20)]
    time.sleep(IDLE_TIMEOUT + 0.5)
    try:
        assert requests.get(f"{live.url}/health/live", timeout=5).status_code == 200
        for connection in idle:  # all closed by the server by now
            assert connection.recv(1) == b""
    finally:
        for connection in idle:
            connection.close()


def exchange(server, request: bytes) -> bytes:
    """Send one raw request on a connection of its own; the answer's head and body."""
    with connect(server) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        return read_until_closed(connection)[0]


def test_header_fields_are_read_by_any_case_and_malformed_ones_get_400(live):
    """The server's own header reader (web/server.py): names in any case, the JSON body found by a
    lower-case content-length, and a line without a colon or a folded line refused."""
    body = b'{"user_id": "header-case"}'
    answer = exchange(live, b"POST /users HTTP/1.1\r\nhost: x\r\ncontent-TYPE: application/json\r\n"
                            b"content-length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    assert answer.startswith(b"HTTP/1.1 201"), answer
    for malformed in (b"X-No-Colon\r\n", b"X-Folded: a\r\n b\r\n", b"X-Spaced : a\r\n"):
        answer = exchange(live, b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + malformed + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 400"), (malformed, answer)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_an_idle_socket_io_connection_outlives_the_timeouts(live, transport):
    subscriber = Subscriber(live.url, transport)
    try:
        assert subscriber.client.call("register_user", {"user_id": "carol"}, timeout=5)["user_id"] == "carol"
        subscriber.client.sleep(IDLE_TIMEOUT * 2)  # quiet for longer than both timeouts
        assert subscriber.client.connected
        event = {"user_id": "carol", "product_id": "cookbook", "event_type": "view"}
        requests.post(f"{live.url}/event", json=event, timeout=5).raise_for_status()
        assert subscriber.wait_for("realtime_recommendation")[0]["user_id"] == "carol"
        assert subscriber.client.call("register_user", {"user_id": "carol"}, timeout=5)["user_id"] == "carol"
    finally:
        subscriber.close()


# ---- the pages in Chromium: they work under their Content-Security-Policy ----------------------

@pytest.mark.slow
@pytest.mark.browser
def test_the_pages_work_in_chromium_without_a_policy_violation(live):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian chromium (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=live.url)
        context.set_default_timeout(10_000)
        # Every violation fires this event, also those the console would not show.
        context.add_init_script("window.violations = [];"
                                "document.addEventListener('securitypolicyviolation', e => "
                                "window.violations.push(e.violatedDirective + ' ' + e.blockedURI));")
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        try:
            page.goto("/")
            for link in ("link-demo", "link-dashboard", "link-docs"):
                expect(page.get_by_test_id(link)).to_be_visible()
            assert page.evaluate("window.violations") == []

            page.get_by_test_id("link-demo").click()
            expect(page).to_have_url(f"{live.url}/demo/realtime")
            expect(page.get_by_test_id("connection-text")).to_have_text("connected")
            page.get_by_test_id("user-alice").click()
            expect(page.get_by_test_id("rec-item").first).to_be_visible()  # drawn from the `registered` push
            assert page.evaluate("window.violations") == []

            page.goto("/dashboard")
            expect(page.get_by_test_id("connection-text")).to_have_text("connected")
            expect(page.get_by_test_id("chart-requests")).not_to_have_attribute("data-points", "0")  # uPlot drew
            assert page.evaluate("window.violations") == []

            page.goto("/docs")
            expect(page.locator(".opblock").first).to_be_visible()  # Swagger UI rendered the document
            page.locator(".opblock-summary").first.click()
            page.locator("button.try-out__btn").first.click()
            page.locator("button.execute").first.click()
            expect(page.locator(".live-responses-table tr.response .response-col_status").first).to_contain_text("200")
            assert page.evaluate("window.violations") == []
        finally:
            browser.close()
    assert problems == []
