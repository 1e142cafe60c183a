"""Real-time push latency: from POST /event sent to the user's Socket.IO client receiving the push.

N subscriber clients (python-socketio, websocket transport) each register as a fresh user. Each
iteration picks the next user round-robin and a random catalog item, POSTs a view event on one
keep-alive connection, and waits for that user's `realtime_recommendation` whose trigger matches.
A push that reaches a client registered as another user is a cross-delivery; there must be none.
Run it against a live server:

    python main.py serve &
    python bench/realtime.py [--url http://127.0.0.1:5000] [--events 500] [--subscribers 5]
"""
from __future__ import annotations

import os
import queue
import random
import sys
import time
from typing import Any

import socketio

from _common import (WARMUP_ITERATIONS, BenchError, KeepAliveClient, bench_parser, catalog_item_ids,
                     latency_table, report_error, summarize, write_results)

PUSH_ROW, ANSWER_ROW = "push received", "POST /event answer"
TARGET_P99_MS = 10.0  # push row only (issue 9, at ML-1M); the answer row is there for comparison
PUSH_TIMEOUT_S = 5.0  # a push later than this counts as lost
SETTLE_S = 0.5  # after the last event, how long late or stray pushes get to arrive before the final count


class Subscriber:
    """One Socket.IO connection registered as one user; notes when each push arrives.

    The arrival time is taken in the client's receive thread, so the figure does not include the
    main thread waking up.
    """

    def __init__(self, url: str, user_id: str) -> None:
        self.user_id = user_id
        self.pushes: queue.Queue[tuple[float, dict]] = queue.Queue()
        self.client = socketio.Client(reconnection=False)
        self.client.on("realtime_recommendation", self._on_push)
        try:
            self.client.connect(url, transports=["websocket"], wait_timeout=10)
            ack = self.client.call("register_user", {"user_id": user_id}, timeout=10)
        except (socketio.exceptions.SocketIOError, OSError) as error:
            self.client.disconnect()
            raise BenchError(f"Socket.IO subscriber {user_id} could not connect and register at {url}: {error}") from error
        if not isinstance(ack, dict) or ack.get("user_id") != user_id:
            self.client.disconnect()
            raise BenchError(f"register_user for {user_id} was acknowledged with {ack!r}")

    def _on_push(self, payload: dict) -> None:
        self.pushes.put((time.perf_counter(), payload))

    def wait_for(self, trigger: dict[str, str], timeout: float) -> tuple[float | None, list[dict]]:
        """(arrival time of the push with this trigger or None on timeout, other pushes seen meanwhile)."""
        deadline = time.perf_counter() + timeout
        others = []
        while (remaining := deadline - time.perf_counter()) > 0:
            try:
                arrived, payload = self.pushes.get(timeout=remaining)
            except queue.Empty:
                break
            if payload.get("user_id") == self.user_id and payload.get("trigger") == trigger:
                return arrived, others
            others.append(payload)
        return None, others

    def drain(self) -> list[dict]:
        """Pushes received and not waited for."""
        drained = []
        while not self.pushes.empty():
            drained.append(self.pushes.get_nowait()[1])
        return drained

    def close(self) -> None:
        self.client.disconnect()


class Checks:
    """Pushes that went wrong: to another user's client, never arrived, or arrived unasked."""

    def __init__(self) -> None:
        self.cross_deliveries = 0
        self.lost_pushes = 0
        self.unexpected_pushes = 0

    def count_stray(self, subscriber: Subscriber, payloads: list[dict]) -> None:
        for payload in payloads:
            if payload.get("user_id") != subscriber.user_id:
                self.cross_deliveries += 1
            else:
                self.unexpected_pushes += 1

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))

    def ok(self) -> bool:
        return not any(vars(self).values())


def run_events(client: KeepAliveClient, subscribers: list[Subscriber], items: list[str], events: int,
               rng: random.Random, checks: Checks) -> dict[str, list[float]]:
    """Push and answer latencies (ms) of `events` round-robin events; problems go to `checks`."""
    timings: dict[str, list[float]] = {PUSH_ROW: [], ANSWER_ROW: []}
    for number in range(events):
        target = subscribers[number % len(subscribers)]
        for subscriber in subscribers:  # anything left over from earlier events arrived unasked
            checks.count_stray(subscriber, subscriber.drain())
        item_id = rng.choice(items)
        event = {"user_id": target.user_id, "product_id": item_id, "event_type": "view"}
        start = time.perf_counter()
        _, answer_ms = client.expect(201, "POST", "/event", event)
        arrived, others = target.wait_for({"item_id": item_id, "event_type": "view"}, PUSH_TIMEOUT_S)
        checks.count_stray(target, others)
        timings[ANSWER_ROW].append(answer_ms)
        if arrived is None:
            checks.lost_pushes += 1
        else:
            timings[PUSH_ROW].append((arrived - start) * 1000)
    return timings


def measure(url: str, subscriber_count: int = 5, events: int = 500, seed: int = 0) -> dict[str, Any]:
    """Connect the subscribers, run the warm-up and the measured events; the results and checks.

    Also used by bench/async_modes.py against each candidate server.
    """
    rng = random.Random(seed)
    client = KeepAliveClient(url)
    subscribers: list[Subscriber] = []
    checks = Checks()
    try:
        for number in range(subscriber_count):
            subscribers.append(Subscriber(url, f"bench_rt_{os.getpid()}_{number}"))
        items = catalog_item_ids(client)  # opens the connection the events reuse: never idle long
        run_events(client, subscribers, items, WARMUP_ITERATIONS, rng, checks)  # timings dropped, checks kept
        timings = run_events(client, subscribers, items, events, rng, checks)
        time.sleep(SETTLE_S)
        for subscriber in subscribers:
            checks.count_stray(subscriber, subscriber.drain())
    finally:
        for subscriber in subscribers:
            subscriber.close()
        client.close()
    if not timings[PUSH_ROW]:
        raise BenchError(f"none of {events} pushes arrived within {PUSH_TIMEOUT_S:g} s")
    results = {PUSH_ROW: summarize(timings[PUSH_ROW], TARGET_P99_MS), ANSWER_ROW: summarize(timings[ANSWER_ROW], None)}
    return {"subscribers": subscriber_count, "events": events, "warmup_events": WARMUP_ITERATIONS,
            "results": results, "checks": checks.as_dict(), "ok": checks.ok()}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.split("\n\n")[0], "realtime")
    parser.add_argument("--events", type=int, default=500,
                        help=f"measured events (after {WARMUP_ITERATIONS} warm-up ones)")
    parser.add_argument("--subscribers", type=int, default=5, help="Socket.IO clients, one user each")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the items")
    args = parser.parse_args(argv)
    if args.events < 1 or args.subscribers < 1:
        parser.error("--events and --subscribers must be at least 1")

    try:
        record = measure(args.url, args.subscribers, args.events, args.seed)
    except BenchError as error:
        return report_error(error)

    print(f"{args.url}: {args.events} events over {args.subscribers} Socket.IO subscribers (websocket), times in ms")
    print(latency_table(record["results"]))
    for name, count in record["checks"].items():
        if count:
            print(f"CHECK FAILED: {name.replace('_', ' ')}: {count}")
    write_results(args.out, {"url": args.url, **record})
    return 0 if record["ok"] and record["results"][PUSH_ROW]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
