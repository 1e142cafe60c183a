"""Pydantic models of what the experiment routes answer, for the OpenAPI document (like web/responses.py)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from experiments.records import ALLOCATIONS, REWARDS
from web.responses import Answer
from web.schemas import HybridMethod

Interval = Annotated[list[float], Field(min_length=2, max_length=2, description="[low, high], 95%")]


class TierWeights(Answer):
    new: float
    experienced: float
    heavy: float


class VariantDefinition(Answer):
    name: str
    share: float
    case: str
    method: HybridMethod | None
    exploration: float | None
    hybrid_weights: TierWeights | None
    collaborative_weights: dict[str, float] | None


class ExperimentSummary(Answer):
    experiment_id: str
    name: str
    allocation: Literal[ALLOCATIONS]
    reward: Literal[REWARDS]
    control: str
    status: Literal["running", "stopped"]
    created_at: float = Field(description="Unix seconds")
    stopped_at: float | None
    variants: list[VariantDefinition]


class ExperimentList(Answer):
    experiments: list[ExperimentSummary] = Field(description="newest first")


class TrafficBucket(Answer):
    start: float = Field(description="Unix seconds, the start of a minute")
    impressions: int


class VariantResult(Answer):
    name: str
    share: float | None = Field(description='the share of users now: configured, or for "thompson" the arm\'s '
                                            'posterior chance of being the best')
    users: int
    impressions: int
    clicks: int = Field(description="impressions with at least one attributed event on a shown item")
    ctr: float | None
    ctr_ci: Interval | None = Field(description="Wilson score interval")
    conversions: int = Field(description="impressions with at least one attributed purchase")
    conversion_rate: float | None
    conversion_rate_ci: Interval | None
    revenue: float = Field(description="the value of the attributed purchases")
    revenue_per_impression: float | None
    revenue_per_impression_ci: Interval | None = Field(description="Student t interval")
    lift: float | None = Field(description="the reward's rate over the control's, minus 1; null for the control")
    p_value: float | None = Field(description="two-sided, the reward's rate against the control's (chi-squared, "
                                              "or Fisher's exact test on small counts); null for the control")
    traffic: list[TrafficBucket] = Field(description="impressions per minute")


class ExperimentResult(ExperimentSummary):
    attribution_window_seconds: float
    variants: list[VariantResult]  # type: ignore[assignment]
