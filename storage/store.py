"""The Store: the one narrow door to the database.

It takes and returns the plain records of recommenders/records.py, so nothing outside storage/
depends on SQLAlchemy. Timestamps are Unix-seconds floats in the records and aware UTC datetimes
in the database. All SQL is built with SQLAlchemy Core, hence parameterised.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from recommenders.records import EventType, InteractionRecord, ItemRecord, UserRecord
from storage.schema import Base, Interaction, Item, ModelCheckpoint, User

# Upserts need the dialect's INSERT ... ON CONFLICT; these are the backends the store supports.
_DIALECT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

# Per-connection settings, so they hold for every pooled connection, not just the first.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers do not block the writer
    "PRAGMA foreign_keys=ON",  # SQLite ignores foreign keys unless asked
    "PRAGMA busy_timeout=5000",  # concurrent writers wait instead of failing at once
    "PRAGMA synchronous=FULL",  # a recorded interaction survives a power cut
)

_ITEM_FIELDS = ("name", "category", "brand", "description", "tags", "price", "updated_at")

# Any fixed number: PostgreSQL advisory-lock key that every process agrees on.
_APPEND_LOCK_KEY = 0x5EC5_0002
_SCHEMA_LOCK_KEY = 0x5EC5_0001

_S = TypeVar("_S", bound=Select[Any])
_T = TypeVar("_T")


class UnknownItemError(LookupError):
    """An interaction named an item the catalog does not have (the API answers 404)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(f"unknown item: {item_id}")
        self.item_id = item_id


