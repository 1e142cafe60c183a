"""Prometheus metrics at GET /metrics, a request id on every request and log line, and JSON logs.

- Each app owns a `CollectorRegistry`. Metrics do not go in prometheus_client's global registry,
  so the many apps a test run creates never collide.
- Request counts and latencies are recorded in request hooks and labelled with the URL rule
  ("/recommendations/<user_id>"), never the raw path. A path full of ids would make one time
  series per id. Unmatched paths share route="unmatched", and unusual methods share method="other".
- Everything else (cache, Socket.IO, model, background jobs) is read from the live objects at
  scrape time by `ServiceCollector`, so those modules keep no Prometheus code.
- Request id: a valid incoming `X-Request-ID` is kept, otherwise a new one is made. It goes back in
  the response header and is stamped on every log record made during the request, so a client's
  report leads straight to the service's log lines and error trace for that request.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, IO

from flask import Blueprint, Flask, Response, current_app, g, has_request_context, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from config.settings import Settings
from web.background import JOBS_KEY
from web.context import SERVICE_KEY
from web.socket_events import SUBSCRIPTIONS_KEY

METRICS_KEY = "metrics"
REQUEST_ID_HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The routes whose 201 answer means that one event was stored.
EVENT_ROUTES = frozenset({("POST", "/interactions"), ("POST", "/event")})
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A cached answer takes about a millisecond and an uncached one a few, so the buckets are
# finest below 25 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RECENT_DURATIONS = 10_000  # the dashboard's p50/p99 cover at most this many of the latest requests
LOG_HANDLER_NAME = "service"
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"

bp = Blueprint("observability", __name__)


class Metrics:
    """One app's registry, the instruments the request hooks feed, and the latest durations for the dashboard."""

    def __init__(self, app: Flask) -> None:
        self.registry = CollectorRegistry()
        labels = ("method", "route", "status")
        self.requests = Counter("http_requests_total", "HTTP requests answered", labels, registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "Time from request start to response", labels,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.events = Counter("recs_events_ingested_total", "Events stored through POST /interactions and POST /event",
                              registry=self.registry)
        self.registry.register(ServiceCollector(app))
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._recent: deque[tuple[float, float]] = deque(maxlen=RECENT_DURATIONS)  # (monotonic end, seconds)
        self._lock = threading.Lock()
        # prometheus_client's .labels() validates and looks the child up on every call (~20 us here):
        # there are few (method, route, status) triples, so each pair of children is found once.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(*key), self.latency.labels(*key))
        children[0].inc()
        children[1].observe(seconds)
        if status == 201 and (method, route) in EVENT_ROUTES:
            self.events.inc()
        with self._lock:
            self._recent.append((time.monotonic(), seconds))

    def totals(self) -> tuple[float, float]:
        """(requests answered, events ingested) since the app started."""
        return _counter_total(self.requests), _counter_total(self.events)

    def durations_since(self, monotonic_time: float) -> list[float]:
        """Durations in seconds of the requests that finished after `monotonic_time`."""
        with self._lock:
            return [seconds for finished, seconds in self._recent if finished > monotonic_time]


def _counter_total(counter: Counter) -> float:
    return sum(sample.value for family in counter.collect() for sample in family.samples
               if sample.name.endswith("_total"))


class ServiceCollector(Collector):
    """Reads the cache, Socket.IO, model and job figures at scrape time, straight from the app's objects."""

    def __init__(self, app: Flask) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        extensions = self._app.extensions
        service = extensions[SERVICE_KEY]
        yield from _cache_metrics(service.cache.stats())
        yield from _realtime_metrics(extensions[SUBSCRIPTIONS_KEY].stats())
        yield from _model_metrics(service.engine.fitted_through_seq, service.engine.stats())
        job_runs = extensions.get(JOBS_KEY)  # only `main.py serve` schedules jobs
        if job_runs is not None:
            yield from _job_metrics(job_runs.stats())


def _cache_metrics(cache: dict[str, dict]) -> Iterator[Metric]:
    hits = CounterMetricFamily("recs_cache_hits", "Cache lookups that found an answer", labels=["kind"])
    misses = CounterMetricFamily("recs_cache_misses", "Cache lookups that found nothing", labels=["kind"])
    ratio = GaugeMetricFamily("recs_cache_hit_ratio", "Hits / lookups since start (0 before any lookup)",
                              labels=["kind"])
    for kind, figures in cache.items():
        hits.add_metric([kind], figures["hits"])
        misses.add_metric([kind], figures["misses"])
        ratio.add_metric([kind], figures["hit_rate"])
    yield from (hits, misses, ratio)


def _realtime_metrics(realtime: dict) -> Iterator[Metric]:
    yield CounterMetricFamily("recs_pushes_sent", "Recommendation pushes emitted over Socket.IO",
                              value=realtime["pushes_sent"])
    yield GaugeMetricFamily("recs_socketio_connections", "Open Socket.IO connections to this process",
                            value=realtime["connections"])
    yield GaugeMetricFamily("recs_connected_users", "Distinct users registered for pushes on this process",
                            value=realtime["connected_users"])


def _model_metrics(version: int, engine: dict) -> Iterator[Metric]:
    yield GaugeMetricFamily("recs_model_version", "Sequence number of the last event in the model's fit",
                            value=version)
    yield GaugeMetricFamily("recs_model_fitted_at_seconds", "Unix time the model in use was fitted",
                            value=engine["fitted_at"])
    yield GaugeMetricFamily("recs_model_fit_duration_seconds", "How long the fit of the model in use took",
                            value=engine["fit_seconds"])


def _job_metrics(jobs: dict[str, dict]) -> Iterator[Metric]:
    """Background jobs (retrain, compact, ...) as JobRuns reports them; a job that never ran has only a run count."""
    runs = CounterMetricFamily("recs_job_runs", "Completed runs of a background job", labels=["job"])
    last_run = GaugeMetricFamily("recs_job_last_run_timestamp_seconds", "Unix time the job's last run started",
                                 labels=["job"])
    duration = GaugeMetricFamily("recs_job_last_duration_seconds", "How long the job's last run took",
                                 labels=["job"])
    failed = GaugeMetricFamily("recs_job_last_run_failed", "1 if the job's last run raised", labels=["job"])
    for job, figures in jobs.items():
        runs.add_metric([job], figures["runs"])
        if "last_run" in figures:
            last_run.add_metric([job], figures["last_run"])
            duration.add_metric([job], figures["duration_seconds"])
            failed.add_metric([job], 1 if figures["error"] else 0)
    yield from (runs, last_run, duration, failed)


# ---- request hooks and the route ------------------------------------------------------------

def init_observability(app: Flask) -> Metrics:
    """Attach the metrics and request ids to `app` and serve GET /metrics."""
    metrics = app.extensions[METRICS_KEY] = Metrics(app)
    # First of all before_request hooks, so requests that a later hook turns away (401, 429) are
    # timed and carry an id too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_finish_request)
    app.register_blueprint(bp)
    return metrics


def current_metrics() -> Metrics:
    return current_app.extensions[METRICS_KEY]


# A random prefix per process and a counter: unique like uuid4, for a tenth of its cost per request.
_REQUEST_ID_PREFIX = os.urandom(8).hex()
_request_numbers = itertools.count()


def _new_request_id() -> str:
    """32 hex digits, unique across processes (random prefix) and within one (counter)."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers):016x}"


def _start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if VALID_REQUEST_ID.fullmatch(incoming) else _new_request_id()
    g.observed_since = time.perf_counter()


def _finish_request(response: Response) -> Response:
    if "observed_since" in g:  # absent only if the request failed before any hook ran
        method = request.method if request.method in KNOWN_METHODS else "other"
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        current_metrics().observe(method, route, response.status_code, time.perf_counter() - g.observed_since)
        response.headers[REQUEST_ID_HEADER] = g.request_id
    return response


@bp.get("/metrics")
def metrics_page() -> Response:
    """Prometheus text format: this process's counters, plus the figures ServiceCollector reads live."""
    return Response(generate_latest(current_metrics().registry), content_type=CONTENT_TYPE_LATEST)


# ---- logging --------------------------------------------------------------------------------

class RequestIdFilter(logging.Filter):
    """Stamps `record.request_id`: the current request's id, or None outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id") if has_request_context() else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, which log shippers parse without a grok pattern."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """Send INFO and above to `stream` (stderr), as JSON lines when settings.log_json, with request ids.

    Replaces the handler an earlier call installed, so calling it twice never doubles the lines.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(LOG_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter(TEXT_LOG_FORMAT))
    root = logging.getLogger()
    for old in [existing for existing in root.handlers if existing.get_name() == LOG_HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # APScheduler logs two INFO lines per job run (several a minute); JobRuns already records every
    # outcome and logs failures.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return handler
