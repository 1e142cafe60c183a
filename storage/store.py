"""The Store: the one narrow door to the database.

It takes and returns the plain records of recommenders/records.py, so nothing outside storage/
depends on SQLAlchemy. Timestamps are Unix-seconds floats in the records and aware UTC datetimes
in the database. All SQL is built with SQLAlchemy Core, hence parameterised.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import orjson
import pandas as pd
import psycopg
from psycopg import sql
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    CursorResult,
    Insert,
    Engine,
    Row,
    Select,
    String,
    Table,
    Text,
    URL,
    bindparam,
    cast,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    literal,
    null,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from recommenders.records import (EventType, InteractionRecord, ItemRecord, LogEntry, LogKind, RuleKind, RuleRecord,
                                  UserRecord)
from storage.experiment_schema import ImpressionRow  # its tables are created with these
from storage.schema import Base, Interaction, Item, LogChange, LogPosition, ModelCheckpoint, Rule, User
from storage.upgrade import add_missing_columns

# Upserts need the dialect's INSERT ... ON CONFLICT; these are the backends the store supports.
_DIALECT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

# Per-connection settings, so they hold for every pooled connection, not just the first.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers do not block the writer
    "PRAGMA foreign_keys=ON",  # SQLite ignores foreign keys unless asked
    "PRAGMA busy_timeout=5000",  # concurrent writers wait instead of failing at once
    "PRAGMA synchronous=FULL",  # a recorded interaction survives a power cut
)

_ITEM_FIELDS = ("name", "category", "brand", "description", "tags", "price", "available", "attributes", "updated_at")

# Any fixed number: PostgreSQL advisory-lock key that every process agrees on.
_SCHEMA_LOCK_KEY = 0x5EC5_0001

# PostgreSQL NOTIFY channel of the log; the payload is the newest seq, as text.
LOG_CHANNEL = "recommendation_log"

# Built once: building the UPDATE took 100 us a call, running it 15 us (SQLite). On PostgreSQL the
# NOTIFY rides in its RETURNING: a separate SELECT pg_notify(...) made an append 7-12% slower.
_BUMP = (
    update(LogPosition)
    .where(LogPosition.id == 1)
    .values(last_seq=LogPosition.last_seq + bindparam("n"))
    .returning(LogPosition.last_seq)
)
_BUMP_AND_NOTIFY = _BUMP.returning(func.pg_notify(LOG_CHANNEL, cast(LogPosition.last_seq, Text)))

_S = TypeVar("_S", bound=Select[Any])
_T = TypeVar("_T")


class UnknownItemError(LookupError):
    """An interaction named an item the catalog does not have (the API answers 404)."""

    def __init__(self, item_id: str) -> None:
        super().__init__(f"unknown item: {item_id}")
        self.item_id = item_id


class Store:
    """Reads and writes users, items and the log (events and changes); safe to share between threads."""

    def __init__(self, url: str) -> None:
        self._engine = _create_engine(url)
        self._insert = _DIALECT_INSERTS[self._engine.dialect.name]
        # Statements of every group commit, built once: building them anew each time was a third of
        # the Python time of a one-event group (SQLAlchemy's coercions), before any SQL ran.
        self._columnar = self._engine.dialect.name == "postgresql"  # rows go as one array per column
        self._new_events = (self._insert_many(Interaction.__table__)
                            .on_conflict_do_nothing(index_elements=[Interaction.event_id]).returning(Interaction))
        self._new_users = (self._insert_many(User.__table__)
                           .on_conflict_do_nothing(index_elements=[User.user_id]).returning(User.user_id))
        self._event_block = _event_block_statement(self._engine.dialect.name)
        # Items are never deleted, so one seen in the store stays known: a group asks only about new ones.
        self._known_items: set[str] = set()
        with self._engine.begin() as conn:
            _lock_schema(conn)
            Base.metadata.create_all(conn)
            add_missing_columns(conn, Base.metadata)
            _start_log_position(conn)

    def close(self) -> None:
        self._engine.dispose()

    @property
    def sql_engine(self) -> Engine:
        """For the other stores of this package (storage/experiment_store.py), which share its pool."""
        return self._engine

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._engine.dialect.name

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
        """Insert-or-nothing, then update: tells created from updated even when two writers race.
        Logs an ITEM entry in the same transaction."""
        now = _utc_now()
        row = _item_row(item, now)
        with self._engine.begin() as conn:
            seq = _reserve_seqs(conn, 1)
            insert_new = self._insert(Item).values(row).on_conflict_do_nothing(index_elements=[Item.item_id])
            created = conn.execute(insert_new.returning(Item.item_id)).first() is not None
            if not created:
                conn.execute(update(Item).where(Item.item_id == item.item_id).values(row))
            conn.execute(insert(LogChange).values(_change_row(seq, LogKind.ITEM, item.item_id, now)))
        return created

    def upsert_items(self, items: Iterable[ItemRecord]) -> int:
        """Bulk upsert in one executemany; a repeated item_id counts once and its last version wins.
        Logs one ITEM entry per distinct item in the same transaction."""
        now = _utc_now()
        rows = list({item.item_id: _item_row(item, now) for item in items}.values())
        if not rows:
            return 0
        stmt = self._insert(Item)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Item.item_id], set_={name: stmt.excluded[name] for name in _ITEM_FIELDS}
        )
        with self._engine.begin() as conn:
            first = _reserve_seqs(conn, len(rows))
            conn.execute(stmt, rows)
            conn.execute(insert(LogChange), [_change_row(first + n, LogKind.ITEM, row["item_id"], now)
                                             for n, row in enumerate(rows)])
        return len(rows)

    def patch_item(self, item_id: str, changes: dict[str, Any]) -> ItemRecord | None:
        """Change only the named fields of a stored item, logging an ITEM entry in the same transaction;
        returns the item as it is now, or None (nothing written) if there is no such item. The row is
        read under the log counter's lock (PostgreSQL) or the one writer (SQLite), so two patches of
        one item both apply."""
        with self._engine.connect() as conn:
            seq = _reserve_seqs(conn, 1)
            row = conn.execute(select(Item).where(Item.item_id == item_id)).first()
            if row is None:
                return None
            item = dataclasses.replace(_item(row), **changes)
            now = _utc_now()
            conn.execute(update(Item).where(Item.item_id == item_id).values(_item_row(item, now)))
            conn.execute(insert(LogChange).values(_change_row(seq, LogKind.ITEM, item_id, now)))
            conn.commit()
        return item

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
        """Removes the user with their history in one transaction (e.g. a GDPR erasure), logging a
        FORGET_USER entry there. An unknown user writes nothing: leaving without a commit rolls
        back, and the reserved seq goes back unseen."""
        with self._engine.connect() as conn:
            seq = _reserve_seqs(conn, 1)
            conn.execute(delete(Interaction).where(Interaction.user_id == user_id))
            conn.execute(delete(ImpressionRow).where(ImpressionRow.user_id == user_id))
            if conn.execute(delete(User).where(User.user_id == user_id)).rowcount != 1:
                return False
            conn.execute(insert(LogChange).values(_change_row(seq, LogKind.FORGET_USER, user_id, _utc_now())))
            conn.commit()
        return True

    # --- business rules: each creation and deletion is a log entry (the rule's seq) ---

    def add_rule(self, rule: RuleRecord) -> RuleRecord:
        """Store a new rule as the log's next entry; returns it with its creation time."""
        now = _utc_now()
        with self._engine.begin() as conn:
            seq = _reserve_seqs(conn, 1)
            conn.execute(insert(Rule).values(rule_id=rule.rule_id, seq=seq, kind=rule.kind.value,
                                             params=_rule_params(rule), deleted=False, created_at=now))
        return dataclasses.replace(rule, created_at=now.timestamp())

    def delete_rule(self, rule_id: str) -> bool:
        """Mark a rule deleted under a new seq (so followers learn it); False, writing nothing, if unknown."""
        with self._engine.connect() as conn:
            seq = _reserve_seqs(conn, 1)
            stmt = update(Rule).where(Rule.rule_id == rule_id, Rule.deleted == false()).values(seq=seq, deleted=True)
            if conn.execute(stmt).rowcount != 1:
                return False
            conn.commit()
        return True

    def rules(self) -> list[RuleRecord]:
        """The rules in force, oldest first."""
        with self._engine.connect() as conn:
            return [_rule(row) for row in conn.execute(select(Rule).where(Rule.deleted == false()).order_by(Rule.seq))]

    # --- interactions ---

    def append_interaction(self, rec: InteractionRecord) -> tuple[InteractionRecord, bool]:
        """Records one event; returns the stored record and whether it is new.

        A retry with an already stored event_id returns the first record and writes nothing.
        ON CONFLICT DO NOTHING makes that safe against a concurrent writer of the same event_id:
        PostgreSQL waits for the other transaction, SQLite serialises writers. The retry leaves
        without a commit, so its reserved seq goes back unseen and wakes no one.
        """
        now = _utc_now()
        try:
            with self._engine.connect() as conn:
                if conn.execute(select(Item.item_id).where(Item.item_id == rec.item_id)).first() is None:
                    raise UnknownItemError(rec.item_id)
                seq = _reserve_seqs(conn, 1)
                self._ensure_users(conn, [rec.user_id], now)
                stmt = (
                    self._insert(Interaction)
                    .values(_interaction_row(rec, seq, now))
                    .on_conflict_do_nothing(index_elements=[Interaction.event_id])
                    .returning(Interaction)
                )
                stored = conn.execute(stmt).first()
                if stored is None:
                    earlier = select(Interaction).where(Interaction.event_id == rec.event_id)
                    return _interaction(conn.execute(earlier).one()), False
                conn.commit()
        except IntegrityError as exc:
            if self.get_item(rec.item_id) is None:  # the foreign key caught what the check could not
                raise UnknownItemError(rec.item_id) from exc
            raise _rejected(exc) from exc
        return _interaction(stored), True

    def append_events(self, recs: list[InteractionRecord]) -> list[tuple[InteractionRecord, bool] | Exception]:
        """Records concurrent events in one transaction, so they share one commit (one fsync).

        Returns, per event in input order, what `append_interaction` would: (the stored record,
        whether it is new), or the error for that event alone (UnknownItemError). Events keep
        their input order in the log. A repeated event_id, in the store or earlier in the batch,
        answers with the first recording. If the database refuses the batch (a constraint), each
        event is recorded on its own, so one bad event never fails the others.
        """
        now = _utc_now()
        results: list[tuple[InteractionRecord, bool] | Exception | None] = [None] * len(recs)
        try:
            with self._engine.connect() as conn:
                known = self._known_items
                unseen = {rec.item_id for rec in recs} - known
                if unseen:
                    known.update(conn.execute(_ITEMS_AMONG, {"ids": list(unseen)}).scalars())
                first_of: dict[str, int] = {}  # event_id -> position of its first event in the batch
                fresh = []
                for position, rec in enumerate(recs):
                    if rec.item_id not in known:
                        results[position] = UnknownItemError(rec.item_id)
                    elif rec.event_id is None or first_of.setdefault(rec.event_id, position) == position:
                        fresh.append(position)
                if fresh:
                    first = _reserve_seqs(conn, len(fresh))
                    self._ensure_users(conn, (recs[p].user_id for p in fresh), now)
                    seqs = {p: first + n for n, p in enumerate(fresh)}
                    rows = self._execute_many(conn, self._new_events,
                                              [_interaction_row(recs[p], seqs[p], now) for p in fresh])
                    written = {row.seq: _interaction(row) for row in rows}  # as stored: what other processes read
                    earlier_ids = [recs[p].event_id for p in fresh if seqs[p] not in written]
                    earlier = {row.event_id: _interaction(row) for row in conn.execute(
                        select(Interaction).where(Interaction.event_id.in_(earlier_ids)))} if earlier_ids else {}
                    conn.commit()
                    for p in fresh:
                        rec = recs[p]
                        results[p] = ((written[seqs[p]], True) if seqs[p] in written
                                      else (earlier[rec.event_id], False))
        except IntegrityError:
            return [self._append_alone(rec) for rec in recs]
        for position, rec in enumerate(recs):  # later events of an event_id first seen in this batch
            if results[position] is None:
                stored, _ = results[first_of[rec.event_id]]
                results[position] = (stored, False)
        return results

    def _append_alone(self, rec: InteractionRecord) -> tuple[InteractionRecord, bool] | Exception:
        try:
            return self.append_interaction(rec)
        except (UnknownItemError, ValueError) as error:
            return error

    def append_interactions(self, recs: Iterable[InteractionRecord], batch_size: int = 10_000) -> int:
        """Bulk load for data loaders: all or nothing, in one transaction of executemany batches.

        Missing users are created; every item must exist (UnknownItemError otherwise). The item
        ids are read once up front, so the check costs a set lookup per row. The rows get
        consecutive seqs in input order: each batch reserves its own, and the counter row stays
        locked from the first batch to the commit, so no other writer takes one in between.
        """
        now = _utc_now()
        inserted = 0
        try:
            with self._engine.begin() as conn:
                known_items = set(conn.execute(select(Item.item_id)).scalars())
                known_users: set[str] = set()
                for batch in _batched(recs, batch_size):
                    unknown = next((rec.item_id for rec in batch if rec.item_id not in known_items), None)
                    if unknown is not None:
                        raise UnknownItemError(unknown)
                    first = _reserve_seqs(conn, len(batch))
                    new_users = {rec.user_id for rec in batch} - known_users
                    self._ensure_users(conn, new_users, now)
                    known_users |= new_users
                    rows = [_interaction_row(rec, first + n, now) for n, rec in enumerate(batch)]
                    conn.execute(insert(Interaction), rows)
                    inserted += len(batch)
        except IntegrityError as exc:
            raise _rejected(exc) from exc
        return inserted

    def append_event_frame(self, frame: pd.DataFrame) -> int:
        """Bulk load of events given as the columns `interaction_frame` reads back (user_id, item_id,
        event_type, rating, timestamp); returns how many were written.

        For loads of millions of generated rows (bench/scale.py), where `append_interactions`' record
        and dict per row cost more than the database's own work: the frame goes as one JSON parameter
        that the database expands into rows, in one transaction. The rows take consecutive seqs in frame
        order, reserved like every other write's. The users and items must exist (the foreign keys
        refuse the whole frame otherwise: ValueError). The rows get no event_id, so a loader that may
        run twice must check the store first.
        """
        if frame.empty:
            return 0
        moments = (frame["timestamp"].to_numpy(np.float64) * 1e6).round().astype("datetime64[us]")
        times = np.datetime_as_string(moments, unit="us")
        # As SQLAlchemy stores an aware time on SQLite (no zone, a space), ISO 8601 in UTC for PostgreSQL.
        times = np.strings.replace(times, "T", " ") if self.backend == "sqlite" else np.strings.add(times, "Z")
        ratings = frame["rating"].astype(object).where(frame["rating"].notna(), None)
        try:
            with self._engine.begin() as conn:
                first = _reserve_seqs(conn, len(frame))
                rows = orjson.dumps(list(zip(range(first, first + len(frame)), frame["user_id"].tolist(),
                                             frame["item_id"].tolist(), frame["event_type"].tolist(),
                                             ratings.tolist(), times.tolist())))
                conn.execute(self._event_block, {"rows": rows.decode(), "recorded_at": _utc_now()})
        except IntegrityError as exc:
            raise _rejected(exc) from exc
        return len(frame)

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
        return pd.concat(self.interaction_pages(after_seq, until_seq, batch_size), ignore_index=True)

    def interaction_pages(self, after_seq: int = 0, until_seq: int | None = None,
                          batch_size: int = 10_000) -> Iterator[pd.DataFrame]:
        """`interaction_frame` page by page, for a reader that writes each page on (the Spark trainer's
        export to Parquet) and so never holds the whole log."""
        wanted = (Interaction.user_id, Interaction.item_id, Interaction.event_type, Interaction.rating,
                  Interaction.occurred_at, Interaction.seq)
        for rows in self._pages(select(*wanted), after_seq, until_seq, batch_size):
            page = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "rating", "occurred_at", "seq"])
            page["timestamp"] = [moment.timestamp() for moment in page.pop("occurred_at")]
            page["rating"] = page["rating"].astype(float)
            yield page

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
        """The log position: the newest seq committed, whatever its kind. Every entry up to it is
        readable, or gone for good (a deleted user's events)."""
        with self._engine.connect() as conn:
            return conn.execute(select(LogPosition.last_seq).where(LogPosition.id == 1)).scalar_one()

    # --- the log: events, item changes and user deletions in one seq order ---

    def read_log(self, after_seq: int, limit: int = 1000) -> list[LogEntry]:
        """The entries with seq > after_seq, in seq order, at most `limit`: what a tailing process
        applies next. Seqs may have gaps. An ITEM entry carries the item as it is now, so an item
        edited twice shows its latest version twice; one whose row is missing is skipped."""
        with self._engine.connect() as conn:
            rows = conn.execute(_LOG_PAGE, {"after_seq": after_seq, "limit": limit}).all()
            item_ids = {row.item_id for row in rows if row.kind == LogKind.ITEM.value}
            items = {} if not item_ids else {
                row.item_id: _item(row) for row in conn.execute(select(Item).where(Item.item_id.in_(item_ids)))
            }
            rule_ids = {row.item_id for row in rows if row.kind == LogKind.RULE.value}
            rules = {} if not rule_ids else {
                row.rule_id: _rule(row) for row in conn.execute(select(Rule).where(Rule.rule_id.in_(rule_ids)))
            }
        entries = []
        for row in rows:
            kind = LogKind(row.kind)
            if kind is LogKind.EVENT:
                entries.append(LogEntry(row.seq, kind, event=_interaction(row), user_id=row.user_id))
            elif kind is LogKind.FORGET_USER:
                entries.append(LogEntry(row.seq, kind, user_id=row.user_id))
            elif kind is LogKind.RULE:
                entries.append(LogEntry(row.seq, kind, rule=rules[row.item_id]))
            elif row.item_id in items:
                entries.append(LogEntry(row.seq, kind, item=items[row.item_id]))
        return entries

    def log_wakeup(self, poll_seconds: float) -> LogWakeup:
        """A waiter for new log entries, for one tailing loop: PostgreSQL wakes it on commit (LISTEN),
        SQLite has no notifications, so there it sleeps `poll_seconds` at most."""
        url = self._engine.url
        conninfo = None if url.get_backend_name() == "sqlite" else _libpq_conninfo(url)
        return LogWakeup(conninfo, poll_seconds)

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
        return len(self._execute_many(conn, self._new_users, rows).all())

    def _insert_many(self, table: Table) -> Insert:
        """The INSERT of a group commit: executemany's multi-row VALUES, or on PostgreSQL one
        `INSERT ... SELECT FROM unnest(<one array per column>)`.

        executemany renders new SQL text for each group size, which psycopg then converts and
        cannot prepare: that was 6% of the server's time under bench/ingest.py at 32 connections
        (py-spy). The unnest form is one text whatever the size, so psycopg converts it once and
        prepares it after its fifth use.
        """
        if not self._columnar:
            return self._insert(table)
        names = [column.name for column in table.columns]
        arrays = func.unnest(*(cast(bindparam(column.name), postgresql.ARRAY(column.type)) for column in table.columns))
        rows = arrays.table_valued(*names).render_derived()
        return self._insert(table).from_select(names, select(*rows.c))

    def _execute_many(self, conn: Connection, statement: Insert, rows: list[dict[str, Any]]) -> CursorResult[Any]:
        """Runs an `_insert_many` statement over rows that give every column of its table."""
        if not self._columnar:
            return conn.execute(statement, rows)
        return conn.execute(statement, {name: [row[name] for row in rows] for name in rows[0]})

    def commit_probe(self, max_age: float = 1.0) -> str | None:
        """For health checks: None when the database commits a write now, else why it does not.

        A read answers on a full disk; only a commit shows it. The probe writes nothing anyone
        reads. SQLite rewrites the header's user_version with the value it has: one page into the
        WAL and an fsync, in its own short write transaction (a no-op UPDATE would not do: SQLite
        skips writing a row that did not change). PostgreSQL updates the log counter's row to the
        value it has: a new row version, WAL and a flushed commit, holding that row for one commit
        (at most lock_timeout). Neither changes the seq nor wakes a follower. The answer is kept
        `max_age` seconds, so however often /health is polled, a process probes once a second.
        """
        checked = getattr(self, "_commit_probe_checked", None)  # (when, answer) of the last probe
        if checked is not None and time.monotonic() - checked[0] < max_age:
            return checked[1]
        reason = None
        try:
            with self._engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    version = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
                    conn.exec_driver_sql(f"PRAGMA user_version = {version}")  # not DML: commits at once
                else:
                    conn.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
                    conn.execute(update(LogPosition).where(LogPosition.id == 1)
                                 .values(last_seq=LogPosition.last_seq))
                conn.commit()
        except SQLAlchemyError as error:
            reason = Store.unavailable_reason(error) or str(getattr(error, "orig", error)).strip().split("\n")[0]
        self._commit_probe_checked = (time.monotonic(), reason)
        return reason

    @staticmethod
    def unavailable_reason(error: BaseException) -> str | None:
        """Why the database cannot serve now, when `error` (or one it was raised from) says so: it
        cannot be reached, its disk is full, it is read-only or busy. The API answers those 503 with
        Retry-After, and they pass once the database is back. None for anything else (a rejected
        input, a bug): that is no outage."""
        from sqlalchemy import exc  # callers see a reason, never SQLAlchemy's classes

        while error is not None:
            orig = getattr(error, "orig", None)
            state = getattr(orig, "sqlstate", None) or getattr(error, "sqlstate", None) or ""  # PostgreSQL's
            code = getattr(orig, "sqlite_errorname", None) or ""  # SQLite's: SQLITE_FULL, SQLITE_BUSY, ...
            text = str(orig if orig is not None else error).lower()
            if isinstance(error, exc.TimeoutError):  # no pooled connection came free
                return "the database is busy"
            if isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.InternalError,
                                  exc.DisconnectionError, psycopg.OperationalError, psycopg.InterfaceError)):
                if state == "53100" or code == "SQLITE_FULL" or "no space left" in text:
                    return "the database cannot commit: its disk is full"
                if state == "25006" or code.startswith("SQLITE_READONLY"):
                    return "the database is read-only"
                if state[:2] == "40" or state in ("55P03", "57014") or code.startswith(("SQLITE_BUSY",
                                                                                        "SQLITE_LOCKED")):
                    return "the database is busy"
                if not isinstance(error, exc.InternalError):  # an InternalError is a bug unless read-only
                    return "the database cannot be reached" if (
                        state[:2] == "08" or state[:3] == "57P" or code.startswith("SQLITE_CANTOPEN")
                        or (not state and not code)
                        or isinstance(error, (exc.InterfaceError, exc.DisconnectionError))
                    ) else "the database cannot serve the request"
            error = error.__cause__
        return None

    def user_deleted_at(self, user_id: str) -> float | None:
        """Unix time of the user's latest deletion (its FORGET_USER log entry), or None if the user was
        never deleted: Socket.IO tokens issued for the id before then are void (web/auth.py)."""
        stmt = select(func.max(LogChange.recorded_at)).where(
            LogChange.kind == LogKind.FORGET_USER.value, LogChange.key == user_id)
        with self._engine.connect() as conn:
            deleted = conn.execute(stmt).scalar_one()
        return None if deleted is None else deleted.timestamp()


