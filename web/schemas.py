"""Pydantic models for every query string and JSON body of the HTTP API (docs/api-contract.md).

The models hold all input rules, so the views never check a value by hand. Body fields are strict
(a JSON `true` is not a rating, `"5"` is not a number); query strings arrive as text, so their
numbers are parsed from decimal strings. `count` is bounded by the settings, which the views pass
as validation context: `Model.model_validate(data, context={"settings": settings})`.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from recommenders import registry
from recommenders.business_rules import CAP_FIELDS, ItemFilter
from recommenders.engine import anonymous_case
from recommenders.records import EventType, ItemRecord, RuleKind, RuleRecord

ID_PATTERN = r"^[A-Za-z0-9_.:@+-]+$"  # ASCII: ids travel in URL paths


def _int_id_to_str(value: Any) -> Any:
    """JSON integers are accepted as ids and mean their decimal text; booleans are not integers here."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _iso_to_unix(value: Any) -> Any:
    """ISO 8601 text becomes Unix seconds (a time without zone is UTC); numbers pass through."""
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return value


def _not_far_ahead(value: float, info: ValidationInfo) -> float:
    """Refuse a time further ahead than TIMESTAMP_MAX_FUTURE_SECONDS: trending favours newer events, so
    one event dated a month ahead would outrank a day of real activity."""
    tolerance = info.context["settings"].timestamp_max_future_seconds
    if value > time.time() + tolerance:
        raise ValueError(f"timestamp is more than {tolerance:g} seconds in the future")
    return value


def _count_or_default(value: Any, info: ValidationInfo) -> Any:
    """A missing count means the configured default."""
    return info.context["settings"].default_count if value is None else value


def _at_most_max_count(value: int, info: ValidationInfo) -> int:
    limit = info.context["settings"].max_count
    if value > limit:
        raise ValueError(f"count must be at most {limit}")
    return value


Id = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=64, pattern=ID_PATTERN),
    BeforeValidator(_int_id_to_str),
]
Rating = Annotated[float, Field(strict=True, ge=1, le=5, allow_inf_nan=False)]
LATEST_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z, the last instant a datetime can hold
Timestamp = Annotated[float, Field(strict=True, ge=0, le=LATEST_TIMESTAMP, allow_inf_nan=False),
                      BeforeValidator(_iso_to_unix), AfterValidator(_not_far_ahead)]
Count = Annotated[int, Field(ge=1), BeforeValidator(_count_or_default), AfterValidator(_at_most_max_count)]
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the store
Category = Annotated[str, Field(strict=True, min_length=1, max_length=64, pattern=NO_NUL)]
Text = Annotated[str, Field(strict=True, max_length=2000, pattern=NO_NUL)]
BehaviourEvent = Annotated[Literal["view", "add_to_cart", "purchase"], AfterValidator(EventType)]
# The id of a served list (an answer's recommendation_id): an unknown one is stored as is, not refused.
RecommendationId = Annotated[str, Field(strict=True, min_length=1, max_length=64, pattern=ID_PATTERN)]
Revenue = Annotated[float, Field(strict=True, ge=0, le=1e12, allow_inf_nan=False)]
VALUED_EVENTS = (EventType.ADD_TO_CART, EventType.PURCHASE)


def _value_only_when_valued(value: float | None, info: ValidationInfo) -> float | None:
    """Revenue belongs to an add_to_cart or a purchase; on a view or a rating it is a client bug."""
    event_type = info.data.get("event_type")  # absent when itself invalid (reported already)
    if value is not None and event_type is not None and event_type not in VALUED_EVENTS:
        raise ValueError('value is only allowed when event_type is "add_to_cart" or "purchase"')
    return value


def _known_case(case: str) -> str:
    """Cases come from the recommender registry, so one registered later is accepted too."""
    if case not in registry.cases():
        raise ValueError(f"case must be one of: {', '.join(registry.cases())}")
    return case


Case = Annotated[str, Field(strict=True), AfterValidator(_known_case),
                 WithJsonSchema({"type": "string", "enum": list(registry.cases())})]
HybridMethod = Literal["weighted", "adaptive", "switching"]  # recommenders/hybrid.py METHODS; weighted is the default


def method_only_with_hybrid(method: str | None, info: ValidationInfo) -> str | None:
    """A method chooses how the hybrid blends; with another case it would be silently ignored."""
    if method is not None and info.data.get("case", "hybrid") != "hybrid":
        raise ValueError("method applies only to case=hybrid")
    return method


class QueryModel(BaseModel):
    """Query strings: unknown parameters are ignored, as HTTP clients add their own (cache busters)."""

    model_config = ConfigDict(frozen=True)


