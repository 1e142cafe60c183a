"""An experiment end to end on real servers, through HTTP only (issue 10, must-show 2).

On one `python main.py serve`: create an experiment, serve 500 users, post clicks that carry the
answers' recommendation_id, and GET /experiments/<id> shows exactly what the client counted
(impressions, users and clicks per variant). After a restart every user is in the same variant and
the counts are still there. On two processes sharing one PostgreSQL store: the process that did not
create the experiment serves it within a couple of seconds, both put every user in the same variant,
and the result counts the traffic of both. Lists served while PostgreSQL is down are counted once it
is back, and a clean stop writes the lists still in the buffer.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from test_multiprocess import fresh_database

from live_server import LiveServer, start_server

pytestmark = pytest.mark.slow

USERS = 500
EXPERIMENT = {"name": "popular-vs-hybrid", "reward": "click", "variants": [
    {"name": "control", "share": 0.5, "case": "popular"},
    {"name": "hybrid", "share": 0.5, "case": "hybrid", "method": "adaptive"}]}
SEE_EXPERIMENT_SECONDS = 3.0  # EXPERIMENTS_REFRESH_SECONDS is 1
TIMEOUT = 10.0


def call(server: LiveServer, method: str, path: str, body: dict | None = None, status: int = 200) -> dict:
    answer = requests.request(method, f"{server.url}{path}", json=body, timeout=TIMEOUT)
    assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text}"
    return answer.json()


class Tally:
    """What the client saw: impressions, distinct users and clicked lists per variant, and each user's variant."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the client serves from several threads
        self.impressions: Counter[str] = Counter()
        self.clicks: Counter[str] = Counter()
        self.users: dict[str, str] = {}

    def serve_and_click(self, server: LiveServer, user: str, click: bool, click_on: LiveServer | None = None) -> None:
        answer = call(server, "GET", f"/recommendations/{user}?count=5")
        with self._lock:
            self.impressions[answer["variant"]] += 1
            assert self.users.setdefault(user, answer["variant"]) == answer["variant"]
        if click:
            call(click_on or server, "POST", "/interactions",
                 {"user_id": user, "item_id": answer["recommendations"][0]["item"], "event_type": "view",
                  "recommendation_id": answer["recommendation_id"]}, status=201)
            with self._lock:
                self.clicks[answer["variant"]] += 1

    def expected(self) -> dict[str, tuple[int, int, int]]:
        users = Counter(self.users.values())
        return {name: (self.impressions[name], users[name], self.clicks[name]) for name in ("control", "hybrid")}


def counted(server: LiveServer, experiment_id: str) -> dict[str, tuple[int, int, int]]:
    result = call(server, "GET", f"/experiments/{experiment_id}")
    return {v["name"]: (v["impressions"], v["users"], v["clicks"]) for v in result["variants"]}


def wait_for_counts(server: LiveServer, experiment_id: str, expected: dict, seconds: float = 5.0) -> None:
    """Other processes write their impressions every IMPRESSION_FLUSH_SECONDS (0.1 s)."""
    deadline = time.monotonic() + seconds
    while (found := counted(server, experiment_id)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert found == expected


def test_counts_match_the_client_and_the_split_survives_a_restart(tmp_path):
    # Impressions are written when a result is read and at shutdown, not on a timer, during this test.
    env = {"RATE_LIMIT": "", "IMPRESSION_FLUSH_SECONDS": "600"}
    server = start_server(tmp_path / "server", **env)
    try:
        experiment_id = call(server, "POST", "/experiments", EXPERIMENT, status=201)["experiment_id"]
        tally = Tally()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: tally.serve_and_click(server, f"live_{n}", click=n % 3 == 0), range(USERS)))
        expected = tally.expected()
        assert sum(users for _, users, _ in expected.values()) == USERS
        assert all(users > 0.4 * USERS for _, users, _ in expected.values())  # a 50/50 split, roughly
        assert counted(server, experiment_id) == expected
        for n in range(0, USERS, 10):  # served just before the stop: still in the buffer
            tally.serve_and_click(server, f"live_{n}", click=False)
    finally:
        server.stop()

    server = start_server(tmp_path / "server", **env)
    try:
        assert counted(server, experiment_id) == tally.expected()  # written at the stop; a restart loses nothing
        for n in range(0, USERS, 5):
            answer = call(server, "GET", f"/recommendations/live_{n}")
            assert (answer["experiment_id"], answer["variant"]) == (experiment_id, tally.users[f"live_{n}"])
    finally:
        server.stop()


