"""Plain records passed between the store, the data loaders and the engine.

They are the narrow interface between the parts: the store returns them, the loaders produce
them, the engine consumes them. None of them knows about SQL or HTTP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

Scalar = str | int | float | bool | None


class EventType(str, Enum):
    """What a user did with an item."""

    RATING = "rating"
    VIEW = "view"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"


@dataclass(frozen=True)
class ItemRecord:
    """A catalog entry. `tags` is a tuple so the record stays hashable and immutable; so are `attributes`,
    the shop's free (key, scalar) pairs, sorted by key. An unavailable item is never recommended by default."""

    item_id: str
    name: str
    category: str = ""
    brand: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    price: float | None = None
    available: bool = True
    attributes: tuple[tuple[str, Scalar], ...] = ()

    def as_dict(self) -> dict:
        """The item as the API shows it and the store writes it (tags as a list, attributes as an object)."""
        return {"item_id": self.item_id, "name": self.name, "category": self.category, "brand": self.brand,
                "description": self.description, "tags": list(self.tags), "price": self.price,
                "available": self.available, "attributes": dict(self.attributes)}

    def text(self) -> str:
        """The free text the content model reads (category and brand are separate fields there)."""
        return " ".join([self.name, self.description, " ".join(self.tags)])


@dataclass(frozen=True)
class InteractionRecord:
    """One event. `rating` is set only for `EventType.RATING`; `timestamp` is Unix seconds.

    `seq` is the store's sequence number (0 until stored); `event_id` is the client's
    idempotency key, if it sent one. `recommendation_id` names the served list the event came from,
    `value` the revenue of an add_to_cart or purchase (both optional, for experiments).
    """

    user_id: str
    item_id: str
    event_type: EventType
    timestamp: float
    rating: float | None = None
    seq: int = 0
    event_id: str | None = None
    recommendation_id: str | None = None
    value: float | None = None


class LogKind(str, Enum):
    """What a log entry changes: an event, a catalog item (added or edited), or a deleted user."""

    EVENT = "event"
    ITEM = "item"
    FORGET_USER = "forget_user"
    RULE = "rule"  # a business rule set or deleted (the rules table holds its seq, not log_changes)


@dataclass(frozen=True)
class LogEntry:
    """One entry of the durable log, in `seq` order: what every server process applies, once each.

    EVENT entries carry the stored `event`; ITEM entries the item's current record; FORGET_USER
    entries the deleted user's id; RULE entries the rule as it is now (`deleted` once removed).
    """

    seq: int
    kind: LogKind
    event: InteractionRecord | None = None
    item: ItemRecord | None = None
    user_id: str | None = None
    rule: "RuleRecord | None" = None


class RuleKind(str, Enum):
    """A standing business rule: never show these items, boost these until a time, cap a brand or category."""

    BAN = "ban"
    BOOST = "boost"
    CAP = "cap"


@dataclass(frozen=True)
class RuleRecord:
    """One standing rule. BAN uses `items`; BOOST `items`, `factor` and `until` (Unix seconds, None =
    no end); CAP `field` ("brand" or "category") and `limit` (items per brand or category in a list)."""

    rule_id: str
    kind: RuleKind
    items: tuple[str, ...] = ()
    factor: float | None = None
    until: float | None = None
    field: str | None = None
    limit: int | None = None
    created_at: float = 0.0
    deleted: bool = False

    def as_dict(self) -> dict:
        """The rule as the API shows it (and the store keeps its parameters): only the fields of its kind."""
        shown = {RuleKind.BAN: ("items",), RuleKind.BOOST: ("items", "factor", "until"),
                 RuleKind.CAP: ("field", "limit")}[self.kind]
        values = {"items": list(self.items), "factor": self.factor, "until": self.until, "field": self.field,
                  "limit": self.limit}
        return {"rule_id": self.rule_id, "type": self.kind.value, **{name: values[name] for name in shown},
                "created_at": self.created_at}


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    created_at: float


@dataclass
class Recommendation:
    """One ranked item as the API shows it."""

    item: str
    score: float
    strategy: str
    extra: dict = field(default_factory=dict)
    _dict: dict | None = field(default=None, init=False, repr=False, compare=False)

    def as_dict(self) -> dict:
        """Built once (callers must not modify it): a cached list is served many times over."""
        if self._dict is None:
            self._dict = {"item": self.item, "score": round(float(self.score), 4), "strategy": self.strategy,
                          **self.extra}
        return self._dict