class BodyModel(BaseModel):
    """JSON bodies: an unknown field is a client bug worth reporting, not something to drop."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CountQuery(QueryModel):
    count: Count = Field(default=None, validate_default=True)


MAX_FILTER_CATEGORIES = 50


def _split_list(value: Any) -> Any:
    """"books,kitchen" -> ("books", "kitchen"), sorted and without repeats (so equal filters cache alike)."""
    return tuple(sorted(set(value.split(",")))) if isinstance(value, str) else value


CategoryList = Annotated[
    tuple[Category, ...], Field(max_length=MAX_FILTER_CATEGORIES), BeforeValidator(_split_list),
    WithJsonSchema({"type": "string", "pattern": r"^[^,\x00]{1,64}(,[^,\x00]{1,64})*$",
                    "description": f"comma-separated categories, at most {MAX_FILTER_CATEGORIES}; an unknown one "
                                   "matches nothing"})]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ListQuery(CountQuery):
    """Every route that answers a ranked list takes these filters; they apply before the top-k, so the
    list is still `count` long when enough items pass. Items without a price fail any price bound."""

    categories: CategoryList | None = None  # only these categories
    exclude_categories: CategoryList | None = None
    min_price: Price | None = None
    max_price: Price | None = None
    available_only: bool = True  # "false" lets unavailable items in (never banned ones)

    @model_validator(mode="after")
    def _price_range(self) -> "ListQuery":
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError("min_price must not be above max_price")
        return self

    @cached_property
    def item_filter(self) -> ItemFilter:
        """Built once per model: parse_query keeps validated models, so a repeated query reuses it."""
        return ItemFilter(self.categories, self.exclude_categories or (), self.min_price, self.max_price,
                          self.available_only)


class UserRecommendationsQuery(ListQuery):
    user_id: Id


class RecommendQuery(ListQuery):
    """GET /recommend. Field order matters: the checks on method and user_id read case and product_id."""

    case: Case = "hybrid"
    product_id: Id | None = None
    category: Category | None = None
    method: HybridMethod | None = None
    user_id: Id | None = Field(default=None, validate_default=True)

    _method_only_with_hybrid = field_validator("method")(method_only_with_hybrid)

    @field_validator("user_id")
    @classmethod
    def _user_needed_unless_anonymous_case(cls, user_id: str | None, info: ValidationInfo) -> str | None:
        case = info.data.get("case")
        if user_id is None and case is not None and not anonymous_case(case, info.data.get("product_id")):
            raise ValueError("user_id is required unless case=popular, or a single recommender's case "
                             "(content_based, ...) with a product_id")
        return user_id


class RealtimeQuery(ListQuery):
    user_id: Id
    product_id: Id | None = None
    event_type: BehaviourEvent = EventType.VIEW


class SimilarQuery(ListQuery):
    item_id: Id


class PopularQuery(ListQuery):
    category: Category | None = None
    trending: bool = False  # "true"/"false"/"1"/"0": favour recent activity (a time-decayed count)


class ItemsQuery(QueryModel):
    category: Category | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10**9)  # larger overflows the database's integer


class ItemPath(QueryModel):
    item_id: Id


class UserPath(QueryModel):
    user_id: Id


class InteractionBody(BodyModel):
    """POST /interactions. A rating comes with, and only with, event_type "rating"."""

    user_id: Id
    item_id: Id
    event_type: EventType = EventType.RATING
    timestamp: Timestamp | None = None
    event_id: Id | None = None
    rating: Rating | None = Field(default=None, validate_default=True)
    recommendation_id: RecommendationId | None = None
    value: Revenue | None = None

    _value_only_when_valued = field_validator("value")(_value_only_when_valued)

    @field_validator("rating")
    @classmethod
    def _rating_iff_rating_event(cls, rating: float | None, info: ValidationInfo) -> float | None:
        event_type = info.data.get("event_type")  # absent when itself invalid (reported already)
        if event_type is EventType.RATING and rating is None:
            raise ValueError('rating is required when event_type is "rating"')
        if event_type is not None and event_type is not EventType.RATING and rating is not None:
            raise ValueError('rating is only allowed when event_type is "rating"')
        return rating


class EventBody(BodyModel):
    """POST /event: behavioural events only; ratings go through /interactions."""

    user_id: Id
    product_id: Id
    event_type: BehaviourEvent
    timestamp: Timestamp | None = None
    event_id: Id | None = None
    recommendation_id: RecommendationId | None = None
    value: Revenue | None = None

    _value_only_when_valued = field_validator("value")(_value_only_when_valued)


ItemName = Annotated[str, Field(strict=True, min_length=1, max_length=200, pattern=NO_NUL)]
ItemCategory = Annotated[str, Field(strict=True, max_length=64, pattern=NO_NUL)]
Brand = Annotated[str, Field(strict=True, max_length=100, pattern=NO_NUL)]
Tags = Annotated[list[Annotated[str, Field(strict=True, min_length=1, max_length=64, pattern=NO_NUL)]],
                 Field(max_length=50)]
ItemPrice = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
SAFE_INTEGER = 2**53  # integers JSON readers everywhere (JavaScript included) hold exactly


def _not_an_integer(value: Any) -> Any:
    """A larger integer must not come back as a rounded float: refuse it instead."""
    if isinstance(value, int):
        raise ValueError(f"integers must be within +-{SAFE_INTEGER}")
    return value


AttributeValue = (Annotated[str, Field(strict=True, max_length=200, pattern=NO_NUL)] | Annotated[bool, Field(strict=True)]
                  | Annotated[int, Field(strict=True, ge=-SAFE_INTEGER, le=SAFE_INTEGER)]
                  | Annotated[float, Field(strict=True, allow_inf_nan=False), BeforeValidator(_not_an_integer)]
                  | None)
# The shop's own fields (colour, size, season...): flat, so each stays one value a rule could name.
Attributes = Annotated[dict[Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)], AttributeValue],
                       Field(max_length=50)]


class ItemBody(BodyModel):
    """POST /items: the whole item. An existing item is replaced: a field left out gets its default
    (PATCH /items/<id> changes only the fields it names)."""

    item_id: Id
    name: ItemName
    category: ItemCategory = ""
    brand: Brand = ""
    description: Text = ""
    tags: Tags = []
    price: ItemPrice | None = None
    available: Annotated[bool, Field(strict=True)] = True
    attributes: Attributes = {}

    def to_record(self) -> ItemRecord:
        return ItemRecord(**{**self.model_dump(), "tags": tuple(self.tags),
                             "attributes": tuple(sorted(self.attributes.items()))})


def _unchanged() -> Any:
    """A PATCH field left out keeps the item's value: no default to document, and null is not a value."""
    return Field(None, json_schema_extra=lambda schema: schema.pop("default"))


