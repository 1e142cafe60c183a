"""Two real `python main.py serve` processes on one PostgreSQL database and one MODEL_DIR, as in production.

Each process loads the newest model artifact and then follows the store's log (events, item
upserts, user deletions), whichever process wrote the entries. These tests check what that
promises from the outside: an event posted to A shows in B's answers and B's Socket.IO pushes; a
process paused for 10 s, or a Redis outage, leaves B equal to A within a second; a model trained by
`python main.py train` is swapped in by every server under load, without a failed request, and
leaves them answering like a server started fresh.

Each test runs on two clusters: one where each process has its own cache, and one sharing a
cache in a Redis server this module starts (and stops, for the outage test, which runs only
there) on a port of its own; the Redis at 6379 is never touched. "B answers like A" compares
ranked (item, score, strategy) lists that each server computed itself: with the shared cache,
Redis is emptied before each request, or B could be handed A's answer. (Each process's own tier in
front of Redis then holds only answers that process computed, since Redis was empty whenever it
asked.)
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis
import requests
from test_realtime_push import Subscriber, items

from live_server import LiveServer, free_port, server_env, start_server
from main import MAIN_PATH

pytestmark = pytest.mark.slow

CATCH_UP_SECONDS = 1.0  # how soon B must answer like A after it is resumed or Redis is back
OUTAGE_SECONDS = 10.0  # how long B is paused, or Redis down
SWAP_SECONDS = 5.0  # how soon each server must serve a newly trained artifact (MODEL_CHECK_SECONDS=1)
EVENTS = 500
REQUEST_TIMEOUT = 10.0


# -- infrastructure: our own Redis, a fresh database, two servers ---------------------------------

class OwnRedis:
    """A throwaway redis-server on a free port (no persistence), which a test may stop and restart."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.client = redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes", "--dir", str(self.directory),
                        "--logfile", str(self.directory / "redis.log")], check=True, timeout=10)
        deadline = time.monotonic() + 5
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "our redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        try:
            self.client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits (or was down already)
        deadline = time.monotonic() + 5
        while True:
            try:
                self.client.ping()
            except redis.ConnectionError:
                return
            assert time.monotonic() < deadline, "our redis-server did not stop"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    server = OwnRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@contextmanager
def fresh_database(postgres_url: str, suffix: str):
    """A database of its own next to the session's, dropped afterwards (the servers get SQLAlchemy's URL)."""
    base, session_db = postgres_url.rsplit("/", 1)
    name = f"{session_db}_{suffix}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Cluster:
    a: LiveServer
    b: LiveServer
    env: dict[str, str]
    directory: Path
    redis: OwnRedis | None
    round: int = 0  # tests that write pick fresh ids from it

    def fresh_ids(self) -> str:
        self.round += 1
        return f"mp{self.round}"


@pytest.fixture(scope="module", params=["own-cache", "redis-cache"])
def cluster(request, tmp_path_factory, postgres_url):
    """A then B (A seeds the demo data and trains the first artifact; B loads it), both following the log."""
    directory = tmp_path_factory.mktemp(request.param)
    shared_redis = request.getfixturevalue("own_redis") if request.param == "redis-cache" else None
    with fresh_database(postgres_url, request.param.replace("-", "_")) as database_url:
        env = {"DATABASE_URL": database_url, "MODEL_DIR": str(directory / "models"), "LOAD_DEMO_DATA": "true",
               "RETRAIN_INTERVAL_SECONDS": "0", "MODEL_CHECK_SECONDS": "1", "RATE_LIMIT": ""}
        if shared_redis is not None:
            env |= {"REDIS_URL": shared_redis.url, "REDIS_NAMESPACE": f"mp-{uuid.uuid4().hex[:8]}"}
        a = start_server(directory / "a", **env)
        try:
            b = start_server(directory / "b", **env)
        except BaseException:
            a.stop()
            raise
        try:
            yield Cluster(a, b, env, directory, shared_redis)
        finally:
            if b.process.process.poll() is None:
                os.kill(b.process.process.pid, signal.SIGCONT)  # a failed test may have left it paused
            b.stop()
            a.stop()


# -- HTTP helpers ---------------------------------------------------------------------------------

_local = threading.local()


