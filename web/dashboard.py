"""The monitoring dashboard: GET /dashboard, its files, and the `dashboard_stats` it charts once a second.

The browser emits `subscribe_dashboard` over Socket.IO. When API_KEY is set, the message must carry
`{"key": <the API key>}`, and the page takes the key from `?key=` or asks for it in a password box.
The connection then joins this process's dashboard room. On the first subscription a background
task starts. Every INTERVAL_SECONDS it turns the app's counters into rates over the last interval
(web.observability.Metrics, the cache, Subscriptions, JobRuns) and emits them to the room. Each
process has a room of its own, so with REDIS_URL a dashboard gets the figures of the process it is
connected to, not every process's figures mixed together. Prometheus (/metrics) is where processes
are summed.

The page's HTML, CSS and JS are in static/dashboard/. uPlot is served from node_modules (`npm ci`),
and so is the Socket.IO client (web/demo.py), so the page works without internet.
"""
from __future__ import annotations

import hmac
import logging
import statistics
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, send_from_directory
from flask_socketio import emit, join_room
from werkzeug.exceptions import NotFound

from config.settings import PROJECT_ROOT
from web.background import JOBS_KEY
from web.context import SERVICE_KEY, SETTINGS_KEY
from web.extensions import socketio
from web.observability import METRICS_KEY
from web.rate_limits import current_attempt_limiter, too_many_attempts
from web.socket_events import SUBSCRIPTIONS_KEY

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__)

DASHBOARD_DIR = PROJECT_ROOT / "static" / "dashboard"
UPLOT_DIR = PROJECT_ROOT / "node_modules" / "uplot" / "dist"
FEED_KEY = "dashboard_feed"
INTERVAL_SECONDS = 1.0
HISTORY = 120  # messages kept for a newly opened page: the charts' two minutes


@bp.get("/dashboard")
def dashboard_page() -> Response:
    return send_from_directory(DASHBOARD_DIR, "dashboard.html")


@bp.get("/static/dashboard/<path:filename>")
def dashboard_asset(filename: str) -> Response:
    """The page's stylesheet and script; an unknown or escaping path is a JSON 404."""
    return send_from_directory(DASHBOARD_DIR, filename)


@bp.get("/static/vendor/uplot/<path:filename>")
def uplot_asset(filename: str) -> Response:
    """uPlot.iife.min.js and uPlot.min.css, straight from the npm package."""
    if not UPLOT_DIR.is_dir():
        raise NotFound("run npm ci to fetch uPlot")
    return send_from_directory(UPLOT_DIR, filename)


@dataclass
class Reading:
    """Cumulative counters at one moment; two readings give the rates between them."""

    monotonic: float
    requests: float
    events: float
    cache: dict[str, tuple[int, int]]  # kind -> (hits, misses)


