"""Observability through the Flask test client: /metrics in the Prometheus format, request ids,
JSON log lines, and /health (ready) against /health/live (live).

Counters only grow, and tests share one app, so every assertion compares a scrape before the
requests with one after them.
"""
from __future__ import annotations

import io
import json
import logging
import shutil
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import load_settings
from web import create_app
from web.extensions import socketio
from web.background import JOBS_KEY, JobRuns
from web.observability import LOG_HANDLER_NAME, configure_logging

RECOMMENDATIONS = {"method": "GET", "route": "/recommendations/<user_id>", "status": "200"}


def make_app(directory, **settings):
    return create_app(load_settings(database_url=f"sqlite:///{directory / 'store.db'}", redis_url=None,
                                    rate_limit="", **settings))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = make_app(tmp_path_factory.mktemp("observability"))
    yield app
    app.extensions["recommendation_service"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """GET /metrics parsed by prometheus_client's own parser: (sample name, labels) -> value."""
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.get_data(as_text=True)) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    """How much a sample grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def post_event(client, user_id: str, product_id: str, event_type: str = "view") -> int:
    body = {"user_id": user_id, "product_id": product_id, "event_type": event_type}
    return client.post("/event", json=body).status_code


# ---- /metrics ----------------------------------------------------------------------------------

def test_requests_are_counted_and_timed_per_url_rule_not_per_path(client):
    before = scrape(client)
    for user in ("alice", "bob"):
        assert client.get(f"/recommendations/{user}").status_code == 200
    for path in ("/no-such-route/1", "/no-such-route/2"):
        assert client.get(path).status_code == 404
    after = scrape(client)

    assert moved(before, after, "http_requests_total", **RECOMMENDATIONS) == 2
    assert moved(before, after, "http_request_duration_seconds_count", **RECOMMENDATIONS) == 2
    count = value(after, "http_request_duration_seconds_count", **RECOMMENDATIONS)
    assert value(after, "http_request_duration_seconds_bucket", **RECOMMENDATIONS, le="+Inf") == count
    assert value(after, "http_request_duration_seconds_sum", **RECOMMENDATIONS) > 0
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert moved(before, after, "http_requests_total", **unmatched) == 2
    label_values = {label for _, labels in after for _, label in labels}
    assert not any("alice" in label or "no-such-route" in label for label in label_values)


def test_events_ingested_counts_only_stored_events(client):
    before = scrape(client)
    assert post_event(client, "eve", "iphone") == 201
    assert post_event(client, "eve", "ipad", "purchase") == 201
    assert client.post("/interactions", json={"user_id": "eve", "item_id": "airpods", "rating": 4}).status_code == 201
    assert client.post("/event", json={"user_id": "eve", "event_type": "view"}).status_code == 422
    assert post_event(client, "eve", "no_such_item") == 404
    assert moved(before, scrape(client), "recs_events_ingested_total") == 3


def test_live_figures_are_read_at_scrape_time(app, client):
    subscriber = socketio.test_client(app)
    subscriber.emit("register_user", {"user_id": "frank"})  # pushes go only to users someone listens for
    before = scrape(client)
    client.get("/similar/iphone")  # a miss, then a hit
    client.get("/similar/iphone")
    assert post_event(client, "frank", "cookbook") == 201
    assert post_event(client, "nobody-listens", "cookbook") == 201
    after = scrape(client)
    subscriber.disconnect()

    assert moved(before, after, "recs_cache_hits_total", kind="similar") == 1
    assert moved(before, after, "recs_cache_misses_total", kind="similar") == 1
    assert 0 < value(after, "recs_cache_hit_ratio", kind="similar") <= 1
    assert moved(before, after, "recs_pushes_sent_total") == 1
    assert value(after, "recs_connected_users") == 1 and ("recs_socketio_connections", frozenset()) in after
    engine = app.extensions["recommendation_service"].engine
    assert value(after, "recs_model_version") == engine.fitted_through_seq > 0
    assert value(after, "recs_model_fitted_at_seconds") == pytest.approx(engine.fitted_at)
    assert value(after, "recs_model_fit_duration_seconds") > 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_background_jobs_appear_once_the_scheduler_runs_them(app, client, monkeypatch):
    assert not any(name.startswith("recs_job_") for name, _ in scrape(client))  # test apps schedule nothing
    jobs = [SimpleNamespace(id=name, next_run_time=None) for name in ("retrain", "compact", "trending")]
    runs = JobRuns(SimpleNamespace(get_jobs=lambda: jobs))
    monkeypatch.setitem(app.extensions, JOBS_KEY, runs)
    runs.recorded("retrain", lambda: {"fitted_through_seq": 1})()
    runs.recorded("compact", lambda: 1 / 0)()

    samples = scrape(client)
    assert value(samples, "recs_job_runs_total", job="retrain") == 1
    assert value(samples, "recs_job_last_run_timestamp_seconds", job="retrain") > 0
    assert ("recs_job_last_duration_seconds", frozenset({("job", "retrain")})) in samples
    assert value(samples, "recs_job_last_run_failed", job="retrain") == 0
    assert value(samples, "recs_job_last_run_failed", job="compact") == 1
    assert value(samples, "recs_job_runs_total", job="trending") == 0
    assert ("recs_job_last_run_timestamp_seconds", frozenset({("job", "trending")})) not in samples


# ---- request ids ---------------------------------------------------------------------------------

def test_a_valid_request_id_is_echoed(client):
    for request_id in ("abc-123", "A.b_C-9", "x" * 64):
        assert client.get("/health/live", headers={"X-Request-ID": request_id}).headers["X-Request-ID"] == request_id


def test_a_missing_or_invalid_request_id_is_replaced_by_a_new_one(client):
    given = [None, "", "x" * 65, "has space", "<script>", "ünïcode", "a/b"]
    answers = [client.get("/health/live", headers={} if g is None else {"X-Request-ID": g}).headers["X-Request-ID"]
               for g in given]
    assert all(len(answer) == 32 and int(answer, 16) >= 0 for answer in answers)  # uuid4 hex
    assert len(set(answers)) == len(answers)


def test_error_answers_carry_a_request_id_even_when_an_earlier_hook_refuses(tmp_path):
    """The auth hook (registered before ours) answers 401 from before_request: still timed and identified."""
    app = make_app(tmp_path, api_key="s3cret")
    client = app.test_client()
    try:
        answer = client.post("/event", json={"user_id": "u", "product_id": "iphone"}, headers={"X-Request-ID": "r-401"})
        assert answer.status_code == 401 and answer.headers["X-Request-ID"] == "r-401"
        assert client.get("/no-such-route").headers["X-Request-ID"]
        samples = scrape(client)
        assert value(samples, "http_requests_total", method="POST", route="/event", status="401") == 1
        assert value(samples, "recs_events_ingested_total") == 0
    finally:
        app.extensions["recommendation_service"].close()


# ---- logging -------------------------------------------------------------------------------------

@pytest.fixture
def log_stream():
    """configure_logging onto a StringIO; the root logger's handlers and levels are restored afterwards."""
    root, scheduler = logging.getLogger(), logging.getLogger("apscheduler")
    levels = root.level, scheduler.level
    stream = io.StringIO()
    yield stream
    for handler in [h for h in root.handlers if h.get_name() == LOG_HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(levels[0])
    scheduler.setLevel(levels[1])


@pytest.fixture
def failing_app(tmp_path):
    """An app with one route that logs a line and then fails, so the error handler logs a traceback."""
    app = make_app(tmp_path)

    @app.get("/fails")
    def fails():
        logging.getLogger("test.fails").warning("about to fail for %s", "carol")
        raise RuntimeError("boom")

    yield app
    app.extensions["recommendation_service"].close()


def test_json_log_lines_carry_the_request_id(failing_app, log_stream):
    configure_logging(load_settings(log_json=True), stream=log_stream)
    answer = failing_app.test_client().get("/fails", headers={"X-Request-ID": "trace-me"})
    assert answer.status_code == 500 and answer.headers["X-Request-ID"] == "trace-me"
    logging.getLogger("test.outside").info("no request here")

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [(line["logger"], line["level"], line["request_id"]) for line in lines] == [
        ("test.fails", "WARNING", "trace-me"), ("web.errors", "ERROR", "trace-me"), ("test.outside", "INFO", None)]
    assert lines[0]["message"] == "about to fail for carol" and "exc_info" not in lines[0]
    assert "RuntimeError: boom" in lines[1]["exc_info"]
    assert lines[0]["time"].endswith("+00:00")


def test_text_logs_also_carry_the_request_id_and_configuring_twice_adds_no_second_handler(failing_app, log_stream):
    configure_logging(load_settings(log_json=True), stream=io.StringIO())
    configure_logging(load_settings(log_json=False), stream=log_stream)
    assert [h.get_name() for h in logging.getLogger().handlers].count(LOG_HANDLER_NAME) == 1

    failing_app.test_client().get("/fails", headers={"X-Request-ID": "plain-1"})
    first = log_stream.getvalue().splitlines()[0]
    assert "WARNING test.fails request_id=plain-1 about to fail for carol" in first


# ---- health: live against ready ------------------------------------------------------------------

def test_health_is_503_when_the_store_is_unreachable_while_live_stays_200(tmp_path):
    directory = tmp_path / "store"
    directory.mkdir()
    app = make_app(directory)
    client = app.test_client()
    assert client.get("/health").status_code == 200

    shutil.rmtree(directory)  # the SQLite file and its folder are gone ...
    app.extensions["recommendation_service"].store.close()  # ... and no pooled connection still holds it

    ready = client.get("/health")
    assert ready.status_code == 503
    assert ready.get_json()["store"] == "unreachable"
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/live").get_json() == {"status": "alive"}
