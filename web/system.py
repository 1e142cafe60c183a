"""Operational routes: liveness for load balancers, counters for the shell and the benches."""
from __future__ import annotations

from flask import Blueprint

from web.context import get_service
from web.background import current_job_runs
from web.request_timing import current_timer
from web.socket_events import current_subscriptions

bp = Blueprint("system", __name__)


@bp.get("/health")
def health() -> tuple[dict, int]:
    """503 when the service reports anything but ok, so a load balancer takes the instance out."""
    report = get_service().health()
    return report, 200 if report.get("status") == "ok" else 503


@bp.get("/health/live")
def live() -> dict:
    """Liveness only: answers while the process serves, touching neither store nor model.

    Also the benches' "trivial endpoint": the framework's own ceiling on this machine.
    """
    return {"status": "alive"}


@bp.get("/stats")
def stats() -> dict:
    job_runs = current_job_runs()
    return {**get_service().stats(), "requests": current_timer().snapshot(),
            "realtime": current_subscriptions().stats(), "jobs": job_runs.stats() if job_runs else {}}