def test_two_processes_split_alike_and_the_result_counts_both(tmp_path, postgres_url):
    with fresh_database(postgres_url, "experiments") as database_url:
        env = {"DATABASE_URL": database_url, "MODEL_DIR": str(tmp_path / "models"), "RETRAIN_INTERVAL_SECONDS": "0",
               "RATE_LIMIT": ""}
        a = start_server(tmp_path / "a", **env)
        try:
            b = start_server(tmp_path / "b", **env)
            try:
                experiment_id = call(a, "POST", "/experiments", EXPERIMENT, status=201)["experiment_id"]
                tally = Tally()
                deadline = time.monotonic() + SEE_EXPERIMENT_SECONDS
                while "variant" not in (probe := call(b, "GET", "/recommendations/probe")):
                    assert time.monotonic() < deadline, "B never served the experiment A created"
                    time.sleep(0.1)
                tally.impressions[probe["variant"]] += 1  # the first answer in the experiment counts too
                tally.users["probe"] = probe["variant"]

                def visit(n: int, again: bool = False) -> None:
                    """Odd users are served by A, even ones by B, and click on the other process;
                    `again` serves them on the other process, which must give the same variant."""
                    serving, other = (a, b) if n % 2 else (b, a)
                    if again:
                        tally.serve_and_click(other, f"pair_{n}", click=False)
                    else:
                        tally.serve_and_click(serving, f"pair_{n}", click=n % 4 < 2, click_on=other)

                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(visit, range(200)))
                    list(pool.map(lambda n: visit(n, again=True), range(0, 200, 3)))
                wait_for_counts(a, experiment_id, tally.expected())
                wait_for_counts(b, experiment_id, tally.expected())
                call(b, "POST", f"/experiments/{experiment_id}/stop")
                deadline = time.monotonic() + SEE_EXPERIMENT_SECONDS
                while "experiment_id" in call(a, "GET", "/recommendations/probe"):
                    assert time.monotonic() < deadline, "A kept serving the experiment B stopped"
                    time.sleep(0.1)
            finally:
                b.stop()
        finally:
            a.stop()


def test_lists_served_while_postgresql_is_down_are_counted_once_it_is_back(own_postgres, tmp_path):
    server = start_server(tmp_path / "server", DATABASE_URL=own_postgres.url, RETRAIN_INTERVAL_SECONDS="0",
                          RATE_LIMIT="")
    try:
        experiment_id = call(server, "POST", "/experiments", EXPERIMENT, status=201)["experiment_id"]
        tally = Tally()
        for n in range(30):
            tally.serve_and_click(server, f"before_{n}", click=n % 2 == 0)
        assert counted(server, experiment_id) == tally.expected()

        own_postgres.stop()
        for n in range(30):  # the engine answers without the store; the lists wait in the buffer
            tally.serve_and_click(server, f"during_{n}", click=False)
        time.sleep(1.5)  # a few flushes fail meanwhile
        assert requests.get(f"{server.url}/experiments/{experiment_id}", timeout=TIMEOUT).status_code == 503

        own_postgres.start()
        wait_for_counts(server, experiment_id, tally.expected(), seconds=15.0)
        stderr = server.stderr.read_text()
        assert stderr.count("impressions cannot be written") == 1 and "impressions are written again" in stderr
    finally:
        server.stop()
