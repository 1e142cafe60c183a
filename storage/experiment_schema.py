"""The tables of experiments and impressions (served lists). Only storage/ imports this.

An impression is one row whose `items` are the list's item ids as a JSON array, in order: a row per
shown item made a batch write ~100 us a list (SQLAlchemy's per-row cost, 11 rows for 10 items),
competing with the requests for the interpreter; one row is 12-18 us (service/impressions.py).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, Integer, String, Text, column
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
    __table_args__ = (Index("ix_impressions_experiment", "experiment_id", "variant"),
                      Index("ix_impressions_user_time", "user_id", "shown_at"))

    recommendation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(64))  # None: an anonymous list (GET /recommend)
    surface: Mapped[str] = mapped_column(String(16))
    case: Mapped[str | None] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(16))
    experiment_id: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str | None] = mapped_column(String(64))
    items: Mapped[str] = mapped_column(Text)  # JSON array of item ids, first shown first
    shown_at: Mapped[datetime]




class ItemImpressionCount(Base):
    """How often each item was shown, kept up by every impression batch: item-level exploration picks
    the least shown items from it without counting impression_items."""

    __tablename__ = "item_impressions"

    item_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    impressions: Mapped[int] = mapped_column(BigInteger)
