"""Socket.IO: a browser registers as a user and receives that user's fresh recommendations.

Each user has a room; every connection registered as the user (several tabs) joins it, and the
service's notifier emits `realtime_recommendation` to the room after each of the user's events.
Every process applies every event from the store's log, so each one pushes to the subscribers
connected to it, whichever process received the event: no message queue is needed.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, defaultdict

from flask import current_app, request
from flask_socketio import SocketIO, emit, join_room, leave_room
from pydantic import ValidationError
from socketio import packet

from web.auth import verify_token
from web.context import get_service, get_settings, recommendations_json
from web.errors import MAX_JSON_DEPTH, json_too_deep
from web.extensions import socketio
from web.rate_limits import current_attempt_limiter, too_many_attempts
from web.schemas import SubscriptionMessage

SUBSCRIPTIONS_KEY = "subscriptions"


class Unreadable:
    """What a handler receives in place of a message whose JSON is malformed or nested too deeply."""

    def __repr__(self) -> str:
        return "UNREADABLE"


UNREADABLE = Unreadable()
_EVENT_NAME = re.compile(r'^\d(?:\d+-)?(?:/[^,]*,)?\d*\[\s*("(?:[^"\\]|\\.)*")')


class _DepthLimitedJSON:
    """The standard json module (python-socketio's default) behind the depth check of HTTP bodies."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(text, **kwargs):
        if isinstance(text, (str, bytes)) and json_too_deep(text):
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return json.loads(text, **kwargs)


class GuardedPacket(packet.Packet):
    """Socket.IO packets (create_app passes this class as the server's serializer) that survive bad JSON.

    python-socketio parses a message before any handler runs, and JSON nested a few thousand levels
    deep raised RecursionError there: a traceback in the server log and no answer. Here a message nested
    deeper than MAX_JSON_DEPTH, or not JSON at all, still reaches the handler of its event (when its
    name can be read) as UNREADABLE, and the handler answers an `error` event.
    """

    json = _DepthLimitedJSON

    def decode(self, encoded_packet):
        try:
            return super().decode(encoded_packet)
        except (ValueError, RecursionError):
            if self.packet_type != packet.EVENT or not isinstance(encoded_packet, str):
                raise
            name = _EVENT_NAME.match(encoded_packet)
            self.data = [json.loads(name.group(1)) if name else "", UNREADABLE]  # "" has no handler
            return 0


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


class Subscriptions:
    """Which connection of this process listens for which users; counted in /stats.

    Every applied event asks `listening` for its user, so connections are also counted per user:
    that question costs one lookup, not a scan of every connection.
    """

    def __init__(self) -> None:
        self._users_by_sid: dict[str, set[str]] = defaultdict(set)
        self._connections_by_user: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.pushes_sent = 0

    def connect(self, sid: str) -> None:
        with self._lock:
            self._users_by_sid[sid] = set()

    def add(self, sid: str, user_id: str) -> None:
        with self._lock:
            users = self._users_by_sid[sid]
            if user_id not in users:
                users.add(user_id)
                self._connections_by_user[user_id] += 1

    def remove(self, sid: str, user_id: str) -> None:
        with self._lock:
            users = self._users_by_sid[sid]
            if user_id in users:
                users.discard(user_id)
                self._forget_connection(user_id)

    def drop(self, sid: str) -> None:
        with self._lock:
            for user_id in self._users_by_sid.pop(sid, set()):
                self._forget_connection(user_id)

    def _forget_connection(self, user_id: str) -> None:
        self._connections_by_user[user_id] -= 1
        if self._connections_by_user[user_id] <= 0:
            del self._connections_by_user[user_id]

    def listening(self, user_id: str) -> bool:
        return user_id in self._connections_by_user  # one dict lookup: atomic, no lock needed

    def count_push(self) -> None:
        with self._lock:
            self.pushes_sent += 1

    def stats(self) -> dict:
        with self._lock:
            return {"connections": len(self._users_by_sid), "connected_users": len(self._connections_by_user),
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


def _message(event: str, args: tuple) -> SubscriptionMessage | None:
    """The event's one argument, validated; or None after telling the client what was wrong."""
    if len(args) != 1:
        return _invalid(f"{event} takes one argument, {{\"user_id\": ...}}; got {len(args)}")
    if args[0] is UNREADABLE:
        return _invalid(f"{event}: the message is not JSON, or is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return SubscriptionMessage.model_validate(args[0])
    except ValidationError as error:
        details = error.errors(include_url=False, include_context=False, include_input=False)
        return _invalid(details[0]["msg"] if details else "invalid message")


def _invalid(message: str) -> None:
    emit("error", {"error": "validation_error", "message": message})
    return None


@socketio.on("connect")
def on_connect(auth: object = None) -> None:
    current_subscriptions().connect(request.sid)


@socketio.on("disconnect")
def on_disconnect(reason: object = None) -> None:
    current_subscriptions().drop(request.sid)


@socketio.on("register_user")
def on_register_user(*args: object) -> dict | None:
    """Join the user's room and answer with their current recommendations.

    With an API key, the token is checked; with RATE_LIMIT too, a client's failed tokens are counted,
    and over the limit every registration of that client is refused until its window ends.
    """
    message = _message("register_user", args)
    if message is None:
        return None
    if get_settings().api_key:
        attempts = current_attempt_limiter()
        if attempts is not None and attempts.blocked("register_user"):
            emit("error", too_many_attempts(attempts, "register_user"))
            return None
        if not verify_token(message.user_id, message.token):
            if attempts is not None:
                attempts.failed("register_user")
            emit("error", {"error": "unauthorized",
                           "message": f"registering as {message.user_id} needs a valid token from POST /auth/token"})
            return None
    join_room(user_room(message.user_id))
    current_subscriptions().add(request.sid, message.user_id)
    service, count = get_service(), get_settings().default_count
    arm = service.experiments.assign(message.user_id)  # in an experiment, the pushes serve the user's variant
    result = (service.realtime_recommendations(message.user_id, count) if arm is None
              else service.recommendations(message.user_id, count, **arm.variant.options))
    payload = {"user_id": message.user_id, "recommendations": recommendations_json(result.recommendations),
               "generated_at": time.time(),
               **service.served(message.user_id, result.recommendations, "push", "realtime", None, arm)}
    emit("registered", payload)
    return payload


@socketio.on("unregister_user")
def on_unregister_user(*args: object) -> dict | None:
    message = _message("unregister_user", args)
    if message is None:
        return None
    leave_room(user_room(message.user_id))
    current_subscriptions().remove(request.sid, message.user_id)
    payload = {"user_id": message.user_id}
    emit("unregistered", payload)
    return payload
