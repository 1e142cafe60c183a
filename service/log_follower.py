"""The serving process's log follower: applies every new log entry, whichever process wrote it.

A wake-up (PostgreSQL LISTEN/NOTIFY; short polling on SQLite) only makes it sooner. What is
applied is always read from the log after the engine's position, so a gap of any length (a paused
or restarted process, a lost notification, a slow consumer) is caught up by the next read.
"""
from __future__ import annotations

import logging
import threading
import time

from service.recommendation_service import RecommendationService

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 1.0  # with no wake-up at all, the log is still read this often
RETRY_SECONDS = 1.0  # after a failed read (the database is down), try again after this long


class LogFollower:
    def __init__(self, service: RecommendationService) -> None:
        self._service = service
        self._wakeup = service.store.log_wakeup(service.settings.log_poll_seconds)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-follower", daemon=True)

    def start(self) -> "LogFollower":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._wakeup.close()

    def _run(self) -> None:
        failing: tuple[float, str] | None = None  # since when, and what, while the log cannot be read
        while not self._stopped.is_set():
            try:
                applied = self._service.catch_up()
            except Exception as error:  # the store is unreachable: keep the position, read again later
                # One line per outage (and per new kind of error in it), not one a second.
                if failing is None or failing[1] != type(error).__name__:
                    log.exception("could not read the log after seq %s; trying again every %.0f s",
                                  self._service.engine.position, RETRY_SECONDS)
                    failing = (failing[0] if failing else time.monotonic(), type(error).__name__)
                time.sleep(RETRY_SECONDS)
                continue
            if failing is not None:
                log.warning("the log is readable again after %.1f s; caught up %d entries, to seq %s",
                            time.monotonic() - failing[0], applied, self._service.engine.position)
                failing = None
            if not applied:
                self._wakeup.wait(IDLE_WAIT_SECONDS, lambda: self._service.engine.position)
