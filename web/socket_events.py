"""Socket.IO: a browser registers as a user and receives that user's fresh recommendations.

Each user has a room; every connection registered as the user (several tabs) joins it, and the
service's notifier emits `realtime_recommendation` to the room after each of the user's events.
Every process applies every event from the store's log, so each one pushes to the subscribers
connected to it, whichever process received the event: no message queue is needed.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict

from flask import current_app, request
from flask_socketio import SocketIO, emit, join_room, leave_room
from pydantic import ValidationError

from web.auth import verify_token
from web.context import get_service, get_settings, recommendations_json
from web.extensions import socketio
from web.schemas import SubscriptionMessage

SUBSCRIPTIONS_KEY = "subscriptions"


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


class Subscriptions:
    """Which connection of this process listens for which users; counted in /stats."""

    def __init__(self) -> None:
        self._users_by_sid: dict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()
        self.pushes_sent = 0

    def connect(self, sid: str) -> None:
        with self._lock:
            self._users_by_sid[sid] = set()

    def add(self, sid: str, user_id: str) -> None:
        with self._lock:
            self._users_by_sid[sid].add(user_id)

    def remove(self, sid: str, user_id: str) -> None:
        with self._lock:
            self._users_by_sid[sid].discard(user_id)

    def drop(self, sid: str) -> None:
        with self._lock:
            self._users_by_sid.pop(sid, None)

    def listening(self, user_id: str) -> bool:
        with self._lock:
            return any(user_id in users for users in self._users_by_sid.values())

    def count_push(self) -> None:
        with self._lock:
            self.pushes_sent += 1

    def stats(self) -> dict:
        with self._lock:
            users = set().union(*self._users_by_sid.values()) if self._users_by_sid else set()
            return {"connections": len(self._users_by_sid), "connected_users": len(users),
                    "pushes_sent": self.pushes_sent}


class SocketIONotifier:
    """The service's Notifier: emits to the user's room on this process."""

    def __init__(self, server: SocketIO, subscriptions: Subscriptions) -> None:
        self._server = server
        self._subscriptions = subscriptions

    def listening(self, user_id: str) -> bool:
        return self._subscriptions.listening(user_id)

    def push(self, user_id: str, payload: dict) -> None:
        self._server.emit("realtime_recommendation", payload, to=user_room(user_id))
        self._subscriptions.count_push()


def current_subscriptions() -> Subscriptions:
    return current_app.extensions[SUBSCRIPTIONS_KEY]


def _message(data: object) -> SubscriptionMessage | None:
    """The validated message, or None after telling the client what was wrong."""
    try:
        return SubscriptionMessage.model_validate(data)
    except ValidationError as error:
        details = error.errors(include_url=False, include_context=False, include_input=False)
        emit("error", {"error": "validation_error", "message": details[0]["msg"] if details else "invalid message"})
        return None


@socketio.on("connect")
def on_connect(auth: object = None) -> None:
    current_subscriptions().connect(request.sid)


@socketio.on("disconnect")
def on_disconnect(reason: object = None) -> None:
    current_subscriptions().drop(request.sid)


@socketio.on("register_user")
def on_register_user(data: object) -> dict | None:
    """Join the user's room and answer with their current recommendations."""
    message = _message(data)
    if message is None:
        return None
    if get_settings().api_key and not verify_token(message.user_id, message.token):
        emit("error", {"error": "unauthorized",
                       "message": f"registering as {message.user_id} needs a valid token from POST /auth/token"})
        return None
    join_room(user_room(message.user_id))
    current_subscriptions().add(request.sid, message.user_id)
    result = get_service().realtime_recommendations(message.user_id, get_settings().default_count)
    payload = {"user_id": message.user_id, "recommendations": recommendations_json(result.recommendations),
               "generated_at": time.time()}
    emit("registered", payload)
    return payload


@socketio.on("unregister_user")
def on_unregister_user(data: object) -> dict | None:
    message = _message(data)
    if message is None:
        return None
    leave_room(user_room(message.user_id))
    current_subscriptions().remove(request.sid, message.user_id)
    payload = {"user_id": message.user_id}
    emit("unregistered", payload)
    return payload
