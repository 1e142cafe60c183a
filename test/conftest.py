"""Shared fixtures: a settings object on a throwaway SQLite file, a throwaway PostgreSQL database, and a
PostgreSQL cluster of a test's own that it may stop and start.

PostgreSQL tests use the real server at 127.0.0.1:5432 (trust auth). Each test session creates its
own database from the `test` maintenance database and drops it at the end, so runs never collide.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def model_dir(tmp_path, monkeypatch):
    """Every test trains into its own MODEL_DIR: an artifact belongs to one store."""
    path = tmp_path / "models"
    monkeypatch.setenv("MODEL_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a fresh PostgreSQL database for this test session (SQLAlchemy/psycopg 3 dialect)."""
    import psycopg

    name = f"recs_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Both real backends; PostgreSQL tables are dropped before each test so tests stay independent."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url = request.getfixturevalue("postgres_url")
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One store and engine behind every app of a module (no Redis, no rate limit); the apps differ only
    in the settings each test gives create_app."""
    from config import load_settings
    from service import RecommendationService

    settings = load_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('service') / 'store.db'}",
                             redis_url=None, rate_limit="")
    shared = RecommendationService.create(settings)
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python main.py serve --port <free>` on its own SQLite file, healthy and ready; one per module."""
    from live_server import start_server

    live = start_server(tmp_path_factory.mktemp("server"))
    yield live
    live.stop()


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (initdb + pg_ctl), on a free port, to stop and start."""

    def __init__(self, bin_dir: Path) -> None:
        from live_server import free_port  # imported when used, as in `server`: it imports the whole app

        self.bin_dir = bin_dir
        self.port = free_port()
        # The server runs as `postgres` (it refuses root), so its directory must be reachable by it.
        self.directory = Path(tempfile.mkdtemp(prefix="recs-test-pg-"))
        self.data = self.directory / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        else:
            self._as_owner = []
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run([*self._as_owner, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                        "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self._as_owner, str(self.bin_dir / program), *args], check=True, capture_output=True,
                       timeout=120, cwd=self.directory)


@pytest.fixture
def own_postgres():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if found[-1] is None:
        pytest.skip("PostgreSQL's initdb is not installed (Debian: postgresql)")
    cluster = OwnPostgres(Path(found[-1]).parent)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
