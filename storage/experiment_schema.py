"""The tables of experiments and impressions (served lists). Only storage/ imports this.

Impressions are written in batches by the service's impression log. `impression_items` repeats the
user and time of its list, so attributing an event (the user, the item, the time) is one index lookup.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, Integer, String, column
from sqlalchemy.orm import Mapped, mapped_column

from storage.schema import Base


class ExperimentRow(Base):
    __tablename__ = "experiments"
    __table_args__ = (CheckConstraint(column("status").in_(["running", "stopped"]), name="ck_experiments_status"),)

    experiment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    allocation: Mapped[str] = mapped_column(String(16))
    reward: Mapped[str] = mapped_column(String(16))
    control: Mapped[str] = mapped_column(String(64))
    variants: Mapped[list[dict]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    # 1 while running, NULL once stopped: unique, so two processes cannot both start one at once
    # (NULLs never collide on SQLite or PostgreSQL).
    running_slot: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]


class ImpressionRow(Base):
    __tablename__ = "impressions"
    __table_args__ = (Index("ix_impressions_experiment", "experiment_id", "variant"),)

    recommendation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(64))  # None: an anonymous list (GET /recommend)
    surface: Mapped[str] = mapped_column(String(16))
    case: Mapped[str | None] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(16))
    experiment_id: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str | None] = mapped_column(String(64))
    item_count: Mapped[int] = mapped_column(Integer)
    shown_at: Mapped[datetime]


class ImpressionItemRow(Base):
    __tablename__ = "impression_items"
    __table_args__ = (Index("ix_impression_items_user_item_time", "user_id", "item_id", "shown_at"),
                      Index("ix_impression_items_item", "item_id"))

    recommendation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0 = first in the list
    item_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    shown_at: Mapped[datetime]




class ItemImpressionCount(Base):
    """How often each item was shown, kept up by every impression batch: item-level exploration picks
    the least shown items from it without counting impression_items."""

    __tablename__ = "item_impressions"

    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    impressions: Mapped[int] = mapped_column(BigInteger)
