"""Real `python main.py serve` processes for tests: free ports, an isolated environment, clean stop."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from main import ServerProcess


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(directory: Path, **overrides: str) -> dict[str, str]:
    """The test environment for a server: its own SQLite file, defaults for everything else."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("HOST", "PORT", "REDIS_URL", "LOG_REQUESTS")}
    env["DATABASE_URL"] = f"sqlite:///{directory / 'server.db'}"
    env.update(overrides)
    return env


@dataclass
class LiveServer:
    process: ServerProcess
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return self.process.url

    def stop(self) -> None:
        self.process.stop()


def start_server(directory: Path, **env_overrides: str) -> LiveServer:
    """Start a server on a free port with its output in `directory`; returns once /health answers."""
    directory.mkdir(parents=True, exist_ok=True)
    stdout, stderr = directory / "stdout.txt", directory / "stderr.txt"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = ServerProcess(free_port(), env=server_env(directory, **env_overrides), stdout=out, stderr=err).start()
    return LiveServer(process, stdout, stderr)
