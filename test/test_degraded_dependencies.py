"""Issue 9: a dependency that goes away degrades the service honestly, and it recovers by itself.

Against real `python main.py serve` processes and real dependencies of the tests' own (the shared
PostgreSQL at 5432 and Redis at 6379 are never touched):
- Redis (REDIS_URL and RATE_LIMIT set) down at start, stopped, hung (SIGSTOP) and back: the server
  starts, no answer is a 5xx, every write answers 2xx, pushes still arrive, answers stay cached in
  the process meanwhile, /health says 200 with redis "unreachable", and the shared cache is used
  again, without its stale answers, once Redis is back, without a restart.
- PostgreSQL stopped and started (a cluster of the test's own): every route that needs the store
  answers 503 JSON with Retry-After, the ones the engine answers keep working, /health says 503
  "unreachable", and the server recovers (and its log follower catches up) by itself.
- SQLite on a full disk (a small tmpfs the test mounts): writes answer 503 with Retry-After and
  leave nothing behind, /health says 503 "cannot_commit" with the reason, and both recover once
  there is room.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from live_server import LiveServer, free_port, start_server
from recommenders.records import EventType, InteractionRecord
from storage import Store
from test_realtime_push import Subscriber

pytestmark = pytest.mark.slow

REQUEST_TIMEOUT = 10.0
RECOVERY_SECONDS = 10.0  # how soon /health must say "ok" again once the dependency is back
PROBE_SECONDS = 1.0  # how long a process keeps the answer of its commit probe (Store.commit_probe's max_age)


# -- dependencies of the tests' own ----------------------------------------------------------------

class OwnRedis:
    """A redis-server on a free port, no persistence, that a test stops, pauses and starts again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.directory)], stdout=subprocess.DEVNULL)
        _wait_for(self._answers, 10, "our redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused one cannot handle SIGTERM
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def _answers(self) -> bool:
        try:
            return self.client.ping()
        except redis.RedisError:
            return False


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: redis-server)")
    server = OwnRedis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs of the test's own, which it fills up (the machine's disk is never filled)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True, timeout=30)
    yield mount_point
    if subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["umount", "-l", str(mount_point)], check=True, timeout=30)  # a file still open: detach


def fill(directory: Path) -> Path:
    """Write zeros until the file system is full; returns the file, which frees the room again when removed."""
    filler = directory / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    while True:  # the last partial write may have left a few bytes: fill them too
        try:
            with filler.open("ab") as out:
                out.write(b"\0")
        except OSError:
            return filler


