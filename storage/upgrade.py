"""Brings a database made by an older version up to the current schema, at start-up.

`create_all` makes missing tables but never touches existing ones, so a column added to a model
would be missing from every store made before it. New columns are therefore added here, and a
column added later must be nullable or carry a `server_default`, so that existing rows have a value.
Nothing is dropped or rewritten: an older server reading an upgraded store just ignores the column.
"""
from __future__ import annotations

from sqlalchemy import Column, Connection, MetaData, inspect
from sqlalchemy.schema import CreateColumn


def add_missing_columns(conn: Connection, metadata: MetaData) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for each model column the database lacks; returns "table.column" names.

    Runs inside the caller's schema lock and transaction (see storage.store._lock_schema), so workers
    starting together do not both add a column.
    """
    inspector = inspect(conn)
    added = []
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                _add_column(conn, table.name, column)
                added.append(f"{table.name}.{column.name}")
    return added


def _add_column(conn: Connection, table_name: str, column: Column) -> None:
    if not column.nullable and column.server_default is None:
        raise RuntimeError(f"column {table_name}.{column.name} was added to the schema as NOT NULL without a "
                           "server_default: existing rows would have no value")
    preparer = conn.dialect.identifier_preparer  # names come from our own models, quoted anyway
    definition = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table_name)} ADD COLUMN {definition}")
