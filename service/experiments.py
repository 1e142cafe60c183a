"""Experiments as the service runs them: which variant a user is in, and what each variant earned.

Each process keeps the running experiment (one at a time, so no user is in two) and its shares in
memory, and `refresh` reads them from the store every EXPERIMENTS_REFRESH_SECONDS (a background
job), so an experiment created or stopped through any process reaches all of them within about a
second; the process that creates or stops one sees it at once. "thompson" shares and the
exploration candidates are re-read every BANDIT_REFRESH_SECONDS. Results are computed from the store
when asked for, so they count every process's traffic and survive restarts.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from config.settings import Settings
from experiments.allocation import boundaries, pick, thompson_shares, user_position
from experiments.records import Experiment, Variant, VariantCounts
from experiments.statistics import variant_results
from service.errors import ConflictError, NotFoundError
from storage import Store
from storage.experiment_store import ExperimentRunningError, ExperimentStore

EXPLORATION_CANDIDATES = 200  # least shown items kept per process; a list explores a few of them
TRAFFIC_BUCKET_SECONDS = 60.0  # the impressions-over-time series of a result


@dataclass(frozen=True)
class Assignment:
    """A user's place in the running experiment; one object per variant, shared by all its users."""

    experiment_id: str
    variant: Variant


@dataclass(frozen=True)
class _Running:
    experiment: Experiment
    shares: np.ndarray
    bounds: list[float]
    assignments: tuple[Assignment, ...]


class Experiments:
    """The running experiment of this process, kept up from the store, and the experiment operations."""

    def __init__(self, store: ExperimentStore, settings: Settings) -> None:
        self.store = store
        self._settings = settings
        self._running: _Running | None = None  # replaced whole, so a reader never sees half an update
        self._candidates: list[str] = []
        self._bandit_read_at = -np.inf
        self._refreshing = threading.Lock()

    # -- the read path --------------------------------------------------------------------
    def assign(self, user_id: str) -> Assignment | None:
        """The user's variant while an experiment runs: a hash and a bisection, no I/O (~1 us)."""
        running = self._running
        if running is None:
            return None
        return running.assignments[pick(user_position(running.experiment.experiment_id, user_id), running.bounds)]

    def running_id(self) -> str | None:
        running = self._running
        return None if running is None else running.experiment.experiment_id

    def exploration_candidates(self) -> list[str]:
        """The least shown items (fewest first), as last read from the store."""
        return self._candidates

    # -- keeping up with the store --------------------------------------------------------
    def refresh(self, force_bandit: bool = False, run: Callable[[Callable[[], Any]], Any] = lambda work: work()) -> dict:
        """Read the running experiment (and, when due, bandit counts and exploration candidates); `run`
        does the counting (the server passes one that uses a native thread)."""
        with self._refreshing:
            try:
                experiment = self.store.running_experiment()
            except Exception as error:  # the store is down: serve what we know; /stats (jobs) says why
                reason = Store.unavailable_reason(error)
                if reason is None:
                    raise
                return {"running": self.running_id(), "kept": reason}
            now = time.monotonic()
            bandit_due = force_bandit or now - self._bandit_read_at >= self._settings.bandit_refresh_seconds
            if bandit_due:
                self._bandit_read_at = now
                if self._explores(experiment):
                    self._candidates = list(run(lambda: self.store.least_shown_items(EXPLORATION_CANDIDATES)))
            previous = self._running
            if experiment is None:
                self._running = None
            elif bandit_due or previous is None or previous.experiment != experiment:
                self._running = run(lambda: self._state(experiment))
        return {"running": None if experiment is None else experiment.experiment_id}

    def _state(self, experiment: Experiment) -> _Running:
        shares = self.shares(experiment)
        return _Running(experiment, shares, boundaries(shares.tolist()),
                        tuple(Assignment(experiment.experiment_id, variant) for variant in experiment.variants))

    def shares(self, experiment: Experiment, counts: list[VariantCounts] | None = None) -> np.ndarray:
        """The configured shares, or for "thompson" each arm's posterior chance of being the best, from
        `counts` when the caller has them (counting reads every impression of the experiment)."""
        if experiment.allocation != "thompson":
            return np.array([variant.share for variant in experiment.variants])
        if counts is None:
            counts = self.store.variant_counts(experiment, self._settings.attribution_window_seconds)
        successes = [c.clicks if experiment.reward == "click" else c.conversions for c in counts]
        return thompson_shares(np.array(successes), np.array([c.impressions for c in counts]),
                               experiment.experiment_id)

    def _explores(self, experiment: Experiment | None) -> bool:
        weights = [self._settings.exploration_weight]
        if experiment is not None:
            weights += [v.exploration or 0.0 for v in experiment.variants]
        return max(weights) > 0.0

    # -- the API's operations ---------------------------------------------------------------
    def create(self, name: str, allocation: str, reward: str, control: str, variants: tuple[Variant, ...]) -> Experiment:
        """ConflictError (409) while another one runs."""
        experiment = Experiment(f"exp-{secrets.token_hex(6)}", name, allocation, reward, control, variants,
                                created_at=time.time())
        try:
            self.store.create_experiment(experiment)
        except ExperimentRunningError as error:
            raise ConflictError(str(error)) from None
        self.refresh(force_bandit=True)
        return experiment

    def stop(self, experiment_id: str) -> Experiment:
        stopped = self.store.stop_experiment(experiment_id, time.time())
        if stopped is None:
            raise NotFoundError("experiment", experiment_id)
        self.refresh()
        return stopped

    def get(self, experiment_id: str) -> Experiment:
        experiment = self.store.experiment(experiment_id)
        if experiment is None:
            raise NotFoundError("experiment", experiment_id)
        return experiment

    def results(self, experiment: Experiment) -> list[dict]:
        counts = self.store.variant_counts(experiment, self._settings.attribution_window_seconds,
                                           TRAFFIC_BUCKET_SECONDS)
        shares = dict(zip((v.name for v in experiment.variants), self.shares(experiment, counts).tolist()))
        return variant_results(counts, experiment.control, experiment.reward, shares)
