"""Pydantic models of what the experiment routes take (web/experiments.py), like web/schemas.py."""
from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from experiments.records import ALLOCATIONS, HYBRID_TIERS, REWARDS, Variant
from recommenders import registry
from web.schemas import NO_NUL, BodyModel, Case, HybridMethod, Id, QueryModel, method_only_with_hybrid

Share = Annotated[float, Field(strict=True, gt=0, le=1, allow_inf_nan=False)]
Fraction = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
SHARE_TOLERANCE = 1e-6  # 1/3 + 1/3 + 1/3 is not exactly 1 in floating point


class HybridWeightsBody(BodyModel):
    """The collaborative share of the "weighted" hybrid per history size; content gets the rest."""

    new: Fraction
    experienced: Fraction
    heavy: Fraction


class VariantBody(BodyModel):
    name: Id
    share: Share | None = Field(None, description='required with allocation "fixed"; with "thompson" it is the '
                                                  'starting share, equal when left out')
    case: Case = "hybrid"
    method: HybridMethod | None = None
    exploration: Fraction | None = Field(None, description="share of the list's slots given to the least shown "
                                                           "items; default EXPLORATION_WEIGHT")
    hybrid_weights: HybridWeightsBody | None = Field(None, description='only with case "hybrid" and method "weighted" '
                                                                   '(the default): HYBRID_COLLABORATIVE_* for this variant')

    collaborative_weights: dict[str, Fraction] | None = Field(
        None, description='with case "hybrid" or "collaborative": COLLABORATIVE_WEIGHT_<name> for this variant, '
                          'by collaborative recommender (user_based, ease, als, ...); the others keep theirs')

    _method_only_with_hybrid = field_validator("method")(method_only_with_hybrid)

    @field_validator("collaborative_weights")
    @classmethod
    def _known_parts_of_a_collaborative_case(cls, weights: dict[str, float] | None,
                                             info: ValidationInfo) -> dict[str, float] | None:
        if weights is None:
            return None
        if info.data.get("case") not in ("hybrid", registry.COLLABORATIVE):
            raise ValueError('collaborative_weights apply only to case "hybrid" or "collaborative"')
        known = registry.collaborative_weights()
        unknown = sorted(set(weights) - set(known))
        if unknown:
            raise ValueError(f"no collaborative recommender is named {', '.join(unknown)} (known: {', '.join(known)})")
        if not any({**registry.collaborative_weights(info.context["settings"].collaborative_weights), **weights}.values()):
            raise ValueError("collaborative_weights leave every collaborative recommender at 0")
        return weights

    @field_validator("hybrid_weights")
    @classmethod
    def _weights_only_with_weighted_hybrid(cls, weights: HybridWeightsBody | None,
                                           info: ValidationInfo) -> HybridWeightsBody | None:
        if weights is not None and (info.data.get("case") != "hybrid"
                                    or info.data.get("method") not in (None, "weighted")):
            raise ValueError('hybrid_weights apply only to case "hybrid" with method "weighted"')
        return weights


class ExperimentBody(BodyModel):
    """POST /experiments. The control is `control` if given, else the first variant."""

    name: Annotated[str, Field(strict=True, min_length=1, max_length=200, pattern=NO_NUL)]
    allocation: Literal[ALLOCATIONS] = "fixed"
    reward: Literal[REWARDS] = Field("click", description='"click": any attributed event on a shown item; '
                                                         '"purchase": an attributed purchase')
    control: Id | None = None
    variants: Annotated[list[VariantBody], Field(min_length=2, max_length=10)]

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentBody":
        names = [variant.name for variant in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if self.control is not None and self.control not in names:
            raise ValueError(f"control '{self.control}' is not one of the variants")
        shares = [variant.share for variant in self.variants]
        if self.allocation == "fixed" and None in shares:
            raise ValueError('every variant needs a share with allocation "fixed"')
        if None not in shares and not math.isclose(sum(shares), 1.0, abs_tol=SHARE_TOLERANCE):
            raise ValueError(f"shares must sum to 1, not {sum(shares):g}")
        if self.allocation == "thompson" and None in shares and any(share is not None for share in shares):
            raise ValueError('with allocation "thompson" give every variant a share, or none')
        return self

    def to_variants(self) -> tuple[Variant, ...]:
        equal = 1.0 / len(self.variants)
        return tuple(Variant(v.name, equal if v.share is None else v.share, v.case, v.method, v.exploration,
                             v.hybrid_weights and tuple(getattr(v.hybrid_weights, tier) for tier in HYBRID_TIERS),
                             v.collaborative_weights and tuple(sorted(v.collaborative_weights.items())))
                     for v in self.variants)

    @property
    def control_name(self) -> str:
        return self.control or self.variants[0].name


class ExperimentPath(QueryModel):
    experiment_id: Id
