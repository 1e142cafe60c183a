"""Every stored event and every deleted user, told to every server process over Redis pub/sub.

Each process holds its own engine; the one that stored an event publishes it, the others apply it
(Engine.observe is idempotent by seq), so any process can answer any user. Likewise the process
that deleted a user publishes that, and the others forget the user. A message's `kind` says which:
"event" or "forget_user". A process that misses a message (a Redis hiccup) catches up at its next
retrain, which reads the whole log.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Callable

import redis

from recommenders.records import EventType, InteractionRecord

log = logging.getLogger(__name__)


class RedisEventBus:
    def __init__(self, redis_url: str, channel: str) -> None:
        self._redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self._channel = channel
        self.origin = uuid.uuid4().hex  # lets a process skip its own messages

    def publish(self, event: InteractionRecord) -> None:
        self._send("event", {"seq": event.seq, "user_id": event.user_id, "item_id": event.item_id,
                             "event_type": event.event_type.value, "rating": event.rating,
                             "timestamp": event.timestamp, "event_id": event.event_id})

    def publish_forget_user(self, user_id: str) -> None:
        self._send("forget_user", {"user_id": user_id})

    def start(self, on_event: Callable[[InteractionRecord], object],
              on_forget_user: Callable[[str], object]) -> threading.Thread:
        """Listen in the background (a greenlet under gevent), calling the handler of each message's
        kind for other processes' messages."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._channel)
        listener = threading.Thread(target=self._listen, args=(pubsub, on_event, on_forget_user), name="event-bus",
                                    daemon=True)
        listener.start()
        return listener

    def _send(self, kind: str, message: dict) -> None:
        self._redis.publish(self._channel, json.dumps({"origin": self.origin, "kind": kind, **message}))

    def _listen(self, pubsub: redis.client.PubSub, on_event: Callable[[InteractionRecord], object],
                on_forget_user: Callable[[str], object]) -> None:
        for message in pubsub.listen():
            data = json.loads(message["data"])
            if data.pop("origin") == self.origin:
                continue
            kind = data.pop("kind", None)
            try:
                if kind == "forget_user":
                    on_forget_user(data["user_id"])
                else:
                    on_event(InteractionRecord(**{**data, "event_type": EventType(data["event_type"])}))
            except Exception:  # one bad message must not stop the listener
                log.exception("could not apply a %s message (seq %s) from another process", kind, data.get("seq"))
