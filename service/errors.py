"""Errors the service raises for requests it cannot serve; the web layer maps them to 4xx JSON."""
from __future__ import annotations


class NotFoundError(LookupError):
    """An unknown item, user or category (404)."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"unknown {kind} '{key}'")
        self.kind = kind
        self.key = key


class InvalidRequestError(ValueError):
    """A well-formed request that asks for something impossible (422)."""


class ConflictError(ValueError):
    """A request that contradicts what is stored (409): an event_id reused for another event."""
