"""Persistence for users, items and interactions, behind the plain-record `Store` interface."""
from storage.store import Store, UnknownItemError

__all__ = ["Store", "UnknownItemError"]
