"""Plain records of experiments and impressions, passed between the store and the service."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

ALLOCATIONS = ("fixed", "thompson")
REWARDS = ("click", "purchase")
HYBRID_TIERS = ("new", "experienced", "heavy")  # the history-size tiers of the "weighted" hybrid


@dataclass(frozen=True)
class Variant:
    """One arm: which recommender serves its users, and how much of the list explores new items.

    `exploration` None means the EXPLORATION_WEIGHT setting; `share` is the configured share of users
    (for "thompson" the starting share, before any reward is counted). `hybrid_weights` replaces the
    hybrid's collaborative share for new, experienced and heavy users (HYBRID_COLLABORATIVE_*), and
    `collaborative_weights` the weights of the named collaborative parts (COLLABORATIVE_WEIGHT_*).
    """

    name: str
    share: float
    case: str = "hybrid"
    method: str | None = None
    exploration: float | None = None
    hybrid_weights: tuple[float, float, float] | None = None
    collaborative_weights: tuple[tuple[str, float], ...] | None = None  # sorted by name

    def as_dict(self) -> dict:
        tiers = None if self.hybrid_weights is None else dict(zip(HYBRID_TIERS, self.hybrid_weights))
        parts = None if self.collaborative_weights is None else dict(self.collaborative_weights)
        return {"name": self.name, "share": self.share, "case": self.case, "method": self.method,
                "exploration": self.exploration, "hybrid_weights": tiers, "collaborative_weights": parts}

    @classmethod
    def from_dict(cls, fields: dict) -> "Variant":
        """The inverse of `as_dict` (a variant as the store keeps it)."""
        tiers, parts = fields.get("hybrid_weights"), fields.get("collaborative_weights")
        return cls(**{**fields, "hybrid_weights": None if tiers is None else tuple(tiers[t] for t in HYBRID_TIERS),
                      "collaborative_weights": None if parts is None else tuple(sorted(parts.items()))})

    @property
    def options(self) -> dict:
        """The keyword arguments of RecommendationService.recommendations that serve this variant."""
        return {"case": self.case, "method": self.method, "exploration": self.exploration,
                "hybrid_weights": self.hybrid_weights, "collaborative_weights": self.collaborative_weights}


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    allocation: str
    reward: str
    control: str
    variants: tuple[Variant, ...]
    status: str = "running"
    created_at: float = 0.0
    stopped_at: float | None = None

    def variant(self, name: str) -> Variant:
        return next(variant for variant in self.variants if variant.name == name)


class Impression(NamedTuple):
    """One served list: to whom, which items in order, by which recommender or variant, when.

    A named tuple: thousands a second are made, and a frozen dataclass costs ~2 us each to build."""

    recommendation_id: str
    user_id: str | None
    items: tuple[str, ...]
    surface: str  # the route or push that served it: recommendations, recommend, realtime, event, push
    case: str | None
    method: str | None
    shown_at: float
    experiment_id: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class VariantCounts:
    """What the store counted for one variant (attributed as the README's *Experiments* defines).

    `revenue` and `revenue_squares` sum each impression's attributed purchase value and its square,
    which is all a normal interval on revenue per impression needs.
    """

    name: str
    impressions: int = 0
    users: int = 0
    clicks: int = 0
    conversions: int = 0
    revenue: float = 0.0
    revenue_squares: float = 0.0
    traffic: list[tuple[float, int]] = field(default_factory=list)  # (bucket start, impressions) over time