class ItemPatchBody(BodyModel):
    """PATCH /items/<id>: only the fields given change (`attributes` as a whole); at least one."""

    name: ItemName = _unchanged()
    category: ItemCategory = _unchanged()
    brand: Brand = _unchanged()
    description: Text = _unchanged()
    tags: Tags = _unchanged()
    price: ItemPrice | None = _unchanged()
    available: Annotated[bool, Field(strict=True)] = _unchanged()
    attributes: Attributes = _unchanged()

    @model_validator(mode="after")
    def _something_to_change(self) -> "ItemPatchBody":
        if not self.model_fields_set:
            raise ValueError("name at least one field to change")
        return self

    def changes(self) -> dict[str, Any]:
        """The given fields as ItemRecord values."""
        given = {name: getattr(self, name) for name in self.model_fields_set}
        if "tags" in given:
            given["tags"] = tuple(given["tags"])
        if "attributes" in given:
            given["attributes"] = tuple(sorted(given["attributes"].items()))
        return given


class UserBody(BodyModel):
    user_id: Id


class SubscriptionMessage(BodyModel):
    """`register_user` / `unregister_user` over Socket.IO."""

    user_id: Id
    # from POST /auth/token; required to register when an API key is configured
    token: Annotated[str, Field(strict=True, max_length=1024)] | None = None


RuleItems = Annotated[list[Id], Field(min_length=1, max_length=1000)]


class BanRule(BodyModel):
    """Never recommend these items (in any list, whatever the filters)."""

    type: Literal["ban"]
    items: RuleItems

    def to_record(self) -> RuleRecord:
        return RuleRecord("", RuleKind.BAN, items=tuple(dict.fromkeys(self.items)))


class BoostRule(BodyModel):
    """Multiply these items' scores by `factor` until `until` (ISO 8601 or Unix seconds; none: no end)."""

    type: Literal["boost"]
    items: RuleItems
    factor: Annotated[float, Field(strict=True, gt=0, le=1000, allow_inf_nan=False)]
    until: Annotated[float, Field(strict=True, ge=0, le=LATEST_TIMESTAMP, allow_inf_nan=False),
                     BeforeValidator(_iso_to_unix)] | None = None

    def to_record(self) -> RuleRecord:
        return RuleRecord("", RuleKind.BOOST, items=tuple(dict.fromkeys(self.items)), factor=self.factor,
                          until=self.until)


class CapRule(BodyModel):
    """At most `limit` items of one brand (or category) in any list; items without one are not capped."""

    type: Literal["cap"]
    field: Literal[CAP_FIELDS]
    limit: Annotated[int, Field(strict=True, ge=1, le=100)]

    def to_record(self) -> RuleRecord:
        return RuleRecord("", RuleKind.CAP, field=self.field, limit=self.limit)


class RuleBody(RootModel[Annotated[BanRule | BoostRule | CapRule, Field(discriminator="type")]]):
    """POST /rules: one standing rule, by `type`."""

    def to_record(self) -> RuleRecord:
        return self.root.to_record()


class RulePath(QueryModel):
    rule_id: Annotated[str, Field(strict=True, min_length=1, max_length=64, pattern=ID_PATTERN)]
