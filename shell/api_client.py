"""A thin client for the service's HTTP API (docs/api-contract.md): one method per route.

It keeps one `requests.Session`, so consecutive calls reuse a keep-alive connection, and it turns
every failure into an `ApiError` so callers handle one exception type.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

DEFAULT_TIMEOUT = (3.05, 30.0)  # (connect, read) seconds; a cold model build may take a while


class ApiError(Exception):
    """An error answer from the server, or no answer at all (`status` is None then)."""

    def __init__(self, status: int | None, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}" if status is None else f"{status} {error}: {message}")
        self.status, self.error, self.message = status, error, message


def _segment(value: str) -> str:
    """A path segment with every reserved character escaped (ids may contain ':', '@', '+')."""
    return quote(str(value), safe="")


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    """Query or body fields the caller actually set, so the server applies its own defaults."""
    return {key: value for key, value in values.items() if value is not None}


class ApiClient:
    """Calls the recommendation service at `base_url`, e.g. http://127.0.0.1:5000."""

    def __init__(self, base_url: str, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, path: str, *, params: dict | None = None, body: dict | None = None) -> dict:
        try:
            response = self.session.request(
                method, self.base_url + path, params=_drop_none(params or {}),
                json=None if body is None else _drop_none(body), timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ApiError(None, "unreachable", f"no answer from {self.base_url} ({type(exc).__name__})") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            if isinstance(payload, dict):
                raise ApiError(response.status_code, str(payload.get("error", "error")), str(payload.get("message", "")))
            raise ApiError(response.status_code, "http_error", response.reason or "error without a JSON body")
        if not isinstance(payload, dict):
            raise ApiError(response.status_code, "bad_answer", f"{method} {path} did not answer with a JSON object")
        return payload

    # Recommendations
    def recommendations(self, user_id: str, count: int | None = None) -> dict:
        return self._request("GET", f"/recommendations/{_segment(user_id)}", params={"count": count})

    def recommend(self, user_id: str | None = None, case: str | None = None, product_id: str | None = None,
                  method: str | None = None, category: str | None = None, count: int | None = None) -> dict:
        params = {"user_id": user_id, "case": case, "product_id": product_id, "method": method,
                  "category": category, "count": count}
        return self._request("GET", "/recommend", params=params)

    def realtime_recommend(self, user_id: str, product_id: str | None = None, event_type: str | None = None,
                           count: int | None = None) -> dict:
        params = {"user_id": user_id, "product_id": product_id, "event_type": event_type, "count": count}
        return self._request("GET", "/realtime-recommend", params=params)

    def similar(self, item_id: str, count: int | None = None) -> dict:
        return self._request("GET", f"/similar/{_segment(item_id)}", params={"count": count})

    def popular(self, category: str | None = None, count: int | None = None) -> dict:
        return self._request("GET", "/popular", params={"category": category, "count": count})

    # Events
    def record_interaction(self, user_id: str, item_id: str, rating: float | None = None,
                           event_type: str | None = None, timestamp: str | float | None = None,
                           event_id: str | None = None) -> dict:
        body = {"user_id": user_id, "item_id": item_id, "rating": rating, "event_type": event_type,
                "timestamp": timestamp, "event_id": event_id}
        return self._request("POST", "/interactions", body=body)

    def record_event(self, user_id: str, product_id: str, event_type: str, timestamp: str | float | None = None,
                     event_id: str | None = None) -> dict:
        body = {"user_id": user_id, "product_id": product_id, "event_type": event_type,
                "timestamp": timestamp, "event_id": event_id}
        return self._request("POST", "/event", body=body)

    # Catalog and users
    def items(self, category: str | None = None, limit: int | None = None, offset: int | None = None) -> dict:
        return self._request("GET", "/items", params={"category": category, "limit": limit, "offset": offset})

    def item(self, item_id: str) -> dict:
        return self._request("GET", f"/items/{_segment(item_id)}")

    def put_item(self, item: dict) -> dict:
        return self._request("POST", "/items", body=item)

    def categories(self) -> dict:
        return self._request("GET", "/categories")

    def create_user(self, user_id: str) -> dict:
        return self._request("POST", "/users", body={"user_id": user_id})

    def user(self, user_id: str) -> dict:
        return self._request("GET", f"/users/{_segment(user_id)}")

    # Operations
    def health(self) -> dict:
        return self._request("GET", "/health")

    def stats(self) -> dict:
        return self._request("GET", "/stats")
