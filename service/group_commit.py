"""Group commit: events written at the same time share one transaction, one fsync, and one fold-in.

A durable commit costs a disk flush (1-3 ms here) whatever it holds, so committing events one at a
time caps a process at a few hundred per second. Here the first writer to arrive becomes the
leader: it takes every event waiting at that moment, writes them in one transaction, applies them
to the model, and hands each writer its own result. Writers that arrive meanwhile wait and form
the next group. No thread of its own and no timer: alone, a writer commits at once; under load,
groups grow by themselves.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from recommenders.records import InteractionRecord

Result = tuple[InteractionRecord, bool]
MAX_GROUP = 512  # events per transaction: bounds one commit's latency under a burst


@dataclass
class _Waiting:
    record: InteractionRecord
    result: Result | Exception | None = None


class GroupCommitter:
    """`write(records)` must return one result (or exception) per record, in order, and have applied
    the new ones to the model before it returns, so each writer's answer can rely on it."""

    def __init__(self, write: Callable[[list[InteractionRecord]], list[Result | Exception]]) -> None:
        self._write = write
        self._condition = threading.Condition()
        self._queue: list[_Waiting] = []
        self._leading = False

    def submit(self, record: InteractionRecord) -> Result:
        """Block until the record is committed and applied; its (stored record, created) or its error."""
        waiting = _Waiting(record)
        with self._condition:
            self._queue.append(waiting)
            while waiting.result is None:
                if self._leading:
                    self._condition.wait()
                    continue
                self._leading = True
                self._condition.release()
                try:
                    time.sleep(0)  # one yield: writers already on their way join this group
                    with self._condition:
                        group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
                    self._commit(group)
                finally:
                    self._condition.acquire()
                    self._leading = False
                    self._condition.notify_all()
        if isinstance(waiting.result, Exception):
            raise waiting.result
        return waiting.result

    def _commit(self, group: list[_Waiting]) -> None:
        try:
            results = self._write([waiting.record for waiting in group])
        except Exception as error:  # the whole group failed (the store is down): each writer hears it
            results = [error] * len(group)
        for waiting, result in zip(group, results):
            waiting.result = result