class LogWakeup:
    """Waits until new log entries may have been committed, for one tailing loop (not shared).

    Create it before the first read of the log, then wait whenever caught up. On PostgreSQL it
    LISTENs on its own autocommit connection, so a commit in any process wakes it at once; SQLite
    has no notifications, so there it sleeps. A wake-up only means "read the log from your
    position": a spurious one costs a query, a missed one at most the timeout.
    """

    def __init__(self, conninfo: str | None, poll_seconds: float) -> None:
        self._conninfo = conninfo
        self._poll_seconds = poll_seconds
        self._conn = None if conninfo is None else self._listen(poll_seconds)

    def wait(self, timeout: float, applied_through: Callable[[], int] = lambda: -1) -> bool:
        """True as soon as an entry past `applied_through()` is committed, False after `timeout`
        without one. Never raises: when the database is unreachable it waits out the timeout and
        reconnects on a later call.

        PostgreSQL announces each commit's last seq, so a server is not woken to read back the
        entries it wrote and applied itself (a log query per group commit, 8% of its time).
        """
        if self._conninfo is None:
            time.sleep(min(timeout, self._poll_seconds))
            return False
        deadline = time.monotonic() + timeout
        if self._conn is None:
            self._conn = self._listen(timeout)
            if self._conn is not None:
                return True  # entries committed while nobody listened went unannounced
        else:
            try:
                while (left := deadline - time.monotonic()) > 0:
                    announced = [n.payload for n in self._conn.notifies(timeout=left, stop_after=1)]
                    if not announced:
                        return False
                    announced += [n.payload for n in self._conn.notifies(timeout=0)]  # one read covers them all
                    if max(map(_announced_seq, announced)) > applied_through():
                        return True
                return False
            except psycopg.Error:  # the server went away (restart, network)
                self.close()
        time.sleep(max(0.0, deadline - time.monotonic()))
        return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _listen(self, timeout: float) -> psycopg.Connection | None:
        try:
            # libpq's connect_timeout is whole seconds, 2 at least.
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=max(2, math.ceil(timeout)))
        except psycopg.Error:
            return None
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(LOG_CHANNEL)))
        except psycopg.Error:
            conn.close()
            return None
        return conn