def http() -> requests.Session:
    """A keep-alive session per thread, ignoring proxy settings (the servers are local)."""
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
        _local.session.trust_env = False
    return _local.session


def get(server: LiveServer, path: str) -> dict:
    answer = http().get(f"{server.url}{path}", timeout=REQUEST_TIMEOUT)
    assert answer.status_code == 200, f"GET {path} on {server.url}: {answer.status_code} {answer.text}"
    return answer.json()


def send(server: LiveServer, method: str, path: str, body: dict | None = None) -> requests.Response:
    return http().request(method, f"{server.url}{path}", json=body, timeout=REQUEST_TIMEOUT)


def ranked(answer: dict) -> list[tuple[str, float, str]]:
    listed = next(answer[key] for key in ("recommendations", "similar", "items") if key in answer)
    return [(r["item"], r["score"], r["strategy"]) for r in listed]


def model(server: LiveServer) -> dict:
    return get(server, "/health")["model"]


def answers(server: LiveServer, paths: list[str], shared_redis: OwnRedis | None) -> dict[str, list | int]:
    """Each path's ranked answer (or its status when not 200) as `server` computes it. With the
    shared cache `server` uses, Redis is emptied before every request, so the answer is the server's
    own (computed now, or earlier and kept in its own tier) and not one the other process cached."""
    result: dict[str, list | int] = {}
    for path in paths:
        shared = shared_redis is not None
        if shared:
            shared_redis.client.flushdb()
        response = send(server, "GET", path)
        if response.status_code != 200:  # e.g. 404 for an item the server has not seen yet
            result[path] = response.status_code
            continue
        result[path] = ranked(response.json())
    return result


@dataclass
class Truth:
    """What one server answers for each path, at its log position."""

    answers: dict[str, list | int]
    position: int

    @classmethod
    def of(cls, server: LiveServer, paths: list[str], shared_redis: OwnRedis | None) -> "Truth":
        position = model(server)["position"]
        truth = cls(answers(server, paths, shared_redis), position)
        assert model(server)["position"] == position, "the reference server must be idle"
        return truth


def wait_until_answers(server: LiveServer, truth: Truth, shared_redis: OwnRedis | None,
                       started: float, timeout: float = CATCH_UP_SECONDS) -> float:
    """Seconds from `started` until `server` answers every path of `truth` exactly as it says;
    fails after `timeout`.

    A user's answers are asked for from the start: the log entries that change them drop them from
    the cache, so even one computed while the server was still behind must come right. /similar and
    /popular are asked for once the server is at the truth's log position: events do not drop them
    (they live for CACHE_TTL_SIMILAR / CACHE_TTL_POPULAR by design), so one computed while behind
    would stay as it was, just as any process keeps serving its own from before later events.
    """
    per_user = [path for path in truth.answers if path.startswith("/recommendations/")]
    others = [path for path in truth.answers if path not in per_user]
    while True:
        got = answers(server, per_user, shared_redis)
        position = model(server)["position"]
        if position == truth.position:
            got |= answers(server, others, shared_redis)
        elapsed = time.monotonic() - started
        differing = [path for path in got if got[path] != truth.answers[path]]
        if position == truth.position and not differing:
            return elapsed
        if elapsed > timeout:
            example = "" if not differing else \
                f", e.g. {differing[0]}:\n{got[differing[0]]}\n!=\n{truth.answers[differing[0]]}"
            pytest.fail(f"{server.url} still answers differently after {elapsed:.2f} s: log position {position}, "
                        f"expected {truth.position}; {len(differing)} of {len(got)} paths asked differ{example}")
        time.sleep(0.02)


# -- a. an event posted to A shows in B -----------------------------------------------------------

def test_an_event_posted_to_one_process_changes_the_others_answer_within_a_second(cluster):
    a, b = cluster.a, cluster.b
    user = "carol"
    get(b, f"/recommendations/{user}")
    before = get(b, f"/recommendations/{user}")
    assert before["source"] == "cache"
    target = before["recommendations"][0]["item"]  # seen items are never recommended: it must go

    posted = time.monotonic()
    answer = send(a, "POST", "/interactions", {"user_id": user, "item_id": target, "rating": 5})
    assert answer.status_code == 201, answer.text
    while True:
        after = get(b, f"/recommendations/{user}")
        elapsed = time.monotonic() - posted
        if after["source"] == "computed" and ranked(after) != ranked(before):
            break
        assert elapsed < CATCH_UP_SECONDS, f"B still answers as before the event after {elapsed:.2f} s: {after}"
        time.sleep(0.01)
    assert target not in items(after["recommendations"])


