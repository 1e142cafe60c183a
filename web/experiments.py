"""Experiments: create one, read its result, stop it (README *Experiments*)."""
from __future__ import annotations

from flask import Blueprint

from experiments.records import Experiment
from web.context import get_service, get_settings, parse_body, parse_query
from web.experiment_schemas import ExperimentBody, ExperimentPath

bp = Blueprint("experiments", __name__)


@bp.post("/experiments")
def create() -> tuple[dict, int]:
    """409 while another experiment runs: a user is in one experiment at a time."""
    body = parse_body(ExperimentBody)
    experiment = get_service().experiments.create(body.name, body.allocation, body.reward, body.control_name,
                                                  body.to_variants())
    return summary(experiment), 201


@bp.get("/experiments")
def list_all() -> dict:
    return {"experiments": [summary(experiment) for experiment in get_service().experiments.store.experiments()]}


@bp.get("/experiments/<experiment_id>")
def result(experiment_id: str) -> dict:
    """Counted from the store: this process's unwritten impressions are written first."""
    path = parse_query(ExperimentPath, experiment_id=experiment_id)
    service = get_service()
    experiment = service.experiments.get(path.experiment_id)
    service.impressions.flush()
    return {**summary(experiment), "attribution_window_seconds": get_settings().attribution_window_seconds,
            "variants": service.experiments.results(experiment)}


@bp.post("/experiments/<experiment_id>/stop")
def stop(experiment_id: str) -> dict:
    """Stopping a stopped experiment changes nothing and answers the same."""
    path = parse_query(ExperimentPath, experiment_id=experiment_id)
    return summary(get_service().experiments.stop(path.experiment_id))


def summary(experiment: Experiment) -> dict:
    return {"experiment_id": experiment.experiment_id, "name": experiment.name, "allocation": experiment.allocation,
            "reward": experiment.reward, "control": experiment.control, "status": experiment.status,
            "created_at": experiment.created_at, "stopped_at": experiment.stopped_at,
            "variants": [variant.as_dict() for variant in experiment.variants]}