def _announced_seq(payload: str) -> float:
    """The seq a log notification announces; one that does not parse may announce anything."""
    return int(payload) if payload.isdigit() else math.inf


def _libpq_conninfo(url: URL) -> str:
    """The SQLAlchemy URL as a libpq connection URI, for a connection outside the engine's pool."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


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


def _start_log_position(conn: Connection) -> None:
    """Creates the log counter if missing (a new database, or one from before the log), past every
    seq already used: the rows', and a checkpoint's, which may name the seq of deleted rows."""
    if conn.execute(select(LogPosition.id)).first() is not None:
        return
    used = (Interaction.seq, LogChange.seq, ModelCheckpoint.fitted_through_seq)
    highest = max(conn.execute(select(func.max(column))).scalar_one() or 0 for column in used)
    conn.execute(insert(LogPosition).values(id=1, last_seq=highest))


_ITEMS_AMONG = select(Item.item_id).where(Item.item_id.in_(bindparam("ids", expanding=True)))


def _reserve_seqs(conn: Connection, n: int) -> int:
    """Takes the next n seqs of the log for this transaction; returns the first.

    Call it before the transaction's other writes. Commit order must equal seq order, so that
    every seq <= last_seq() is already visible: a model rebuild reading "everything up to seq N",
    or a process tailing the log, would otherwise miss a late commit below N. On PostgreSQL the
    counter's row lock, held to commit, makes the next writer wait (it replaced an advisory lock
    that did only that); taking it first keeps writers from deadlocking on the rows they write
    next. SQLite admits one writer at a time anyway. PostgreSQL also wakes the log's listeners:
    NOTIFY is delivered at commit, and not at all on rollback.
    """
    bump = _BUMP_AND_NOTIFY if conn.dialect.name == "postgresql" else _BUMP
    return conn.execute(bump, {"n": n}).scalar_one() - n + 1


def _log_page_statement() -> Select[Any]:
    """One page of the log: events and changes merged by seq, in the columns `_interaction` reads.
    A change's key fills both user_id and item_id; which one it is depends on its kind.

    Both backends then merge the two primary-key scans and stop at `limit`. PostgreSQL 15 does
    that only with the seq filter on the union, not on each arm (filtering the arms, it sorted
    every later row: 27 ms instead of 0.3 ms for a page of 1,000 from the middle of 300,000
    events). SQLite does it only when the arms' columns have the same affinity, hence the casts.
    """
    event_only = (Interaction.event_type, Interaction.rating, Interaction.occurred_at, Interaction.event_id,
                  Interaction.recommendation_id, Interaction.value)
    events = select(
        Interaction.seq, cast(literal(LogKind.EVENT.value), LogChange.kind.type).label("kind"),
        Interaction.user_id, Interaction.item_id, *event_only,
    )
    changes = select(
        LogChange.seq, LogChange.kind, LogChange.key.label("user_id"), LogChange.key.label("item_id"),
        *(cast(null(), column.type).label(column.name) for column in event_only),
    )
    rules = select(  # a rule's key is its rule_id
        Rule.seq, cast(literal(LogKind.RULE.value), LogChange.kind.type).label("kind"),
        Rule.rule_id.label("user_id"), Rule.rule_id.label("item_id"),
        *(cast(null(), column.type).label(column.name) for column in event_only),
    )
    log = union_all(events, changes, rules).subquery("log")
    return select(log).where(log.c.seq > bindparam("after_seq")).order_by(log.c.seq).limit(bindparam("limit"))


# Built once, like _BUMP: a follower reads the log many times a second.
_LOG_PAGE = _log_page_statement()


def _json_rows(dialect: str, parameter: str, columns: tuple[Column, ...]) -> Select:
    """SELECT of one row per element of the JSON array of arrays bound as `parameter`: the element's
    i-th value as `columns[i]` (a nested array stays JSON text, as the `items` column keeps it)."""
    if dialect == "sqlite":
        rows = func.json_each(bindparam(parameter, type_=String)).table_valued("value")
        # type_coerce, not CAST: SQLite would CAST a date string to a number.
        return select(*(type_coerce(func.json_extract(rows.c.value, f"$[{i}]"), column.type)
                        for i, column in enumerate(columns)))
    rows = func.json_array_elements(cast(bindparam(parameter, type_=String), JSON)).table_valued("value")
    return select(*(cast(rows.c.value.op("->>")(i), column.type) for i, column in enumerate(columns)))


def _event_block_statement(dialect: str) -> Insert:
    """The INSERT of `append_event_frame`: the JSON rows' columns, one recorded_at for all."""
    table = Interaction.__table__
    columns = (table.c.seq, table.c.user_id, table.c.item_id, table.c.event_type, table.c.rating,
               table.c.occurred_at)
    rows = _json_rows(dialect, "rows", columns).add_columns(bindparam("recorded_at", type_=table.c.recorded_at.type))
    return insert(table).from_select([column.name for column in columns] + ["recorded_at"], rows)