def _wait_for(condition, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


# -- talking to the server -------------------------------------------------------------------------

class Client:
    """Every request through one session, every answer recorded, so a test can assert none was a 5xx."""

    def __init__(self, server: LiveServer) -> None:
        self.url = server.url
        self.session = requests.Session()
        self.session.trust_env = False  # a local server: no proxy
        self.answers: list[tuple[str, str, int]] = []

    def send(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        answer = self.session.request(method, self.url + path, json=body, timeout=REQUEST_TIMEOUT)
        self.answers.append((method, path, answer.status_code))
        return answer

    def ok(self, method: str, path: str, body: dict | None = None, status: int = 200) -> dict:
        answer = self.send(method, path, body)
        assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text}"
        assert answer.headers["Content-Type"] == "application/json"
        return answer.json()

    def health(self) -> tuple[int, dict]:
        answer = self.send("GET", "/health")
        return answer.status_code, answer.json()

    def server_errors(self) -> list[tuple[str, str, int]]:
        return [answer for answer in self.answers if answer[2] >= 500 and answer[0:2] != ("GET", "/health")]


def unavailable(answer: requests.Response) -> str:
    """Asserts the honest store-outage answer: 503 JSON with Retry-After; returns its message."""
    assert answer.status_code == 503, f"{answer.request.method} {answer.request.path_url}: {answer.status_code} " \
                                      f"{answer.text[:300]}"
    assert answer.headers["Content-Type"] == "application/json"
    assert int(answer.headers["Retry-After"]) > 0
    body = answer.json()
    assert body["error"] == "service_unavailable" and body["message"]
    return body["message"]


def wait_until_healthy(client: Client, **expected: str) -> dict:
    """Polls /health until it answers 200 with the `expected` fields; returns that answer."""
    seen: list = []

    def healthy() -> bool:
        status, body = client.health()
        seen[:] = [status, body]
        return status == 200 and all(body[key] == value for key, value in expected.items())

    _wait_for(healthy, RECOVERY_SECONDS, f"/health did not recover: {seen}")
    return seen[1]


# -- Redis ------------------------------------------------------------------------------------------

def test_redis_down_at_start_stopped_hung_and_back_costs_no_answer(own_redis, tmp_path):
    namespace = f"test-degraded-{uuid.uuid4().hex[:8]}"
    server = start_server(tmp_path / "server", REDIS_URL=own_redis.url, REDIS_NAMESPACE=namespace,
                          RATE_LIMIT="100000 per minute", RETRAIN_INTERVAL_SECONDS="0")  # Redis is down
    subscriber = None
    try:
        client = Client(server)
        status, health = client.health()
        assert (status, health["status"], health["redis"], health["store"]) == (200, "ok", "unreachable", "ok")
        assert any(reason.startswith("redis: unreachable") for reason in health["reasons"])

        # Writes answer 201 and push to this process's subscribers; reads are cached in the process.
        subscriber = Subscriber(server.url, "alice")
        written = client.send("POST", "/interactions", {"user_id": "alice", "item_id": "cookbook", "rating": 5})
        assert written.status_code == 201 and written.headers["X-RateLimit-Limit"] == "100000"
        assert subscriber.wait_for_push()["trigger"] == {"item_id": "cookbook", "event_type": "rating"}
        assert client.ok("GET", "/recommendations/carol")["source"] == "computed"
        assert client.ok("GET", "/recommendations/carol")["source"] == "cache"
        client.ok("POST", "/interactions", {"user_id": "carol", "item_id": "gaming_chair", "event_type": "view"}, 201)
        assert client.ok("GET", "/recommendations/carol")["source"] == "computed"  # the event dropped it here

        # Redis comes up: /health says so without a restart, and the shared cache is used again.
        own_redis.start()
        assert wait_until_healthy(client, redis="ok")["reasons"] == []
        client.ok("GET", "/recommendations/carol")
        assert client.ok("GET", "/recommendations/carol")["source"] == "cache"
        assert own_redis.client.exists(f"{namespace}:recommendations:carol")

        # Redis hangs: answers still come, within a timeout, and the write that happens meanwhile...
        own_redis.pause()
        started = time.monotonic()
        client.ok("POST", "/interactions", {"user_id": "carol", "item_id": "airpods", "event_id": "carol-1",
                                            "event_type": "purchase"}, 201)
        client.ok("GET", "/recommendations/carol")
        assert time.monotonic() - started < 5.0
        status, health = client.health()
        assert (status, health["redis"]) == (200, "unreachable")
        # ... left carol's answer from before it in Redis: once Redis is back, it must not be served.
        own_redis.resume()
        wait_until_healthy(client, redis="ok")
        fresh = client.ok("GET", "/recommendations/carol")
        assert fresh["source"] == "computed"
        assert "airpods" not in [r["item"] for r in fresh["recommendations"]]  # bought: never recommended

        # Redis stops: the same, and a retried write is stored once.
        own_redis.stop()
        for _ in range(2):
            client.send("POST", "/interactions", {"user_id": "carol", "item_id": "ipad", "event_id": "carol-2",
                                                  "event_type": "view"})
        for path in ("/recommendations/carol", "/similar/iphone", "/popular", "/users/carol", "/stats"):
            client.ok("GET", path)
        own_redis.start()
        wait_until_healthy(client, redis="ok")
        history = client.ok("GET", "/users/carol")["history"]
        assert [h["item_id"] for h in history].count("ipad") == 1 and history[0]["item_id"] == "ipad"

        assert client.server_errors() == []
        assert all(status < 500 for _, _, status in client.answers)
        assert "unhandled error" not in server.stderr.read_text()
    finally:
        if subscriber is not None:
            subscriber.close()
        server.stop()


# -- PostgreSQL stopped -------------------------------------------------------------------------------

STORE_ROUTES = [
    ("GET", "/items?limit=5", None), ("GET", "/items/iphone", None), ("GET", "/categories", None),
    ("GET", "/users/alice", None), ("GET", "/stats", None),
    ("POST", "/interactions", {"user_id": "alice", "item_id": "cookbook", "rating": 4}),
    ("POST", "/event", {"user_id": "alice", "product_id": "cookbook", "event_type": "view"}),
    ("POST", "/items", {"item_id": "moka_pot", "name": "Moka Pot", "category": "kitchen"}),
    ("POST", "/users", {"user_id": "erin"}),
    ("DELETE", "/users/bob", None),
]
ENGINE_ROUTES = ["/recommendations/alice", "/similar/iphone", "/popular?category=kitchen",
                 "/recommend?user_id=alice&case=hybrid", "/realtime-recommend?user_id=alice&product_id=iphone"]


def test_a_stopped_postgresql_answers_503_with_retry_after_and_the_server_recovers_by_itself(own_postgres, tmp_path):
    server = start_server(tmp_path / "server", DATABASE_URL=own_postgres.url, RETRAIN_INTERVAL_SECONDS="0")
    try:
        client = Client(server)
        for path in ENGINE_ROUTES:
            client.ok("GET", path)
        client.ok("GET", "/users/carol")  # a pooled connection, which the stop will break (alice's stays uncached)

        own_postgres.stop()
        stopped_at = time.monotonic()
        for method, path, body in STORE_ROUTES:
            assert "the database cannot be reached" in unavailable(client.send(method, path, body))
        for path in ENGINE_ROUTES:  # what the engine answers needs no store
            client.ok("GET", path)
        status, health = client.health()
        assert (status, health["status"], health["store"]) == (503, "degraded", "unreachable")
        assert health["reasons"] == ["store: the database cannot be reached"]
        assert client.send("GET", "/health/live").status_code == 200
        time.sleep(max(0.0, 3.5 - (time.monotonic() - stopped_at)))  # long enough to log once a second

        own_postgres.start()
        wait_until_healthy(client, store="ok")
        client.ok("POST", "/interactions", {"user_id": "alice", "item_id": "cookbook", "rating": 4}, 201)
        # Another process's write reaches this one through its log follower, which is back too.
        other = Store(own_postgres.url)
        try:
            stored, _ = other.append_interaction(InteractionRecord("dave", "kitchen_knife", EventType.PURCHASE,
                                                                   time.time()))
        finally:
            other.close()
        _wait_for(lambda: client.health()[1]["model"]["position"] >= stored.seq, 10, "the log follower did not catch up")

        assert client.server_errors() == [(method, path, 503) for method, path, _ in STORE_ROUTES]
        stderr = server.stderr.read_text()
        assert "unhandled error" not in stderr
        assert stderr.count("could not read the log") == 1  # once per outage, not once a second
        assert stderr.count("the log is readable again") == 1
    finally:
        server.stop()


# -- SQLite on a full disk -------------------------------------------------------------------------

def test_a_full_sqlite_disk_answers_503_leaves_nothing_behind_and_health_says_why(small_disk, tmp_path):
    server = start_server(tmp_path / "server", DATABASE_URL=f"sqlite:///{small_disk / 'recs.db'}",
                          RETRAIN_INTERVAL_SECONDS="0")
    try:
        client = Client(server)
        before = client.ok("GET", "/stats")["store"]
        position = client.health()[1]["model"]["position"]

        filler = fill(small_disk)
        for n in range(20):
            message = unavailable(client.send("POST", "/interactions", {"user_id": f"full-{n}", "item_id": "iphone",
                                                                        "event_type": "view"}))
            assert message.startswith("the database cannot commit: its disk is full")
        unavailable(client.send("POST", "/event", {"user_id": "full-0", "product_id": "iphone", "event_type": "view"}))
        unavailable(client.send("POST", "/users", {"user_id": "full-user"}))
        # The probe's answer is kept a second (PROBE_SECONDS), so the answer of the /health above may still stand.
        _wait_for(lambda: client.health()[0] == 503, PROBE_SECONDS + 2, "/health missed the full disk")
        status, health = client.health()
        assert (status, health["status"], health["store"]) == (503, "degraded", "cannot_commit")
        assert health["reasons"] == ["store: the database cannot commit: its disk is full"]
        assert health["model"]["position"] == position  # nothing reached the model ...
        assert client.ok("GET", "/stats")["store"] == before  # ... or the store (reads still work)
        assert client.send("GET", "/users/full-0").status_code == 404
        client.ok("GET", "/recommendations/alice")

        filler.unlink()
        wait_until_healthy(client, store="ok")
        client.ok("POST", "/interactions", {"user_id": "full-0", "item_id": "iphone", "event_type": "view"}, 201)
        assert client.health()[1]["model"]["position"] == position + 1
        assert client.ok("GET", "/stats")["store"]["interactions"] == before["interactions"] + 1
        assert client.ok("GET", "/users/full-0")["interactions"] == 1
        assert "unhandled error" not in server.stderr.read_text()
    finally:
        server.stop()


def test_the_commit_probe_finds_a_full_disk_that_reads_do_not_and_leaves_the_log_alone(small_disk):
    store = Store(f"sqlite:///{small_disk / 'probe.db'}")
    try:
        assert store.commit_probe(max_age=0) is None
        seq = store.last_seq()
        filler = fill(small_disk)
        assert store.ping()  # reads still work ...
        assert store.commit_probe(max_age=0) == "the database cannot commit: its disk is full"  # ... commits do not
        assert store.commit_probe(max_age=60) == "the database cannot commit: its disk is full"  # kept, not probed
        filler.unlink()
        assert store.commit_probe(max_age=60) is not None  # within max_age: the answer kept
        assert store.commit_probe(max_age=0) is None
        assert store.last_seq() == seq
    finally:
        store.close()


def test_the_commit_probe_on_postgresql_is_quick_and_leaves_the_log_alone(postgres_url):
    store = Store(postgres_url)
    try:
        seq = store.last_seq()
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            assert store.commit_probe(max_age=0) is None
            timings.append(time.perf_counter() - started)
        assert store.last_seq() == seq
        assert sorted(timings)[10] < 0.05
    finally:
        store.close()


# -- the log follower -----------------------------------------------------------------------------------

def test_the_log_follower_logs_an_outage_once_not_once_a_second(monkeypatch, caplog):
    from service import log_follower

    class Engine:
        position = 7

    class Service:
        engine = Engine()
        failures = 5
        calls = 0

        def catch_up(self) -> int:
            self.calls += 1
            if self.calls <= self.failures:
                raise OSError("the database is away")
            return 3 if self.calls == self.failures + 1 else 0

    class Wakeup:
        def wait(self, timeout: float, applied_through=None) -> None:
            time.sleep(0.01)

        def close(self) -> None:
            pass

    monkeypatch.setattr(log_follower, "RETRY_SECONDS", 0.01)
    follower = log_follower.LogFollower.__new__(log_follower.LogFollower)
    follower._service, follower._wakeup, follower._stopped = Service(), Wakeup(), threading.Event()
    follower._thread = threading.Thread(target=follower._run, daemon=True)
    with caplog.at_level(logging.WARNING, logger=log_follower.__name__):
        follower.start()
        _wait_for(lambda: follower._service.calls > Service.failures + 3, 5, "the follower stopped reading")
        follower.stop()
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if m.startswith("could not read the log after seq 7")]) == 1
    assert len([m for m in messages if m.startswith("the log is readable again")]) == 1
    assert "caught up 3 entries" in messages[-1]
