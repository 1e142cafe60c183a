"""`python main.py serve --workers 2`: two workers behind a real nginx on one port, as in production.

What the supervisor promises, checked from the outside through the public port only:
- a default python-socketio client (long-polling first, then the WebSocket upgrade) registers on
  either worker and gets the pushes for events posted through that port, whichever worker took them;
- a worker killed under write load loses no acknowledged event, and the supervisor replaces it;
- a SIGHUP rolling restart under mixed load fails no request.

Runs on SQLite (one file shared by the workers) and on PostgreSQL. Each cluster's processes are
found through /proc (the supervisor's children) and every one is gone after the teardown.
"""
from __future__ import annotations

import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import socketio
import sqlalchemy as sa
from test_multiprocess import fresh_database

from live_server import free_port, server_env
from main import MAIN_PATH

pytestmark = pytest.mark.slow

START_TIMEOUT = 120.0
REPLACE_TIMEOUT = 60.0  # a killed worker replaced, or a rolling restart of both finished
PUSH_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
CLIENTS = 6
REDIS_URL = "redis://127.0.0.1:6379/0"


# -- the cluster: supervisor, nginx, two workers --------------------------------------------------

def children(pid: int) -> list[int]:
    """Direct children of `pid` (every thread's), [] once it is gone."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [grandchild for child in found for grandchild in descendants(child)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Cluster:
    supervisor: subprocess.Popen
    url: str
    database_url: str
    stdout: Path
    seen: set[int] = field(default_factory=set)  # every process of the cluster ever listed

    def workers(self) -> dict[int, int]:
        """pid -> internal port of each worker process the supervisor runs now."""
        found = {}
        for pid in children(self.supervisor.pid):
            self.seen.add(pid)
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in command and alive(pid):
                found[pid] = int(command[command.index(b"--port") + 1])
        return found

    def log(self) -> str:
        return self.stdout.read_text()

    def wait_for_log(self, pattern: str, after: int, timeout: float = REPLACE_TIMEOUT) -> re.Match:
        """The first match of `pattern` in the supervisor's output past character `after`."""
        deadline = time.monotonic() + timeout
        while (match := re.compile(pattern).search(self.log(), after)) is None:
            assert self.supervisor.poll() is None, f"the supervisor exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout:.0f} s:\n{self.log()}"
            time.sleep(0.1)
        return match


def start_cluster(directory: Path, database_url: str, **settings: str) -> Cluster:
    """The cluster, with these environment settings besides the test defaults."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_env(directory, DATABASE_URL=database_url, MODEL_DIR=str(directory / "models"),
                     **{"RATE_LIMIT": "", "LOAD_DEMO_DATA": "true", **settings})
    stdout = directory / "stdout.txt"
    with stdout.open("w") as out, (directory / "stderr.txt").open("w") as err:
        supervisor = subprocess.Popen([sys.executable, str(MAIN_PATH), "serve", "--workers", "2", "--port", str(port)],
                                      env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      start_new_session=True, cwd=MAIN_PATH.parent)
    cluster = Cluster(supervisor, f"http://127.0.0.1:{port}", database_url, stdout)
    try:
        cluster.wait_for_log(r"supervisor: Serving on", 0, START_TIMEOUT)
        assert requests.get(f"{cluster.url}/health", timeout=REQUEST_TIMEOUT).status_code == 200
        assert len(cluster.workers()) == 2
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    """SIGTERM the supervisor; it stops nginx and the workers. Whatever is left is killed, and fails the test."""
    cluster.seen.update(descendants(cluster.supervisor.pid))
    cluster.supervisor.terminate()
    try:
        cluster.supervisor.wait(45)
    except subprocess.TimeoutExpired:
        cluster.supervisor.kill()
        cluster.supervisor.wait()
    deadline = time.monotonic() + 5  # their parent has reaped them; /proc may lag a moment
    while (left := [pid for pid in cluster.seen if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert cluster.supervisor.returncode == 0, cluster.log()
    assert left == [], f"processes left behind by the supervisor: {left}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"workers-{request.param}")
    if request.param == "sqlite":
        cluster = start_cluster(directory, f"sqlite:///{directory / 'server.db'}")
        yield cluster
        stop_cluster(cluster)
        return
    with fresh_database(request.getfixturevalue("postgres_url"), "workers") as database_url:
        cluster = start_cluster(directory, database_url)
        yield cluster
        stop_cluster(cluster)


def stored(database_url: str, event_ids: list[str]) -> dict[str, int]:
    """How many times each of `event_ids` is in the store's interactions."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT event_id, COUNT(*) FROM interactions "
                                        "WHERE event_id IN :ids GROUP BY event_id")
                                .bindparams(sa.bindparam("ids", expanding=True)), {"ids": event_ids})
            return dict(rows.all())
    finally:
        engine.dispose()


