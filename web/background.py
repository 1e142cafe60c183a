"""Work the serving process does besides answering requests: the log follower and scheduled jobs.

Started by `python main.py serve` only (the CLI owns lifetimes); apps made in tests run none of it.
Jobs run on Flask-APScheduler: `model_check` loads a newer artifact from MODEL_DIR when one
appears; `retrain` (unless RETRAIN_INTERVAL_SECONDS=0) trains one in this process, the same job
`python main.py train` runs. Fits and loads run in a native thread so the gevent loop keeps
answering while they work.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from typing import Callable

from flask import Flask, current_app
from flask_apscheduler import APScheduler

from service.log_follower import LogFollower
from web.context import SERVICE_KEY, SETTINGS_KEY

log = logging.getLogger(__name__)
JOBS_KEY = "job_runs"


def run_off_event_loop(work: Callable):
    """Run CPU-heavy work in a native thread when gevent patched threading, else in place."""
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        import gevent

        return gevent.get_hub().threadpool.apply(work)
    return work()


def freeze_heap() -> None:
    """Collect, then move every live object out of the collector's reach (gc.freeze).

    The engine, the catalog and the libraries are ~230k objects that live as long as the process;
    each full collection walked them all, 44-128 ms with the event loop held, which was the p99 of
    ingest (100 ms at 32 connections). Frozen, they are skipped; reference counting still frees them.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def release_freed_memory(result: dict) -> dict:
    """After a swap the old engine is garbage: collect it, freeze the new one, and hand the freed
    pages back to the OS.

    glibc keeps freed small-object memory in its arenas, so without malloc_trim the process grew by
    ~2.5 MB per retrain in a soak run; elsewhere than glibc the trim is simply skipped.
    """
    freeze_heap()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return result


class JobRuns:
    """Last run, duration, outcome and next run of each job, for /stats."""

    def __init__(self, scheduler: APScheduler) -> None:
        self._scheduler = scheduler
        self._runs: dict[str, dict] = {}
        self._lock = threading.Lock()

    def recorded(self, name: str, job: Callable[[], dict]) -> Callable[[], None]:
        def run() -> None:
            started = time.time()
            try:
                outcome, error = job(), None
            except Exception as exc:  # a failed run is reported, and the next one still happens
                log.exception("job %s failed", name)
                outcome, error = None, repr(exc)
            with self._lock:
                runs = self._runs.get(name, {}).get("runs", 0) + 1
                self._runs[name] = {"last_run": started, "duration_seconds": round(time.time() - started, 4),
                                    "result": outcome, "error": error, "runs": runs}
        return run

    def stats(self) -> dict:
        with self._lock:
            result = {}
            for job in self._scheduler.get_jobs():
                next_run = job.next_run_time.timestamp() if job.next_run_time else None
                result[job.id] = {**self._runs.get(job.id, {"runs": 0}), "next_run": next_run}
            return result


def current_job_runs() -> JobRuns | None:
    return current_app.extensions.get(JOBS_KEY)


def run_later(work: Callable[[], object]) -> None:
    """Run work the answer does not wait for (pushes) in a greenlet of its own, errors logged."""
    import gevent

    def logged() -> None:
        try:
            work()
        except Exception:
            log.exception("deferred work failed")

    gevent.spawn(logged)


class _ModelCheckOverlap(logging.Filter):
    """APScheduler warns when a tick finds the previous run still going. For model_check that is a
    load in progress (0.5-2 s at ML-1M against a 1 s interval): expected, so not worth a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("model_check" in message and "maximum number of running instances" in message)


def start_background_work(app: Flask) -> tuple[APScheduler, LogFollower]:
    """The log follower and the scheduled jobs; the caller stops both."""
    service, settings = app.extensions[SERVICE_KEY], app.extensions[SETTINGS_KEY]
    service.defer, service.run_blocking = run_later, run_off_event_loop
    follower = LogFollower(service).start()
    scheduler = APScheduler()
    scheduler.init_app(app)
    logging.getLogger("apscheduler.scheduler").addFilter(_ModelCheckOverlap())
    runs = app.extensions[JOBS_KEY] = JobRuns(scheduler)
    jobs = {
        "model_check": (lambda: _released(service.check_for_new_model(run_off_event_loop)),
                        settings.model_check_seconds),
        "compact": (service.compact, settings.compact_interval_seconds),
        "cache_cleanup": (service.expire_cache, settings.cache_cleanup_interval_seconds),
        "trending": (service.rebase_trending, settings.trending_interval_seconds),
        # Their batch writes (SQLite's fsync) and counts (pandas) run in a native thread, their locks here.
        "impressions": (service.impressions.flush, settings.impression_flush_seconds),
        "experiments": (lambda: service.experiments.refresh(run=run_off_event_loop), settings.experiments_refresh_seconds),
    }
    if settings.retrain_interval_seconds > 0:  # 0: a separate `python main.py train` writes the models
        jobs["retrain"] = (lambda: release_freed_memory(service.retrain(run_off_event_loop)),
                           settings.retrain_interval_seconds)
    for name, (job, seconds) in jobs.items():
        scheduler.add_job(id=name, func=runs.recorded(name, job), trigger="interval", seconds=seconds,
                          max_instances=1, coalesce=True)
    scheduler.start()
    freeze_heap()
    return scheduler, follower


def _released(result: dict) -> dict:
    """Memory is worth handing back only after a swap left an engine behind."""
    return release_freed_memory(result) if result.get("swapped") else result
