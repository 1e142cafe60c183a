"""Shared fixtures: a settings object on a throwaway SQLite file, and a throwaway PostgreSQL database.

PostgreSQL tests use the real server at 127.0.0.1:5432 (trust auth). Each test session creates its
own database from the `test` maintenance database and drops it at the end, so runs never collide.
"""
from __future__ import annotations

import os
import uuid

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
