"""The supervisor of `python main.py serve --workers N`: N workers behind nginx on one address.

It starts the workers, then nginx in front of them, and from then on:
- replaces a worker that dies (the new one on a new port, put into nginx's configuration once it
  answers /health; retried with a growing delay if it will not start);
- on SIGHUP replaces the workers one by one: start the new one, switch nginx to it, let the old
  one finish what it holds (DRAIN_SECONDS), stop it. At no moment has a slot no worker ready, and a
  new worker that does not start stops the rolling restart with the old ones still serving;
- on SIGTERM or SIGINT stops nginx from accepting, stops the workers, and exits 0.

Workers are plain `python main.py serve` processes sharing the store and MODEL_DIR; each applies
every write from the store's log, so any of them answers any user (README "Several processes").
Only worker 0 runs the scheduled retrain; the others load its artifacts (model_check). On a first
start without an artifact worker 0 trains alone, before the others start and load what it wrote.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from workers.nginx import Balancer, BalancerError, Layout, nginx_path
from workers.processes import Worker, WorkerStartError, ended

if TYPE_CHECKING:  # the CLI's parser imports this package: the standard library only
    from config import Settings

POLL_SECONDS = 0.2  # how often a dead worker or nginx is noticed
# After nginx stopped sending to a worker: time for the requests it holds to finish. The worker's
# own SIGTERM handling then still finishes what is left before it exits.
DRAIN_SECONDS = 2.0
START_TIMEOUT_SECONDS = 600.0  # worker 0 may fit the model on a large log first
RESTART_DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # between failed starts of one slot


def worker_count(value: str) -> int:
    """argparse type of --workers: a positive number, or `auto` for the cores this process may use."""
    if value == "auto":
        return len(os.sched_getaffinity(0))
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a positive number nor 'auto'")
    return int(value)


def say(message: str) -> None:
    print(f"supervisor: {message}", flush=True)


class _Stopping(Exception):
    """SIGTERM or SIGINT arrived: unwind whatever is in progress to the shutdown."""


class Supervisor:
    def __init__(self, settings: Settings, count: int, balancer: Balancer, url: str) -> None:
        self.settings, self.count, self.balancer, self.url = settings, count, balancer, url
        self.workers: list[Worker] = []  # slot -> the worker nginx sends it to
        self._children: list[Worker] = []  # every worker started and not yet stopped (also starting, draining)
        self._failed_starts = [0] * count
        self._retry_at = [0.0] * count
        self._stop_requested = self._restart_requested = False

    # -- signals and waiting ----------------------------------------------------------------------

    def _on_stop(self, signum: int, frame) -> None:
        self._stop_requested = True

    def _on_hup(self, signum: int, frame) -> None:
        self._restart_requested = True

    def _pause(self, seconds: float) -> None:
        """Sleep, but raise _Stopping as soon as a stop is asked for."""
        end = time.monotonic() + seconds
        while not self._stop_requested:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))
        raise _Stopping

    # -- workers ----------------------------------------------------------------------------------

    def _env(self, slot: int) -> dict[str, str]:
        env = dict(os.environ, TRUSTED_PROXIES="1")  # the front nginx appends each client's address
        if slot != 0:
            env["RETRAIN_INTERVAL_SECONDS"] = "0"  # one fit per schedule; the others load its artifact
        return env

    def _spawn(self, slot: int) -> Worker:
        worker = Worker(slot, self._env(slot)).spawn()
        self._children.append(worker)
        return worker

    def _stop(self, worker: Worker) -> None:
        worker.stop()
        self._children.remove(worker)

    def _wait_started(self, starting: list[Worker]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while starting:
            starting = [worker for worker in starting if not worker.check_started(deadline)]
            if starting:
                self._pause(0.1)

    def _layout(self) -> Layout:
        return Layout(self.settings.host, self.settings.port, tuple(worker.port for worker in self.workers),
                      self.settings.max_body_bytes)

    def _replace(self, slot: int) -> None:
        """A new worker for `slot`: started, healthy, in nginx's configuration; then the old one drained and stopped."""
        old, new = self.workers[slot], self._spawn(slot)
        try:
            self._wait_started([new])
        except WorkerStartError:
            self._stop(new)
            raise
        self.workers[slot] = new
        self.balancer.reload(self._layout())
        if old.alive():
            self._pause(DRAIN_SECONDS)
        self._stop(old)
        say(f"{new} serves slot {slot} in place of {old}")

    def _replace_dead(self) -> None:
        for slot, worker in enumerate(self.workers):
            if worker.alive() or time.monotonic() < self._retry_at[slot]:
                continue
            say(f"{worker} {ended(worker.process.returncode)}; starting a replacement")
            try:
                self._replace(slot)
                self._failed_starts[slot] = 0
            except WorkerStartError as error:
                delay = RESTART_DELAYS_SECONDS[min(self._failed_starts[slot], len(RESTART_DELAYS_SECONDS) - 1)]
                self._failed_starts[slot] += 1
                self._retry_at[slot] = time.monotonic() + delay
                say(f"{error}; trying again in {delay:g} s")

    def _rolling_restart(self) -> None:
        say("SIGHUP: replacing the workers one by one")
        for slot in range(self.count):
            try:
                self._replace(slot)
            except WorkerStartError as error:
                say(f"rolling restart stopped: {error}; the other workers keep serving")
                return
        say("rolling restart finished")

    # -- the whole life ---------------------------------------------------------------------------

    def _start(self) -> None:
        self.workers = [self._spawn(0)]
        self._wait_started(self.workers)  # alone: a first start seeds the store and trains the model
        self.workers += [self._spawn(slot) for slot in range(1, self.count)]
        self._wait_started(self.workers[1:])
        self.balancer.start(self._layout())

    def _supervise(self) -> None:
        while True:
            self._pause(POLL_SECONDS)
            if self._restart_requested:
                self._restart_requested = False
                self._rolling_restart()
            self._replace_dead()
            if restarted := self.balancer.restart_dead(self._layout()):
                say(restarted)

    def _shutdown(self) -> None:
        """nginx stops accepting first, then the workers finish their requests and exit, then nginx."""
        self.balancer.quit()
        for worker in self._children:
            worker.terminate()
        for worker in list(self._children):
            self._stop(worker)
        self.balancer.stop()

    def run(self) -> int:
        handlers = {signal.SIGTERM: self._on_stop, signal.SIGINT: self._on_stop, signal.SIGHUP: self._on_hup}
        previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
        try:
            self._start()
            say(f"Serving on {self.url}/ with {self.count} workers "
                f"behind nginx ({self.balancer.configs}); that page links the demo, the dashboard and the API docs")
            self._supervise()
        except _Stopping:
            return 0
        except (BalancerError, WorkerStartError) as error:
            print(f"Cannot serve with {self.count} workers: {error}", file=sys.stderr, flush=True)
            return 1
        finally:
            self._shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            say("stopped")


def _check_address(host: str, port: int) -> None:
    """Fail before the workers start (worker 0 may train for minutes) if nginx could not listen."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def run_workers(settings: Settings, count: int, url: str) -> int:
    """Serve on settings.host:port (`url` for a browser here) with `count` workers until SIGTERM/SIGINT;
    SIGHUP restarts them in turn."""
    try:
        binary = nginx_path()
        _check_address(settings.host, settings.port)
    except (BalancerError, OSError) as error:
        print(f"Cannot serve on {settings.host}:{settings.port}: {getattr(error, 'strerror', None) or error}",
              file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="recs-nginx-"))
    try:
        if os.geteuid() == 0:
            directory.chmod(0o711)  # nginx's unprivileged workers reach their temp folders inside
        return Supervisor(settings, count, Balancer(binary, directory), url).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
