"""The registry of recommender components: the one list everything else is derived from.

The engine fits, folds in, forgets, saves and loads every registered component; the hybrid's
collaborative blend takes the components registered in the "collaborative" group, with their
default weights (overridden by COLLABORATIVE_WEIGHT_<NAME>); the API's `case` names, the offline
evaluation's model list and the weight tuning all read it. Adding a recommender is one file with
a `Recommender` subclass plus one `register(...)` call (see test/test_recommender_contract.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from recommenders.base import Recommender
from recommenders.collaborative import ItemBasedRecommender, UserBasedRecommender
from recommenders.content_based import ContentRecommender
from recommenders.ease import EaseRecommender
from recommenders.event_based import EventBasedRecommender
from recommenders.matrix_factorization import ALSRecommender, SVDRatingModel
from recommenders.popular import PopularityRecommender, TrendingRecommender

COLLABORATIVE = "collaborative"


@dataclass(frozen=True)
class Registration:
    """One component: how to make it, and where it takes part.

    `group` "collaborative" puts it in the collaborative blend with `weight`; `case` is the name
    under which GET /recommend serves it alone (None: it serves only inside blends or as a helper).
    `scales` False: its fit needs the whole problem in one process's memory (a dense items x items
    solve, all users' neighbours), so trainers leave it out above UNSCALABLE_MAX_ITEMS (`left_out`).
    """

    name: str
    factory: Callable[[], Recommender]
    group: str | None = None
    weight: float = 0.0
    case: str | None = None
    scales: bool = True


_REGISTRY: dict[str, Registration] = {}


def register(registration: Registration) -> Registration:
    if registration.name in _REGISTRY:
        raise ValueError(f"a recommender named '{registration.name}' is already registered")
    _REGISTRY[registration.name] = registration
    return registration


def unregister(name: str) -> None:
    del _REGISTRY[name]


@contextmanager
def registered(registration: Registration) -> Iterator[Registration]:
    """Register for the duration of a block (tests, experiments)."""
    register(registration)
    try:
        yield registration
    finally:
        unregister(registration.name)


def registrations() -> dict[str, Registration]:
    return dict(_REGISTRY)


def component_class(name: str) -> type[Recommender]:
    """The class a registered name makes (what `load` is called on)."""
    return type(_REGISTRY[name].factory())


def left_out(n_items: int, max_items: int) -> list[str]:
    """The components a trainer leaves out of a catalog of `n_items`: those that do not scale, above `max_items`."""
    return [r.name for r in _REGISTRY.values() if not r.scales and n_items > max_items]


def collaborative_weights(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The collaborative group's weights: registered defaults, with configured overrides."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {r.name for r in _REGISTRY.values() if r.group == COLLABORATIVE})
    if unknown:
        raise ValueError(f"COLLABORATIVE_WEIGHT_* names no collaborative recommender: {', '.join(unknown)}")
    return {r.name: overrides.get(r.name, r.weight) for r in _REGISTRY.values() if r.group == COLLABORATIVE}


def single_cases() -> dict[str, str]:
    """API case name -> component name, for the components that serve alone."""
    return {r.case: r.name for r in _REGISTRY.values() if r.case}


def cases() -> tuple[str, ...]:
    """Every `case` GET /recommend accepts: the two blends, then one per serving component."""
    return ("hybrid", COLLABORATIVE, *single_cases())


for _registration in (
    # user-based neighbours: a users x items matrix and a dense row per user scored; EASE: a dense items x items inverse
    Registration("user_based", UserBasedRecommender, group=COLLABORATIVE, weight=0.4, scales=False),
    Registration("ease", EaseRecommender, group=COLLABORATIVE, weight=0.4, scales=False),
    Registration("als", ALSRecommender, group=COLLABORATIVE, weight=0.2),
    Registration("item_based", ItemBasedRecommender),  # similar items and explanations
    # predicted ratings; Surprise holds every rating in Python dicts of one process
    Registration("svd", SVDRatingModel, scales=False),
    Registration("content", ContentRecommender, case="content_based"),
    Registration("behavior", EventBasedRecommender, case="behavior_based"),
    Registration("popular", PopularityRecommender, case="popular"),
    Registration("trending", TrendingRecommender),
):
    register(_registration)
