"""Crash durability and idempotent retries against a real server killed with SIGKILL mid-load.

8 clients send 2,000 events, each with its own event_id; after 600 acknowledged answers the server
is killed outright. A new server on the same database then receives every event whose answer did
not arrive, and a sample of acknowledged ones again. The store must then hold each event_id exactly
once: nothing acknowledged is lost, nothing retried is doubled.

The same crash under bench/ingest.py's load: wrk on 32 connections, every event by a user of its
own, so each 201 answer names the event it acknowledges; the server is killed two seconds in.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter

import pytest
import requests

from live_server import start_server
from storage import Store

pytestmark = pytest.mark.slow

EVENTS = 2_000
CLIENTS = 8
KILL_AFTER_ACKS = 600
RESENT_ACKNOWLEDGED = 200  # acknowledged events sent again: each must be answered and not stored twice
USERS = 50
BEHAVIOURS = ("view", "add_to_cart", "purchase")


def requests_for(prefix: str, items: list[str]) -> list[tuple[str, dict]]:
    """(path, body) of every event: mostly POST /event, every fourth a rating through POST /interactions."""
    planned = []
    for n in range(EVENTS):
        user, item, event_id = f"durable-{n % USERS}", items[(n * 7) % len(items)], f"{prefix}-{n}"
        if n % 4 == 3:
            planned.append(("/interactions", {"user_id": user, "item_id": item, "rating": 1 + n % 5,
                                              "event_id": event_id}))
        else:
            planned.append(("/event", {"user_id": user, "product_id": item, "event_type": BEHAVIOURS[n % 3],
                                       "event_id": event_id}))
    return planned


def send_all(url: str, planned: list[tuple[str, dict]], numbers: list[int], acknowledged: list[bool],
             on_ack=lambda: None) -> None:
    """Send events `numbers` from CLIENTS threads, each with its own session; note which got a 2xx."""
    def client(share: list[int]) -> None:
        with requests.Session() as session:
            for n in share:
                path, body = planned[n]
                try:
                    answered = session.post(f"{url}{path}", json=body, timeout=10).ok
                except requests.RequestException:  # refused, reset or cut off by the kill
                    answered = False
                if answered:
                    acknowledged[n] = True
                    on_ack()

    threads = [threading.Thread(target=client, args=(numbers[k::CLIENTS],)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def stored_event_ids(database_url: str, prefix: str) -> Counter:
    store = Store(database_url)
    try:
        return Counter(e.event_id for e in store.iter_interactions() if (e.event_id or "").startswith(prefix))
    finally:
        store.close()


def test_acknowledged_events_survive_sigkill_and_retries_are_stored_once(database_url, tmp_path):
    """On both backends (conftest's database_url); both servers use the same DATABASE_URL."""
    prefix = f"dur-{uuid.uuid4().hex[:8]}"
    first = start_server(tmp_path / "first", DATABASE_URL=database_url, RATE_LIMIT="")
    try:
        items = [item["item_id"] for item in requests.get(f"{first.url}/items?limit=200", timeout=5).json()["items"]]
        planned = requests_for(prefix, items)
        acknowledged = [False] * EVENTS
        acks, lock, enough = [0], threading.Lock(), threading.Event()

        def count_ack() -> None:
            with lock:
                acks[0] += 1
                if acks[0] >= KILL_AFTER_ACKS:
                    enough.set()

        load = threading.Thread(target=send_all, args=(first.url, planned, list(range(EVENTS)), acknowledged,
                                                       count_ack))
        load.start()
        assert enough.wait(60), f"only {acks[0]} answers before the deadline"
        os.killpg(first.process.process.pid, signal.SIGKILL)
        load.join()
    finally:
        first.stop()
    assert first.process.process.returncode == -signal.SIGKILL
    answered_before_kill = sum(acknowledged)
    assert KILL_AFTER_ACKS <= answered_before_kill < EVENTS
    at_crash = stored_event_ids(database_url, prefix)
    assert [n for n in range(EVENTS) if acknowledged[n] and not at_crash[f"{prefix}-{n}"]] == [], \
        "acknowledged, then lost in the crash"

    second = start_server(tmp_path / "second", DATABASE_URL=database_url, RATE_LIMIT="")
    try:
        missing = [n for n in range(EVENTS) if not acknowledged[n]]
        again = [n for n in range(EVENTS) if acknowledged[n]][::max(1, answered_before_kill // RESENT_ACKNOWLEDGED)]
        resent = [False] * EVENTS
        send_all(second.url, planned, missing + again, resent)
        assert all(resent[n] for n in missing + again), "a resent event was not acknowledged"
        stats = requests.get(f"{second.url}/stats", timeout=5).json()
    finally:
        second.stop()

    stored = stored_event_ids(database_url, prefix)
    assert [event_id for event_id, count in stored.items() if count > 1] == []
    assert sum(stored.values()) == len(stored) == EVENTS
    assert stats["engine"]["interactions"] == stats["store"]["interactions"]  # the restart replayed the log


# wrk: each thread numbers its events, and writes down the user of every 201 answer (one user per
# event), line-buffered so that what it wrote survives however wrk ends.
ACKNOWLEDGING_SCRIPT = """
local counter, acks = 0, nil
local items = {%s}
function setup(thread)
  thread:set("id", tostring(math.random(1, 1e9)))
end
function init(args)
  acks = io.open("%s/acks-" .. id .. ".txt", "w")
  acks:setvbuf("line")
end
request = function()
  counter = counter + 1
  local body = string.format('{"user_id": "%s-%%s-%%d", "item_id": "%%s", "event_type": "view"}',
    id, counter, items[(counter %% #items) + 1])
  return wrk.format("POST", "/interactions", {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status == 201 then acks:write(string.match(body, '"user_id":%%s*"([^"]+)"'), "\\n") end
end
"""


def test_acknowledged_events_survive_sigkill_under_wrk_at_32_connections(database_url, tmp_path):
    prefix = f"wrk-{uuid.uuid4().hex[:8]}"
    server = start_server(tmp_path / "server", DATABASE_URL=database_url, RATE_LIMIT="")
    try:
        items = [item["item_id"] for item in requests.get(f"{server.url}/items?limit=50", timeout=5).json()["items"]]
        script = tmp_path / "acknowledging.lua"
        script.write_text(ACKNOWLEDGING_SCRIPT % (", ".join(f'"{item}"' for item in items), tmp_path, prefix))
        load = subprocess.Popen([shutil.which("wrk") or "wrk", "-t2", "-c32", "-d5s", "-s", str(script), server.url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        os.killpg(server.process.process.pid, signal.SIGKILL)
        load.wait(30)
    finally:
        server.stop()
    acknowledged = [line for path in tmp_path.glob("acks-*.txt") for line in path.read_text().split()]
    assert len(acknowledged) >= 500, f"only {len(acknowledged)} answers in two seconds: not under load"
    stored = Counter(event.user_id for event in Store(database_url).iter_interactions()
                     if event.user_id.startswith(prefix))
    assert [user for user in acknowledged if stored[user] != 1] == [], "acknowledged, then lost in the crash"
