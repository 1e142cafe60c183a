"""Every stored event, told to every server process over Redis pub/sub.

Each process holds its own engine; the one that stored an event publishes it, the others apply it
(Engine.observe is idempotent by seq), so any process can answer any user. A process that misses a
message (a Redis hiccup) catches up at its next retrain, which reads the whole log.
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
        message = {"origin": self.origin, "seq": event.seq, "user_id": event.user_id, "item_id": event.item_id,
                   "event_type": event.event_type.value, "rating": event.rating, "timestamp": event.timestamp,
                   "event_id": event.event_id}
        self._redis.publish(self._channel, json.dumps(message))

    def start(self, on_event: Callable[[InteractionRecord], object]) -> threading.Thread:
        """Listen in the background (a greenlet under gevent), calling `on_event` for other processes' events."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._channel)
        listener = threading.Thread(target=self._listen, args=(pubsub, on_event), name="event-bus", daemon=True)
        listener.start()
        return listener

    def _listen(self, pubsub: redis.client.PubSub, on_event: Callable[[InteractionRecord], object]) -> None:
        for message in pubsub.listen():
            data = json.loads(message["data"])
            if data.pop("origin") == self.origin:
                continue
            try:
                on_event(InteractionRecord(**{**data, "event_type": EventType(data["event_type"])}))
            except Exception:  # one bad message must not stop the listener
                log.exception("could not apply event %s from another process", data.get("seq"))
