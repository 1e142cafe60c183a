"""Persistence for users, items and the log (events and changes), behind the plain-record `Store` interface."""
from storage.store import LogWakeup, Store, UnknownItemError

__all__ = ["LogWakeup", "Store", "UnknownItemError"]