class Store:
    """Reads and writes users, items and the interaction log; safe to share between threads."""

    def __init__(self, url: str) -> None:
        self._engine = _create_engine(url)
        self._insert = _DIALECT_INSERTS[self._engine.dialect.name]
        with self._engine.begin() as conn:
            _lock_schema(conn)
            Base.metadata.create_all(conn)

    def close(self) -> None:
        self._engine.dispose()

    def ping(self) -> bool:
        """For health checks: False instead of an exception when the database is unreachable."""
        try:
            with self._engine.connect() as conn:
                return conn.execute(select(1)).scalar_one() == 1
        except SQLAlchemyError:
            return False

    # --- items ---

    def is_empty(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(Item.item_id).limit(1)).first() is None

    def upsert_item(self, item: ItemRecord) -> bool:
        """Insert-or-nothing, then update: tells created from updated even when two writers race."""
        row = _item_row(item, _utc_now())
        with self._engine.begin() as conn:
            insert_new = self._insert(Item).values(row).on_conflict_do_nothing(index_elements=[Item.item_id])
            created = conn.execute(insert_new.returning(Item.item_id)).first() is not None
            if not created:
                conn.execute(update(Item).where(Item.item_id == item.item_id).values(row))
        return created

    def upsert_items(self, items: Iterable[ItemRecord]) -> int:
        """Bulk upsert in one executemany; a repeated item_id counts once and its last version wins."""
        now = _utc_now()
        rows = list({item.item_id: _item_row(item, now) for item in items}.values())
        if not rows:
            return 0
        stmt = self._insert(Item)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Item.item_id], set_={name: stmt.excluded[name] for name in _ITEM_FIELDS}
        )
        with self._engine.begin() as conn:
            conn.execute(stmt, rows)
        return len(rows)

    def get_item(self, item_id: str) -> ItemRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(Item).where(Item.item_id == item_id)).first()
        return None if row is None else _item(row)

    def list_items(self, category: str | None = None, limit: int = 100, offset: int = 0) -> list[ItemRecord]:
        stmt = _in_category(select(Item), category).order_by(Item.item_id).limit(limit).offset(offset)
        with self._engine.connect() as conn:
            return [_item(row) for row in conn.execute(stmt)]

    def count_items(self, category: str | None = None) -> int:
        with self._engine.connect() as conn:
            return conn.execute(_in_category(select(func.count()).select_from(Item), category)).scalar_one()

    def all_items(self) -> list[ItemRecord]:
        with self._engine.connect() as conn:
            return [_item(row) for row in conn.execute(select(Item).order_by(Item.item_id))]

    def categories(self) -> list[tuple[str, int]]:
        stmt = (
            select(Item.category, func.count())
            .where(Item.category != "")
            .group_by(Item.category)
            .order_by(Item.category)
        )
        with self._engine.connect() as conn:
            return [(category, count) for category, count in conn.execute(stmt)]

    # --- users ---

    def add_user(self, user_id: str) -> bool:
        return self.add_users([user_id]) == 1

    def add_users(self, user_ids: Iterable[str]) -> int:
        """Creates the users that do not exist yet; returns how many were created."""
        with self._engine.begin() as conn:
            return self._ensure_users(conn, user_ids, _utc_now())

    def get_user(self, user_id: str) -> UserRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(User).where(User.user_id == user_id)).first()
        return None if row is None else UserRecord(row.user_id, row.created_at.timestamp())

    def all_user_ids(self) -> list[str]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(User.user_id).order_by(User.user_id)).scalars())

    def delete_user(self, user_id: str) -> bool:
        """Removes the user with their history in one transaction (e.g. a GDPR erasure)."""
        with self._engine.begin() as conn:
            conn.execute(delete(Interaction).where(Interaction.user_id == user_id))
            return conn.execute(delete(User).where(User.user_id == user_id)).rowcount == 1

    # --- interactions ---

    def append_interaction(self, rec: InteractionRecord) -> tuple[InteractionRecord, bool]:
        """Records one event; returns the stored record and whether it is new.

        A retry with an already stored event_id returns the first record and writes nothing.
        ON CONFLICT DO NOTHING makes that safe against a concurrent writer of the same event_id:
        PostgreSQL waits for the other transaction, SQLite serialises writers.
        """
        now = _utc_now()
        try:
            with self._engine.begin() as conn:
                _serialise_appends(conn)
                if conn.execute(select(Item.item_id).where(Item.item_id == rec.item_id)).first() is None:
                    raise UnknownItemError(rec.item_id)
                self._ensure_users(conn, [rec.user_id], now)
                stmt = (
                    self._insert(Interaction)
                    .values(_interaction_row(rec, now))
                    .on_conflict_do_nothing(index_elements=[Interaction.event_id])
                    .returning(Interaction)
                )
                stored = conn.execute(stmt).first()
                if stored is None:
                    earlier = select(Interaction).where(Interaction.event_id == rec.event_id)
                    return _interaction(conn.execute(earlier).one()), False
        except IntegrityError as exc:
            if self.get_item(rec.item_id) is None:  # the foreign key caught what the check could not
                raise UnknownItemError(rec.item_id) from exc
            raise _rejected(exc) from exc
        return _interaction(stored), True

    def append_interactions(self, recs: Iterable[InteractionRecord], batch_size: int = 10_000) -> int:
        """Bulk load for data loaders: all or nothing, in one transaction of executemany batches.

        Missing users are created; every item must exist (UnknownItemError otherwise). The item
        ids are read once up front, so the check costs a set lookup per row.
        """
        now = _utc_now()
        inserted = 0
        try:
            with self._engine.begin() as conn:
                _serialise_appends(conn)
                known_items = set(conn.execute(select(Item.item_id)).scalars())
                known_users: set[str] = set()
                for batch in _batched(recs, batch_size):
                    unknown = next((rec.item_id for rec in batch if rec.item_id not in known_items), None)
                    if unknown is not None:
                        raise UnknownItemError(unknown)
                    new_users = {rec.user_id for rec in batch} - known_users
                    self._ensure_users(conn, new_users, now)
                    known_users |= new_users
                    conn.execute(insert(Interaction), [_interaction_row(rec, now) for rec in batch])
                    inserted += len(batch)
        except IntegrityError as exc:
            raise _rejected(exc) from exc
        return inserted

    def iter_interactions(
        self, after_seq: int = 0, until_seq: int | None = None, batch_size: int = 50_000
    ) -> Iterator[InteractionRecord]:
        """The log in seq order (after_seq < seq <= until_seq), one keyset page at a time."""
        for rows in self._pages(select(Interaction), after_seq, until_seq, batch_size):
            yield from map(_interaction, rows)

    def interaction_frame(self, after_seq: int = 0, until_seq: int | None = None,
                          batch_size: int = 10_000) -> pd.DataFrame:
        """The same rows as columns (user_id, item_id, event_type, rating, timestamp, seq).

        A model rebuild reads the whole log. Small pages of only the needed columns, each turned
        into arrays before the next is read, keep the transient memory to one page.
        """
        wanted = (Interaction.user_id, Interaction.item_id, Interaction.event_type, Interaction.rating,
                  Interaction.occurred_at, Interaction.seq)
        frames = []
        for rows in self._pages(select(*wanted), after_seq, until_seq, batch_size):
            page = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "rating", "occurred_at", "seq"])
            page["timestamp"] = [moment.timestamp() for moment in page.pop("occurred_at")]
            frames.append(page)
        frame = pd.concat(frames, ignore_index=True)
        frame["rating"] = frame["rating"].astype(float)
        return frame

    def _pages(self, stmt: Select, after_seq: int, until_seq: int | None, batch_size: int) -> Iterator[list[Row[Any]]]:
        """Keyset pages of the log: each on its own short connection, so a slow consumer holds neither
        a connection nor more than one page of rows. The last page may be empty."""
        while True:
            page = stmt.where(Interaction.seq > after_seq)
            if until_seq is not None:
                page = page.where(Interaction.seq <= until_seq)
            with self._engine.connect() as conn:
                rows = conn.execute(page.order_by(Interaction.seq).limit(batch_size)).all()
            yield rows
            if len(rows) < batch_size:
                return
            after_seq = rows[-1].seq

    def user_interactions(self, user_id: str, limit: int | None = None) -> list[InteractionRecord]:
        """A user's history, newest first (by seq, the order the store received it)."""
        stmt = (
            select(Interaction)
            .where(Interaction.user_id == user_id)
            .order_by(Interaction.seq.desc())
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_interaction(row) for row in conn.execute(stmt)]

    def record_checkpoint(self, fitted_through_seq: int, fit_seconds: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(ModelCheckpoint).values(
                fitted_through_seq=fitted_through_seq, fit_seconds=fit_seconds, created_at=_utc_now()))

    def latest_checkpoint(self) -> int | None:
        """The seq the newest model fit read up to, or None before the first fit."""
        stmt = select(ModelCheckpoint.fitted_through_seq).order_by(ModelCheckpoint.id.desc()).limit(1)
        with self._engine.connect() as conn:
            return conn.execute(stmt).scalar_one_or_none()

    def last_seq(self) -> int:
        with self._engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(Interaction.seq), 0))).scalar_one()

    def counts(self) -> dict[str, int]:
        """All three counts in one statement, so they come from the same moment."""
        tables = (User, Item, Interaction)
        stmt = select(*(select(func.count()).select_from(table).scalar_subquery() for table in tables))
        with self._engine.connect() as conn:
            users, items, interactions = conn.execute(stmt).one()
        return {"users": users, "items": items, "interactions": interactions}

    def _ensure_users(self, conn: Connection, user_ids: Iterable[str], now: datetime) -> int:
        """Creates the missing users in one executemany; returns how many were new."""
        rows = [{"user_id": user_id, "created_at": now} for user_id in dict.fromkeys(user_ids)]
        if not rows:
            return 0
        stmt = self._insert(User).on_conflict_do_nothing(index_elements=[User.user_id])
        return len(conn.execute(stmt.returning(User.user_id), rows).all())


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 (SQLAlchemy 2.0 would pick psycopg2)
    backend = parsed.get_backend_name()
    if backend not in _DIALECT_INSERTS:
        raise ValueError(f"unsupported database backend: {backend}")
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    in_memory = parsed.database in (None, "", ":memory:")
    if not in_memory:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # An in-memory database lives in one connection, so every thread must share it.
    engine = create_engine(
        parsed, connect_args={"check_same_thread": False}, **({"poolclass": StaticPool} if in_memory else {})
    )
    event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _lock_schema(conn: Connection) -> None:
    """Serialises table creation, so workers starting together do not both try CREATE TABLE."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))


def _serialise_appends(conn: Connection) -> None:
    """Make commit order equal seq order, so every seq <= last_seq() is already visible.

    PostgreSQL hands out seqs at insert time and transactions may commit out of order; a model
    rebuild reading "everything up to seq N" would then miss a late commit below N. SQLite already
    admits one writer at a time. The lock is held to the end of the (short) transaction.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_APPEND_LOCK_KEY)))


