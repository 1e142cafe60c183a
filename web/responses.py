"""Pydantic models of what the routes answer, for the OpenAPI document (web/openapi.py).

The views build plain dicts (cheaper on the hot path); these models only describe them. They are
closed (`additionalProperties: false`), so a field a view adds without documenting it here fails
the schemathesis test in test/test_openapi.py instead of drifting silently. Open (extra keys allowed)
are only /health and /stats, whose counters grow with the service, and a recommendation, which may
carry strategy-specific extras.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recommenders.records import EventType
from web.schemas import BehaviourEvent, Case, HybridMethod

Source = Literal["cache", "computed"]
RECOMMENDATION_ID = ("the id of this served list: send it with the events it leads to (POST /event, "
                     "POST /interactions) so they are attributed to it")
_FULL_STATS = "when the server has no API_KEY, or the request carries it"
ResponseTime = Annotated[str, Field(pattern=r"^\d+\.\d{2}$", description='milliseconds, two decimals ("1.23")')]


def _absent_unless(condition: str) -> Any:
    """A key the answer leaves out (never sends as null) unless `condition` holds."""
    return Field(None, description=f"present only {condition}", json_schema_extra=lambda schema: schema.pop("default"))


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(Answer):
    field: str = Field(description='dotted path of the offending input, or "body" / "query" for a check across its fields')
    message: str


class ErrorBody(Answer):
    """Every 4xx answer (web/errors.py)."""

    error: str = Field(description="machine-readable code: not_found, validation_error, ...")
    message: str
    details: list[ErrorDetail] = _absent_unless("on validation errors, one entry per field")


class Recommendation(OpenAnswer):
    """Open: docs/api-contract.md allows strategy-specific extra fields."""

    item: str
    score: float
    strategy: str
    reason: str
    predicted_rating: float = _absent_unless("for collaborative recommendations of a known user")


class Served(Answer):
    """The fields naming a served list (logged as an impression), and the user's experiment variant."""

    recommendation_id: str = Field(description=RECOMMENDATION_ID)
    experiment_id: str = _absent_unless("when the user is in the running experiment")
    variant: str = _absent_unless("when the user is in the running experiment: the variant that served the list")


class UserRecommendations(Served):
    recommendations: list[Recommendation]
    user_id: str
    source: Source
    response_time_ms: ResponseTime


class CaseRecommendations(Served):
    user_id: str | None
    case: Case
    method: HybridMethod | None
    product_id: str | None
    recommendations: list[Recommendation]
    source: Source
    response_time_ms: ResponseTime


class RealtimeRecommendations(Served):
    user_id: str
    product_id: str | None
    event_type: BehaviourEvent
    recommendations: list[Recommendation]
    source: Source
    response_time_ms: ResponseTime


class SimilarItems(Answer):
    item_id: str
    similar: list[Recommendation]
    source: Source
    response_time_ms: ResponseTime


class PopularItems(Answer):
    items: list[Recommendation]
    category: str | None
    trending: bool
    source: Source
    response_time_ms: ResponseTime


class InteractionRecorded(Answer):
    """Echoes the stored interaction: an event_id replay answers with the first recording."""

    user_id: str
    item_id: str
    rating: float | None
    event_type: EventType
    status: Literal["recorded"]
    cache_invalidated: bool
    response_time_ms: ResponseTime


class EventRecorded(Served):
    status: Literal["recorded"]
    user_id: str
    product_id: str
    event_type: BehaviourEvent
    recommendations: list[Recommendation]
    response_time_ms: ResponseTime


class Item(Answer):
    item_id: str
    name: str
    category: str
    brand: str
    description: str
    tags: list[str]
    price: float | None
    available: bool = Field(description="false: no list shows it unless a request sets available_only=false")
    attributes: dict[str, str | int | float | bool | None]


class ItemPage(Answer):
    items: list[Item]
    total: int = Field(description="items matching the filter, over all pages")


class ItemSaved(Answer):
    item: Item
    status: Literal["created", "updated"]


class CategoryCount(Answer):
    name: str
    count: int


class Categories(Answer):
    categories: list[CategoryCount]


class UserSaved(Answer):
    user_id: str
    status: Literal["created", "exists"]


class UserDeleted(Answer):
    user_id: str
    status: Literal["deleted"]


class TokenIssued(Answer):
    user_id: str
    token: str = Field(description="send it with register_user over Socket.IO")
    expires_in: int = Field(description="seconds")


class HistoryEntry(Answer):
    item_id: str
    event_type: EventType
    rating: float | None
    timestamp: float = Field(description="Unix seconds")


class CategoryWeight(Answer):
    name: str
    weight: float


class UserProfile(Answer):
    user_id: str
    created_at: float = Field(description="Unix seconds")
    interactions: int
    history: list[HistoryEntry] = Field(description="the newest 20 events")
    top_categories: list[CategoryWeight]


class Health(OpenAnswer):
    status: Literal["ok", "degraded"] = Field(description='the answer is 503 unless "ok": the store cannot be '
                                                          'read or cannot commit')
    store: Literal["ok", "unreachable", "cannot_commit"] = Field(
        description='"cannot_commit": reads work but a write probe fails (a full disk, a read-only database)')
    redis: Literal["ok", "unreachable", "not_configured"] = Field(
        description='"unreachable" keeps the answer 200: answers are cached in this process until Redis is back')
    reasons: list[str] = Field(description="what is wrong, one line per part; empty when all is well")
    model: dict[str, Any]
    uptime_seconds: float


class Liveness(Answer):
    status: Literal["alive"]


class CacheStats(Answer):
    hits: int
    misses: int
    hit_rate: float
    size: int
    max_size: int | None = Field(description="null with the Redis cache")
    ttl_seconds: int


class EndpointTiming(Answer):
    count: int
    avg_ms: float
    p50_ms: float
    p99_ms: float


class Stats(OpenAnswer):
    """With API_KEY set, a request without the key gets the summary only: cache and requests (web/auth.py)."""

    cache: dict[str, CacheStats] = Field(description="per kind of cached answer")
    requests: dict[str, EndpointTiming] = Field(description='per route, keyed "METHOD /rule"')
    engine: dict[str, Any] = _absent_unless(_FULL_STATS)
    store: dict[str, Any] = _absent_unless(_FULL_STATS)
    realtime: dict[str, Any] = _absent_unless(_FULL_STATS)
    jobs: dict[str, Any] = _absent_unless(_FULL_STATS)
    experiments: dict[str, Any] = _absent_unless(f"{_FULL_STATS}: the running experiment and this process's "
                                                 "impression log (pending, written, dropped)")


class Rule(Answer):
    """A standing rule; the fields besides rule_id, type and created_at are those of its type."""

    rule_id: str
    type: Literal["ban", "boost", "cap"]
    items: list[str] = _absent_unless('for "ban" and "boost"')
    factor: float = _absent_unless('for "boost"')
    until: float | None = _absent_unless('for "boost": Unix seconds, null for no end')
    field: Literal["brand", "category"] = _absent_unless('for "cap"')
    limit: int = _absent_unless('for "cap"')
    created_at: float = Field(description="Unix seconds")


class Rules(Answer):
    rules: list[Rule] = Field(description="the rules in force, oldest first")


class RuleDeleted(Answer):
    rule_id: str
    status: Literal["deleted"]
