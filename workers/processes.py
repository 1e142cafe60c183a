"""The supervisor's child processes: one `python main.py serve` per worker, tied to the supervisor's life."""
from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MAIN_PATH = Path(__file__).resolve().parent.parent / "main.py"
PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_SECONDS = 15.0


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the supervisor dies, even by SIGKILL, so that no
    orphaned worker or nginx keeps a port. The supervisor is single-threaded: the signal follows the
    thread that forked, which is its only one. Skipped where there is no glibc prctl."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's pick), for a new worker."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ended(code: int) -> str:
    """How a child ended, from its Popen return code (negative: the signal that killed it)."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {-code}"


class WorkerStartError(RuntimeError):
    """A worker exited or did not answer /health in time; the message says which."""


@dataclass
class Worker:
    """One `python main.py serve --host 127.0.0.1 --port P` process filling one slot."""

    slot: int
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def __str__(self) -> str:
        pid = self.process.pid if self.process else "-"
        return f"worker {self.slot} (pid {pid}, port {self.port})"

    def spawn(self) -> "Worker":
        """Start the process. Its log (stderr) goes to the supervisor's, one stream as from one server.
        Its stdout only names its internal address, which is not for clients, so it is dropped."""
        self.process = subprocess.Popen(
            [sys.executable, str(MAIN_PATH), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent,
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        """True once GET /health answers 200 (the model is loaded and the store reachable)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        try:
            with opener.open(f"http://127.0.0.1:{self.port}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def check_started(self, deadline: float) -> bool:
        """True when healthy, False while still starting; raise WorkerStartError if it exited or is late."""
        code = self.process.poll()
        if code is not None:
            raise WorkerStartError(f"{self} exited with code {code} before answering /health")
        if self.healthy():
            return True
        if time.monotonic() > deadline:
            raise WorkerStartError(f"{self} did not answer /health in time")
        return False

    def stop(self) -> None:
        """SIGTERM (the server stops accepting and finishes its requests), SIGKILL if it hangs."""
        self.terminate()
        self.reap()

    def terminate(self) -> None:
        if self.alive():
            self.process.terminate()

    def reap(self) -> None:
        """Wait for a terminated worker to exit; SIGKILL it after STOP_TIMEOUT_SECONDS."""
        if self.process is None:
            return
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