def _rejected(exc: IntegrityError) -> ValueError:
    """A constraint the caller broke: a rating outside 1..5, or (bulk loads do not dedupe) a stored event_id."""
    return ValueError(f"interaction rejected by the database: {exc.orig}")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _to_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def _in_category(stmt: _S, category: str | None) -> _S:
    return stmt if category is None else stmt.where(Item.category == category)


def _batched(iterable: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def _item_row(item: ItemRecord, now: datetime) -> dict[str, Any]:
    return {**item.as_dict(), "updated_at": now}


def _item(row: Row[Any]) -> ItemRecord:
    return ItemRecord(
        item_id=row.item_id,
        name=row.name,
        category=row.category,
        brand=row.brand,
        description=row.description,
        tags=tuple(row.tags),
        price=row.price,
    )


def _interaction_row(rec: InteractionRecord, now: datetime) -> dict[str, Any]:
    return {
        "event_id": rec.event_id,
        "user_id": rec.user_id,
        "item_id": rec.item_id,
        "event_type": EventType(rec.event_type).value,
        "rating": rec.rating,
        "occurred_at": _to_datetime(rec.timestamp),
        "recorded_at": now,
    }


def _interaction(row: Row[Any]) -> InteractionRecord:
    return InteractionRecord(
        user_id=row.user_id,
        item_id=row.item_id,
        event_type=EventType(row.event_type),
        timestamp=row.occurred_at.timestamp(),
        rating=row.rating,
        seq=row.seq,
        event_id=row.event_id,
    )