def test_a_rule_and_an_item_edit_posted_to_one_process_retire_the_others_cached_lists(cluster):
    """Rules and item edits are log entries: B applies them and no longer serves its (or Redis's) cached lists."""
    a, b = cluster.a, cluster.b
    paths = ["/similar/iphone?count=20", "/popular?count=20", "/recommendations/bob?count=20"]
    for path in paths:
        get(b, path)
    before = {path: items(next(v for k, v in get(b, path).items() if k in ("similar", "items", "recommendations")))
              for path in paths}
    banned, hidden = before["/popular?count=20"][0], before["/similar/iphone?count=20"][0]
    rule = send(a, "POST", "/rules", {"type": "ban", "items": [banned]})
    assert rule.status_code == 201, rule.text
    assert send(a, "PATCH", f"/items/{hidden}", {"available": False}).status_code == 200
    posted = time.monotonic()
    try:
        for path in paths:
            while True:
                listed = items(next(v for k, v in get(b, path).items() if k in ("similar", "items", "recommendations")))
                if not {banned, hidden} & set(listed):
                    break
                assert time.monotonic() - posted < CATCH_UP_SECONDS, f"B still lists {banned} or {hidden} on {path}"
                time.sleep(0.01)
    finally:
        assert send(a, "DELETE", f"/rules/{rule.json()['rule_id']}").status_code == 200
        assert send(a, "PATCH", f"/items/{hidden}", {"available": True}).status_code == 200


def test_a_subscriber_on_one_process_receives_the_push_for_an_event_posted_to_the_other(cluster):
    a, b = cluster.a, cluster.b
    alice_on_b, bob_on_b = Subscriber(b.url, "alice"), Subscriber(b.url, "bob")
    try:
        before = items(alice_on_b.registered["recommendations"])
        posted = time.monotonic()
        answer = send(a, "POST", "/event", {"user_id": "alice", "product_id": "coffee_maker",
                                            "event_type": "purchase"})
        assert answer.status_code == 201, answer.text
        push = alice_on_b.wait_for_push()
        assert time.monotonic() - posted < CATCH_UP_SECONDS
        assert push["user_id"] == "alice"
        assert push["trigger"] == {"item_id": "coffee_maker", "event_type": "purchase"}
        assert items(push["recommendations"]) != before
        assert "coffee_maker" not in items(push["recommendations"])
        alice_on_b.client.sleep(0.3)
        assert bob_on_b.pushes == [] and alice_on_b.pushes == [push]
    finally:
        alice_on_b.close()
        bob_on_b.close()


# -- b. B paused, or Redis down, for 10 s while A takes writes ------------------------------------