class DashboardFeed:
    """The figures the page charts, as rates over the last interval, and the task that emits them."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self.room = f"dashboard:{uuid.uuid4().hex}"  # this process only, even through a message queue
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self._previous = self._read()
        self._started = False
        self._lock = threading.Lock()

    def start_once(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                socketio.start_background_task(self._run)

    def tick(self) -> dict:
        """The next `dashboard_stats` message: rates since the previous tick, current gauges."""
        extensions = self._app.extensions
        service, subscriptions = extensions[SERVICE_KEY], extensions[SUBSCRIPTIONS_KEY]
        previous, current = self._previous, self._read()
        self._previous = current
        elapsed = max(current.monotonic - previous.monotonic, 1e-9)
        durations_ms = [seconds * 1000 for seconds in extensions[METRICS_KEY].durations_since(previous.monotonic)]
        p50, p99 = _percentiles(durations_ms)
        message = {
            "time": time.time(),
            "requests_per_second": round((current.requests - previous.requests) / elapsed, 2),
            "p50_ms": p50,
            "p99_ms": p99,
            "cache_hit_rate": _hit_rates(previous.cache, current.cache),
            "events_per_second": round((current.events - previous.events) / elapsed, 2),
            "connected_users": subscriptions.stats()["connected_users"],
            "last_retrain": self._last_retrain(),
            "model_version": service.engine.fitted_through_seq,
        }
        self.history.append(message)
        return message

    def _read(self) -> Reading:
        requests, events = self._app.extensions[METRICS_KEY].totals()
        return Reading(time.monotonic(), requests, events, self._app.extensions[SERVICE_KEY].cache.hit_counts())

    def _last_retrain(self) -> dict:
        """The scheduled retrain's last run; before the first one, the fit the process started with."""
        job_runs = self._app.extensions.get(JOBS_KEY)
        retrain = job_runs.stats().get("retrain", {}) if job_runs is not None else {}
        if "last_run" in retrain:
            return {"time": retrain["last_run"], "duration_seconds": retrain["duration_seconds"]}
        engine = self._app.extensions[SERVICE_KEY].engine.stats()
        return {"time": engine["fitted_at"], "duration_seconds": engine["fit_seconds"]}

    def _run(self) -> None:
        self._previous = self._read()  # the first rates cover the first interval, not the time since start
        while True:
            socketio.sleep(INTERVAL_SECONDS)
            try:
                socketio.emit("dashboard_stats", self.tick(), to=self.room)
            except Exception:  # one bad reading (e.g. Redis away) must not end the feed
                log.exception("dashboard tick failed")


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    """(p50, p99) in ms rounded to 0.01, or (None, None) when no request finished in the interval."""
    if not values:
        return None, None
    if len(values) == 1:  # quantiles() needs two
        return round(values[0], 2), round(values[0], 2)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[49], 2), round(cuts[98], 2)


def _hit_rates(previous: dict[str, tuple[int, int]], current: dict[str, tuple[int, int]]) -> dict:
    """Hits / lookups in the interval per kind and overall; None for a kind nobody looked up."""
    deltas = {kind: (hits - previous[kind][0], misses - previous[kind][1]) for kind, (hits, misses) in current.items()}
    deltas["overall"] = (sum(hits for hits, _ in deltas.values()), sum(misses for _, misses in deltas.values()))
    return {kind: round(hits / (hits + misses), 4) if hits + misses else None
            for kind, (hits, misses) in deltas.items()}


def on_subscribe_dashboard(*args: object) -> dict:
    """Join the dashboard room; the answer (the Socket.IO ack) carries the history for the charts.

    With an API key, the message must carry it; with RATE_LIMIT too, a client's wrong keys are counted,
    and over the limit it is refused (ack and `error` event) until its window ends, a right key too.
    """
    configured = current_app.extensions[SETTINGS_KEY].api_key or None  # empty counts as none, as in web.auth
    if configured is not None:
        attempts = current_attempt_limiter()
        if attempts is not None and attempts.blocked("subscribe_dashboard"):
            answer = too_many_attempts(attempts, "subscribe_dashboard")
            emit("error", answer)
            return answer
        data = args[0] if len(args) == 1 else None  # anything else (nothing, several, UNREADABLE) has no key
        given = data.get("key") if isinstance(data, dict) else None
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), configured.encode()):
            if attempts is not None:
                attempts.failed("subscribe_dashboard")
            return {"error": "unauthorized", "message": "missing key" if given is None else "invalid key"}
    feed: DashboardFeed = current_app.extensions[FEED_KEY]
    join_room(feed.room)
    feed.start_once()
    return {"subscribed": True, "interval_seconds": INTERVAL_SECONDS, "history": list(feed.history)}


def init_dashboard(app: Flask) -> None:
    """Serve the page and register `subscribe_dashboard` on the Socket.IO server create_app just made.

    The handler is registered here, not with @socketio.on at import time: SocketIO.on attaches a
    handler only to the server that exists at that moment, and tests create one per app.
    """
    app.extensions[FEED_KEY] = DashboardFeed(app)
    app.register_blueprint(bp)
    socketio.on_event("subscribe_dashboard", on_subscribe_dashboard)