# -- load through the public port -----------------------------------------------------------------

class Load(threading.Thread):
    """POST /event (each with its own event_id), and with `reads` GET /recommendations too, through
    the balancer on keep-alive connections until stopped. Records what was acknowledged and what failed."""

    def __init__(self, url: str, prefix: str, catalog: list[str], reads: bool, seed: int) -> None:
        super().__init__(name=f"load-{prefix}", daemon=True)
        self.url, self.prefix, self.catalog, self.reads = url, prefix, catalog, reads
        self.rng = random.Random(seed)
        self.requests = 0
        self.acknowledged: list[str] = []  # event_ids answered 201
        self.unanswered: list[str] = []  # event_ids whose POST failed: stored or not, nobody was told
        self.failures: list[str] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        session.trust_env = False
        while not self._stopped.is_set():
            user = f"{self.prefix}_{self.rng.randrange(5)}"
            if self.reads:
                self._send(session, "GET", f"/recommendations/{user}", None, 200)
            event_id = uuid.uuid4().hex
            answer = self._send(session, "POST", "/event",
                                {"user_id": user, "product_id": self.rng.choice(self.catalog),
                                 "event_type": self.rng.choice(["view", "add_to_cart", "purchase"]),
                                 "event_id": event_id}, 201)
            (self.acknowledged if answer else self.unanswered).append(event_id)

    def _send(self, session: requests.Session, method: str, path: str, body: dict | None, expected: int) -> bool:
        self.requests += 1
        try:
            answer = session.request(method, f"{self.url}{path}", json=body, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as error:
            self.failures.append(f"{method} {path}: {error!r}")
            return False
        if answer.status_code != expected:
            self.failures.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
            return False
        return True

    def stop(self) -> None:
        self._stopped.set()
        self.join(REQUEST_TIMEOUT * 2)


@dataclass
class Loads:
    threads: list[Load]

    @classmethod
    def start(cls, cluster: Cluster, prefix: str, reads: bool, count: int = 4) -> "Loads":
        catalog = [item["item_id"] for item in
                   requests.get(f"{cluster.url}/items?limit=1000", timeout=REQUEST_TIMEOUT).json()["items"]]
        loads = cls([Load(cluster.url, f"{prefix}{n}", catalog, reads, seed=n) for n in range(count)])
        for load in loads.threads:
            load.start()
        return loads

    def stop(self) -> None:
        for load in self.threads:
            load.stop()

    def total(self, name: str) -> list:
        return [entry for load in self.threads for entry in getattr(load, name)]

    @property
    def requests(self) -> int:
        return sum(load.requests for load in self.threads)


# -- the tests ------------------------------------------------------------------------------------

class PollingSubscriber:
    """A default python-socketio client: it connects by long-polling and then upgrades to a WebSocket."""

    def __init__(self, url: str, user_id: str) -> None:
        self.user_id = user_id
        self.pushes: list[dict] = []
        self._arrived = threading.Condition()
        self.client = socketio.Client(reconnection=False)
        self.client.on("realtime_recommendation", self._on_push)
        self.client.connect(url, wait_timeout=5)
        self.registered = self.client.call("register_user", {"user_id": user_id}, timeout=5)

    def _on_push(self, payload: dict) -> None:
        with self._arrived:
            self.pushes.append(payload)
            self._arrived.notify_all()

    def wait_for_push(self) -> dict:
        with self._arrived:
            assert self._arrived.wait_for(lambda: self.pushes, PUSH_TIMEOUT), f"{self.user_id} got no push"
            return self.pushes[0]


def test_a_default_socketio_client_gets_its_pushes_for_events_posted_through_the_same_port(cluster):
    workers = cluster.workers()
    subscribers = []
    try:
        for n in range(CLIENTS):
            subscribers.append(PollingSubscriber(cluster.url, f"sio_{uuid.uuid4().hex[:8]}_{n}"))
        deadline = time.monotonic() + 5
        while any(s.client.transport() != "websocket" for s in subscribers):
            assert time.monotonic() < deadline, [s.client.transport() for s in subscribers]
            time.sleep(0.05)
        # The handshakes went round robin: both workers hold sessions, each reached by its polls and upgrade.
        connections = {port: requests.get(f"http://127.0.0.1:{port}/stats", timeout=REQUEST_TIMEOUT)
                       .json()["realtime"]["connections"] for port in workers.values()}
        assert sum(connections.values()) == CLIENTS and min(connections.values()) >= 1, connections

        for subscriber in subscribers:
            answer = requests.post(f"{cluster.url}/event", json={"user_id": subscriber.user_id,
                                                                  "product_id": "coffee_maker",
                                                                  "event_type": "purchase"}, timeout=REQUEST_TIMEOUT)
            assert answer.status_code == 201, answer.text
        for subscriber in subscribers:
            push = subscriber.wait_for_push()
            assert push["user_id"] == subscriber.user_id
            assert push["trigger"] == {"item_id": "coffee_maker", "event_type": "purchase"}
        time.sleep(0.3)  # time enough for a stray or second push to have arrived
        assert [len(s.pushes) for s in subscribers] == [1] * CLIENTS
        print(f"{CLIENTS} polling-first clients upgraded and pushed to; sessions per worker port {connections}")
    finally:
        for subscriber in subscribers:
            subscriber.client.disconnect()


def test_killing_a_worker_loses_no_acknowledged_event_and_the_supervisor_replaces_it(cluster):
    before = cluster.workers()
    victim = max(before)
    logged = len(cluster.log())
    loads = Loads.start(cluster, f"kill_{uuid.uuid4().hex[:6]}_", reads=False)
    try:
        time.sleep(1.5)
        acknowledged_before_kill = len(loads.total("acknowledged"))
        os.kill(victim, signal.SIGKILL)
        cluster.wait_for_log(rf"pid {victim}, port \d+\) was killed by SIGKILL", logged)
        cluster.wait_for_log(rf"serves slot \d in place of worker \d \(pid {victim},", logged)
        time.sleep(1.0)  # the load goes on over the replacement for a moment
    finally:
        loads.stop()

    after = cluster.workers()
    assert victim not in after and len(after) == 2 and set(before) - {victim} <= set(after)
    acknowledged, unanswered = loads.total("acknowledged"), loads.total("unanswered")
    assert acknowledged_before_kill > 20 and len(acknowledged) > acknowledged_before_kill
    counts = stored(cluster.database_url, acknowledged + unanswered)
    lost = [event_id for event_id in acknowledged if counts.get(event_id) != 1]
    assert lost == [], f"{len(lost)} acknowledged events not stored exactly once"
    assert requests.get(f"{cluster.url}/health", timeout=REQUEST_TIMEOUT).status_code == 200
    stored_unanswered = sum(1 for event_id in unanswered if event_id in counts)
    print(f"SIGKILL of a worker under write load: {len(acknowledged)} events acknowledged, all stored once; "
          f"{len(unanswered)} failed requests ({stored_unanswered} of them stored); "
          f"failures: {loads.total('failures')[:3]}")


def test_a_sighup_rolling_restart_under_load_fails_no_request(cluster):
    before = cluster.workers()
    logged = len(cluster.log())
    loads = Loads.start(cluster, f"hup_{uuid.uuid4().hex[:6]}_", reads=True)
    try:
        time.sleep(1.5)
        cluster.supervisor.send_signal(signal.SIGHUP)
        cluster.wait_for_log(r"supervisor: rolling restart finished", logged)
        time.sleep(1.0)
    finally:
        loads.stop()

    after = cluster.workers()
    assert len(after) == 2 and not set(before) & set(after), (before, after)
    failures = loads.total("failures")
    assert failures == [], f"{len(failures)} of {loads.requests} requests failed: {failures[:5]}"
    acknowledged = loads.total("acknowledged")
    assert loads.requests > 200
    counts = stored(cluster.database_url, acknowledged)
    assert [event_id for event_id in acknowledged if counts.get(event_id) != 1] == []
    print(f"SIGHUP rolling restart under load: {loads.requests} requests, 0 failed; "
          f"{len(acknowledged)} events acknowledged and stored")


def nginx_masters(cluster: Cluster) -> dict[str, int]:
    """"front" / "back" -> the pid of that nginx's master, as the supervisor runs them now."""
    found = {}
    for pid in children(cluster.supervisor.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if match := re.search(rb"/(front|back)\.conf", command):
            found[match.group(1).decode()] = pid
    return found


def test_a_dead_nginx_is_started_again_and_nothing_outlives_a_killed_supervisor(tmp_path):
    """nginx killed outright is replaced (its orphaned workers too); a supervisor killed outright (no
    cleanup of its own) takes nginx and the workers with it."""
    cluster = start_cluster(tmp_path, f"sqlite:///{tmp_path / 'server.db'}")
    processes = set(descendants(cluster.supervisor.pid))
    try:
        for name in ("back", "front"):
            logged = len(cluster.log())
            os.kill(nginx_masters(cluster)[name], signal.SIGKILL)
            cluster.wait_for_log(rf"nginx \({name}\) was killed by SIGKILL; started it again", logged)
            assert requests.get(f"{cluster.url}/health", timeout=REQUEST_TIMEOUT).status_code == 200
        processes |= set(descendants(cluster.supervisor.pid))
        assert len([pid for pid in processes if alive(pid)]) == 6  # two workers; two nginx, a master and a worker each

        cluster.supervisor.kill()
        cluster.supervisor.wait()
        deadline = time.monotonic() + 15
        while [pid for pid in processes if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in processes if alive(pid)] == []
        answer = None
        try:
            answer = requests.get(f"{cluster.url}/health/live", timeout=2)
        except requests.ConnectionError:
            pass
        assert answer is None, "the public port still answers"
    finally:
        for pid in processes:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        # Its nginx folder is what a killed supervisor cannot remove.
        shutil.rmtree(Path(re.search(r"behind nginx \((\S+)/front\.conf", cluster.log()).group(1)))


def get_from(address: str, url: str, forwarded_for: str | None = None) -> int:
    """GET `url` from the local source address `address` (any 127.x.y.z is this machine); the status."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT, source_address=(address, 0))
    try:
        connection.request("GET", "/popular?count=1", headers={"X-Forwarded-For": forwarded_for} if forwarded_for else {})
        return connection.getresponse().status
    finally:
        connection.close()


def test_rate_limits_count_each_client_address_behind_nginx(tmp_path):
    """The workers see the client's address from nginx's X-Forwarded-For, so one client over its budget
    does not block the others; a client's own X-Forwarded-For does not buy it a new budget."""
    cluster = start_cluster(tmp_path, f"sqlite:///{tmp_path / 'server.db'}", RATE_LIMIT="4 per minute",
                            REDIS_URL=REDIS_URL, REDIS_NAMESPACE=f"test-{uuid.uuid4().hex[:8]}")  # one budget
    try:
        statuses = [get_from("127.0.0.2", cluster.url) for _ in range(4)]
        spoofed = get_from("127.0.0.2", cluster.url, forwarded_for="203.0.113.9")
        other = get_from("127.0.0.3", cluster.url)
    finally:
        stop_cluster(cluster)
    assert statuses == [200] * 4
    assert spoofed == 429
    assert other == 200