@dataclass
class Writes:
    """500 events over several users and the catalog, 5 item upserts (3 new, 2 edited) and one
    deletion of a demo user with history, in the order they are sent."""

    users: list[str]
    items: list[str]  # upserted
    deleted: str
    # Sent step by step; the requests of one step go concurrently.
    steps: list[list[tuple[str, str, dict | None]]] = field(default_factory=list)

    @classmethod
    def plan(cls, prefix: str, catalog: list[str], deleted: str, seed: int) -> "Writes":
        rng = random.Random(seed)
        users = ["alice", "carol", *(f"user_{n:03d}" for n in range(10, 18)), f"{prefix}_new_1", f"{prefix}_new_2"]
        new_items = [{"item_id": f"{prefix}_item_{n}", "name": f"Burr grinder {prefix} {n}", "category": "kitchen",
                      "brand": "Grindwell", "description": "Conical burr coffee grinder with 40 settings",
                      "tags": ["coffee", "grinder"], "price": 59.0 + n} for n in range(3)]
        edited = [{"item_id": "cookbook", "name": f"The Coffee Cookbook ({prefix})", "category": "books",
                   "brand": "Penguin", "description": "Recipes for espresso, pour-over and cold brew",
                   "tags": ["coffee", "recipes"], "price": 24.0},
                  {"item_id": "gaming_chair", "name": f"Ergonomic office chair ({prefix})", "category": "furniture",
                   "brand": "Sitwell", "description": "Mesh back, lumbar support, adjustable arms",
                   "tags": ["office", "chair"], "price": 199.0}]
        writes = cls(users, [item["item_id"] for item in new_items + edited], deleted)

        def events(n: int, who: list[str], what: list[str]) -> list[tuple[str, str, dict]]:
            batch = []
            for _ in range(n):
                user, item = rng.choice(who), rng.choice(what)
                if rng.random() < 0.25:
                    batch.append(("POST", "/interactions",
                                  {"user_id": user, "item_id": item, "rating": rng.choice([1, 2, 3, 4, 5])}))
                else:
                    event_type = rng.choice(["view", "view", "add_to_cart", "purchase"])
                    batch.append(("POST", "/event", {"user_id": user, "product_id": item, "event_type": event_type}))
            return batch

        writes.steps = [
            events(200, users + [deleted], catalog),  # the user deleted later has new events too
            [("POST", "/items", item) for item in new_items + edited],
            events(150, users + [deleted], catalog + writes.items),
            [("DELETE", f"/users/{deleted}", None)],
            events(EVENTS - 350, users, catalog + writes.items),
        ]
        return writes

    def send(self, server: LiveServer) -> list[str]:
        """Send every step's requests (4 at a time); returns what did not get a 2xx answer."""
        failures = []
        with ThreadPoolExecutor(4) as pool:
            for step in self.steps:
                for (method, path, body), answer in zip(step, pool.map(lambda r: send(server, *r), step)):
                    expected = (200, 201) if path.startswith("/items") else (200,) if method == "DELETE" else (201,)
                    if answer.status_code not in expected:
                        failures.append(f"{method} {path} {body}: {answer.status_code} {answer.text[:200]}")
        return failures

    @property
    def events(self) -> int:
        return sum(1 for step in self.steps for method, path, _ in step if path in ("/event", "/interactions"))

    def paths(self) -> list[str]:
        return ([f"/recommendations/{user}?count=20" for user in [*self.users, self.deleted]]
                + [f"/similar/{item}?count=20" for item in self.items] + ["/popular?count=20"])


def catalog(server: LiveServer) -> list[str]:
    return [item["item_id"] for item in get(server, "/items?limit=1000")["items"]]


def assert_has_history(server: LiveServer, user: str) -> None:
    assert get(server, f"/users/{user}")["interactions"] > 0, f"{user} should be a demo user with history"


def test_a_paused_process_answers_like_the_other_within_a_second_of_resuming(cluster):
    a, b = cluster.a, cluster.b
    writes = Writes.plan(cluster.fresh_ids(), catalog(a), deleted="bob", seed=1)
    assert writes.events == EVENTS
    assert_has_history(a, writes.deleted)
    pid = b.process.process.pid

    os.kill(pid, signal.SIGSTOP)
    try:
        paused = time.monotonic()
        failures = writes.send(a)
        truth = Truth.of(a, writes.paths(), cluster.redis)  # A's own answers, before B runs again
        time.sleep(max(0.0, paused + OUTAGE_SECONDS - time.monotonic()))
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    assert failures == []

    elapsed = wait_until_answers(b, truth, cluster.redis, resumed)
    deleted = get(b, f"/recommendations/{writes.deleted}")
    assert {r["strategy"] for r in deleted["recommendations"]} == {"popular"}, "the deleted user is a newcomer"
    print(f"B equal to A {elapsed:.3f} s after SIGCONT")


def test_writes_succeed_while_redis_is_down_and_the_processes_agree_after(cluster):
    if cluster.redis is None:
        pytest.skip("needs the shared Redis cache")
    a, b = cluster.a, cluster.b
    writes = Writes.plan(cluster.fresh_ids(), catalog(a), deleted="user_002", seed=2)
    assert_has_history(a, writes.deleted)
    get(b, f"/recommendations/{writes.users[0]}")  # a cached answer that the outage must not keep alive

    cluster.redis.stop()
    try:
        down = time.monotonic()
        failures = writes.send(a)
        for path in writes.paths()[:3]:  # reads keep working on both, without the cache
            assert get(b, path)["source"] == "computed"
            get(a, path)
        truth = Truth.of(a, writes.paths(), None)  # computed: there is no cache to answer from
        time.sleep(max(0.0, down + OUTAGE_SECONDS - time.monotonic()))
    finally:
        cluster.redis.start()
    back = time.monotonic()
    assert failures == []

    elapsed = wait_until_answers(b, truth, cluster.redis, back)
    # And what the shared cache now serves (no longer emptied before each request) is the same.
    for server in (b, a):
        assert {path: ranked(get(server, path)) for path in writes.paths()} == truth.answers, server.url
    print(f"B equal to A {elapsed:.3f} s after Redis came back")


