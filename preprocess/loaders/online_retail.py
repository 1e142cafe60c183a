"""UCI Online Retail: one year of a gift-ware shop's invoice lines, read as purchase events.

Columns `InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country`;
InvoiceDate is `YYYY-MM-DD HH:MM:SS` shop time, stored as if UTC.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from preprocess.loaders.common import RowFilter, assemble, integer_ids, iso_seconds, locate, most_frequent, read_table
from preprocess.loaders.dataset import Dataset
from recommenders.records import EventType, ItemRecord

FIELDS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID")
CATEGORY = "retail"
SHOWN_CODES = 6  # non-product codes named in the note


def load_online_retail(path: Path, progress: bool = False) -> Dataset:
    """Each invoice line of a known customer buying a positive quantity of a product is a purchase.

    Dropped on purpose (counted in the notes, not bad rows): cancellations (InvoiceNo "C..."),
    lines without a CustomerID, non-positive quantities, and stock codes without any digit, which
    are fees and adjustments rather than products (POST, DOT, M, BANK CHARGES, AMAZONFEE, ...).
    Repeated purchases stay separate events. user_id = the integer CustomerID, item_id = StockCode.
    """
    if path.is_dir():
        path = locate(path, "OnlineRetail.csv.gz", "OnlineRetail.csv")
    table, skipped = read_table(path, progress)
    missing = [field for field in FIELDS if field not in table.columns]
    if missing:
        raise ValueError(f"{path.name} is not the Online Retail CSV: no {', '.join(missing)} column")
    table = table.apply(lambda column: column.str.strip())
    code, customer_text = table["StockCode"], table["CustomerID"]
    quantity = pd.to_numeric(table["Quantity"], errors="coerce")
    customer, bad_customers = integer_ids(customer_text)
    timestamp, bad_timestamps = iso_seconds(table["InvoiceDate"])

    rows = RowFilter(table.index)
    rows.drop("cancellation rows (InvoiceNo starting with C)", table["InvoiceNo"].str.startswith("C"))
    rows.drop("rows without a CustomerID", customer_text == "")
    rows.drop("rows with a non-positive Quantity", quantity <= 0)
    not_product = ~code.str.contains(r"\d", regex=True)
    codes_dropped = code[not_product & ~rows.excluded].value_counts().sort_index().sort_values(
        ascending=False, kind="stable").index  # most frequent first, ties alphabetical
    shown = ", ".join(codes_dropped[:SHOWN_CODES]) + (", ..." if len(codes_dropped) > SHOWN_CODES else "")
    rows.drop(f"rows with non-product stock codes ({shown})", not_product)
    rows.reject("Quantity not a number", quantity.isna())
    rows.reject("CustomerID not an integer", bad_customers)
    rows.reject("InvoiceDate not a date and time", bad_timestamps)

    events = pd.DataFrame({"user_id": customer, "item_id": code, "event_type": EventType.PURCHASE.value,
                           "rating": float("nan"), "timestamp": timestamp})
    items = _products(table[~rows.excluded])
    return assemble("online-retail", events, rows, skipped, items, [])


def _products(purchases: pd.DataFrame) -> list[ItemRecord]:
    """One item per stock code bought: its most frequent Description as name and text, median UnitPrice."""
    codes = purchases["StockCode"]
    descriptions = most_frequent(codes, purchases["Description"])
    prices = pd.to_numeric(purchases["UnitPrice"], errors="coerce").groupby(codes).median()
    return [ItemRecord(code, name=descriptions.get(code, code), category=CATEGORY,
                       description=descriptions.get(code, ""), price=None if pd.isna(price) else float(price))
            for code, price in prices.items()]
