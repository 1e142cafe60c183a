"""Per-endpoint response times for /stats, and the `response_time_ms` every answer carries.

Each endpoint keeps its latest WINDOW durations in a bounded deque, so memory stays flat however
long the process runs; a lock makes the deques safe under threaded or gevent servers.
"""
from __future__ import annotations

import math
import time
from collections import deque
from threading import Lock

from flask import Flask, Response, current_app, g, request

WINDOW = 1000
EXTENSION_KEY = "request_timing"


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class RequestTimer:
    """Collects durations keyed by "METHOD /rule"; unknown routes are not endpoints and are skipped."""

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._lock = Lock()

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION_KEY] = self
        app.before_request(_mark_start)
        app.after_request(self._after_request)

    def record(self, endpoint: str, elapsed_ms: float) -> None:
        with self._lock:
            self._samples.setdefault(endpoint, deque(maxlen=self._window)).append(elapsed_ms)
            self._counts[endpoint] = self._counts.get(endpoint, 0) + 1

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        """count is every request seen; avg/p50/p99 cover the latest WINDOW of them."""
        with self._lock:
            copies = {endpoint: sorted(samples) for endpoint, samples in self._samples.items()}
            counts = dict(self._counts)
        return {
            endpoint: {
                "count": counts[endpoint],
                "avg_ms": round(sum(ordered) / len(ordered), 2),
                "p50_ms": round(_percentile(ordered, 0.50), 2),
                "p99_ms": round(_percentile(ordered, 0.99), 2),
            }
            for endpoint, ordered in copies.items()
        }

    def _after_request(self, response: Response) -> Response:
        if request.url_rule is not None:
            self.record(f"{request.method} {request.url_rule.rule}", _elapsed_ms())
        return response


def _mark_start() -> None:
    g.request_started = time.perf_counter()


def _elapsed_ms() -> float:
    return (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000


def response_time_ms() -> str:
    """Milliseconds since the request started, as the engine README shows them ("1.23")."""
    return f"{_elapsed_ms():.2f}"


def current_timer() -> RequestTimer:
    return current_app.extensions[EXTENSION_KEY]