# -- d. a model trained by `python main.py train` under load --------------------------------------

class Load(threading.Thread):
    """GET /recommendations and POST /event at both servers in turn until stopped; counts failures."""

    def __init__(self, servers: list[LiveServer], users: list[str], catalog: list[str]) -> None:
        super().__init__(name="load", daemon=True)
        self.servers, self.users, self.catalog = servers, users, catalog
        self.requests = 0
        self.failures: list[str] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        rng = random.Random(3)
        while not self._stopped.is_set():
            for server in self.servers:
                user = rng.choice(self.users)
                for method, path, body in (
                        ("GET", f"/recommendations/{user}", None),
                        ("POST", "/event", {"user_id": user, "product_id": rng.choice(self.catalog),
                                            "event_type": rng.choice(["view", "add_to_cart", "purchase"])})):
                    self.requests += 1
                    try:
                        answer = send(server, method, path, body)
                    except requests.RequestException as error:
                        self.failures.append(f"{method} {path} on {server.url}: {error!r}")
                        continue
                    if not 200 <= answer.status_code < 300:
                        self.failures.append(f"{method} {path} on {server.url}: {answer.status_code} "
                                             f"{answer.text[:200]}")

    def stop(self) -> None:
        self._stopped.set()
        self.join(REQUEST_TIMEOUT * 2)


def test_a_newly_trained_model_is_swapped_in_under_load_without_a_failed_request(cluster):
    a, b = cluster.a, cluster.b
    old = {server.url: model(server)["artifact"] for server in (a, b)}
    assert old[a.url] == old[b.url]
    users = ["alice", "carol", *(f"user_{n:03d}" for n in range(20, 30))]
    load = Load([a, b], users, catalog(a))
    load.start()
    try:
        time.sleep(1.0)
        trained = subprocess.run([sys.executable, str(MAIN_PATH), "train"], cwd=MAIN_PATH.parent,
                                 env=server_env(cluster.directory, **cluster.env),
                                 capture_output=True, text=True, timeout=120)
        assert trained.returncode == 0, trained.stderr[-2000:]
        summary = json.loads(trained.stdout.strip().splitlines()[-1])
        version = summary["version"]
        assert version != old[a.url]
        # Timed from when the artifact appeared in MODEL_DIR, not from when `train` exited.
        written = json.loads((Path(summary["artifact"]) / "manifest.json").read_text())["written_at"]
        swapped = {}
        while len(swapped) < 2:
            for server in (a, b):
                if server.url not in swapped and model(server)["artifact"] == version:
                    swapped[server.url] = round(time.time() - written, 3)
            assert time.time() - written < SWAP_SECONDS, f"not all swapped in after the train: {swapped}, {old}"
            time.sleep(0.05)
        time.sleep(1.0)  # the load goes on over the new model for a moment
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.requests > 50

    # A server started now loads the same artifact plus the log: A and B must answer like it.
    fresh_env = {key: value for key, value in cluster.env.items() if key not in ("REDIS_URL", "REDIS_NAMESPACE")}
    fresh = start_server(cluster.directory / f"fresh-{cluster.fresh_ids()}", **fresh_env)
    try:
        assert model(fresh)["artifact"] == version
        paths = [f"/recommendations/{user}?count=20" for user in users[::2]] + ["/similar/iphone?count=20"]
        truth = Truth.of(fresh, paths, None)
        for server in (a, b):
            wait_until_answers(server, truth, cluster.redis, time.monotonic())
    finally:
        fresh.stop()
    print(f"swapped {swapped} s after the train wrote {version}; {load.requests} requests under load, 0 failed")