def _rejected(exc: IntegrityError) -> ValueError:
    """A constraint the caller broke: a rating outside 1..5, or (bulk loads do not dedupe) a stored event_id."""
    return ValueError(f"interaction rejected by the database: {exc.orig}")


def _change_row(seq: int, kind: LogKind, key: str, now: datetime) -> dict[str, Any]:
    return {"seq": seq, "kind": kind.value, "key": key, "recorded_at": now}


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
        available=row.available,
        attributes=tuple(sorted((row.attributes or {}).items())),
    )


def _rule_params(rule: RuleRecord) -> dict[str, Any]:
    return {key: value for key, value in rule.as_dict().items() if key not in ("rule_id", "type", "created_at")}


def _rule(row: Row[Any]) -> RuleRecord:
    params = dict(row.params)
    return RuleRecord(rule_id=row.rule_id, kind=RuleKind(row.kind), items=tuple(params.pop("items", ())),
                      created_at=row.created_at.timestamp(), deleted=row.deleted, **params)


def _interaction_row(rec: InteractionRecord, seq: int, now: datetime) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_id": rec.event_id,
        "user_id": rec.user_id,
        "item_id": rec.item_id,
        "event_type": EventType(rec.event_type).value,
        "rating": rec.rating,
        "occurred_at": _to_datetime(rec.timestamp),
        "recorded_at": now,
        "recommendation_id": rec.recommendation_id,
        "value": rec.value,
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
        recommendation_id=row.recommendation_id,
        value=row.value,
    )
