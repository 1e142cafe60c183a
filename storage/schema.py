"""The database tables. Only storage/ imports this: the rest of the app sees plain records."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    column,
    false,
    or_,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from recommenders.records import EventType, LogKind


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend: SQLite drops the zone, so naive values read back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, str: String}


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]


class Item(Base):
    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str]
    category: Mapped[str] = mapped_column(index=True)
    brand: Mapped[str]
    description: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON)
    price: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime]
    # Added later (storage/upgrade.py adds them to older stores): hence the server default and the null.
    available: Mapped[bool] = mapped_column(Boolean, server_default=true())
    attributes: Mapped[dict | None] = mapped_column(JSON)


class Interaction(Base):
    """The events of the log: EVENT entries, whose `seq` comes from the log's one counter."""

    __tablename__ = "interactions"
    __table_args__ = (
        # Built from EventType so the enum and the constraint cannot drift apart.
        CheckConstraint(
            column("event_type").in_([e.value for e in EventType]), name="ck_interactions_event_type"
        ),
        CheckConstraint(
            or_(column("rating").is_(None), column("rating").between(1, 5)), name="ck_interactions_rating"
        ),
        Index("ix_interactions_user_seq", "user_id", "seq"),
    )

    # Assigned from log_position, never by the database. Databases created before the log kept
    # their AUTOINCREMENT / BIGSERIAL column, which takes explicit values just as well. On SQLite
    # an INTEGER primary key is the rowid, so the table stays stored in seq order as it was.
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    event_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(String(64), ForeignKey("users.user_id"))
    item_id: Mapped[str] = mapped_column(String(64), ForeignKey("items.item_id"))
    event_type: Mapped[str] = mapped_column(String(16))
    rating: Mapped[float | None] = mapped_column(Float)
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    # The served list the event came from (GET /experiments attributes by it) and the revenue of an
    # add_to_cart or purchase; added after the first release, hence nullable (storage/upgrade.py).
    recommendation_id: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)


class ModelCheckpoint(Base):
    """A log position to fit through. The next start fits the model on the log up to the latest one
    and replays the events after it through the live update path, so a restart rebuilds exactly the
    state the last process had. A fit records one; a bulk load records one at its end, so the next
    start fits the loaded rows in one go instead of replaying them one by one (fit_seconds 0)."""

    __tablename__ = "model_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fitted_through_seq: Mapped[int] = mapped_column(BigInteger)
    fit_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]


class LogPosition(Base):
    """The log's sequence counter (one row, id 1), shared by events and changes.

    A writer bumps it before its other writes and holds the row lock to commit, so on PostgreSQL
    writers commit in seq order and every seq up to `last_seq` is already visible.
    """

    __tablename__ = "log_position"
    __table_args__ = (CheckConstraint(column("id") == 1, name="ck_log_position_one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class LogChange(Base):
    """The log's entries other than events: an item created or edited, a user deleted (`key` is the
    item_id or user_id). The entry names what changed; readers take its current state."""

    __tablename__ = "log_changes"
    __table_args__ = (
        CheckConstraint(
            column("kind").in_([kind.value for kind in LogKind if kind not in (LogKind.EVENT, LogKind.RULE)]),
            name="ck_log_changes_kind",
        ),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime]


class Rule(Base):
    """Standing business rules. Like an event, a rule is its own log entry: `seq` comes from the log's
    counter, at creation and again at deletion (which keeps the row, `deleted` set), so every process
    applying the log learns both. Its own table rather than a log_changes kind: that table's kind
    constraint would refuse a new kind in a store created before rules existed."""

    __tablename__ = "rules"

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict] = mapped_column(JSON)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime]
