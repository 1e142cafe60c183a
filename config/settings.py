"""All configuration in one place, read from environment variables (12-factor style).

Every setting has a default that gives a working single-process service on the demo data:
SQLite under instance/, an in-process cache, bound to 127.0.0.1:5000.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_ROOT / 'instance' / 'recommendations.db'}"


class CacheTTLs(BaseSettings):
    """Seconds each kind of cached answer lives (the engine README's table)."""

    model_config = SettingsConfigDict(env_prefix="CACHE_TTL_")

    recommendations: int = 300  # user recommendations: change with every interaction
    profiles: int = 3600  # user profiles: preferences drift slowly
    similar: int = 86400  # item similarities: very stable
    popular: int = 1800  # popular items: trends shift during the day


class HybridWeights(BaseSettings):
    """Collaborative share of the blend by history size; content gets the rest.

    The engine README's tiers: new users lean on content, heavy users on collaborative.
    """

    model_config = SettingsConfigDict(env_prefix="HYBRID_")

    new_user_max_interactions: int = 4  # 1-4 interactions: "new"
    heavy_user_min_interactions: int = 20  # 20 or more: "heavy"
    collaborative_new: float = 0.3
    collaborative_experienced: float = 0.5
    collaborative_heavy: float = 0.7


COLLABORATIVE_WEIGHT_PREFIX = "COLLABORATIVE_WEIGHT_"


class EventWeights(BaseSettings):
    """Implicit preference each event adds to a user-item cell; a rating r adds max(r - neutral, 0)."""

    model_config = SettingsConfigDict(env_prefix="EVENT_WEIGHT_")

    view: float = 1.0
    add_to_cart: float = 3.0
    purchase: float = 5.0
    rating_neutral: float = 2.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    redis_namespace: str = "recs"  # prefix of cache keys and pub/sub channels in Redis
    host: str = "127.0.0.1"
    port: int = 5000
    load_demo_data: bool = True  # seed the demo catalog when the store is empty
    max_count: int = 100  # largest `count` a client may ask for; also what the cache keeps
    default_count: int = 10
    max_body_bytes: int = 64 * 1024
    # An event dated further ahead than this is refused (422): one client with a wrong clock must not
    # outrank everybody's real activity in trending, where newer counts more.
    timestamp_max_future_seconds: float = 24 * 3600
    # Connections (web/server.py): one that sends nothing for the idle timeout (a new one, keep-alive
    # between requests, a stalled body) is closed, and one whose request line and headers take longer than
    # the header timeout gets 408. The idle one is longer than a proxy's keep-alive (nginx: 60 s), so the
    # proxy closes first. A Socket.IO WebSocket is exempt once upgraded: Engine.IO's ping/pong detects
    # dead peers there. 0 turns a timeout off.
    http_idle_timeout_seconds: float = 75.0
    http_header_timeout_seconds: float = 20.0
    ttl: CacheTTLs = Field(default_factory=CacheTTLs)
    hybrid: HybridWeights = Field(default_factory=HybridWeights)
    # Overrides of the collaborative blend's registered default weights, from COLLABORATIVE_WEIGHT_<NAME>
    # (`python main.py evaluate --tune` suggests values for a catalog); names come from the registry.
    collaborative_weights: dict[str, float] = Field(default_factory=lambda: {
        name[len(COLLABORATIVE_WEIGHT_PREFIX):].lower(): float(value) for name, value in os.environ.items()
        if name.upper().startswith(COLLABORATIVE_WEIGHT_PREFIX)})
    event_weights: EventWeights = Field(default_factory=EventWeights)
    cache_max_entries: int = 10_000  # per cache kind
    api_key: str | None = None  # set: write and admin routes need the X-API-Key header (demo default: open)
    api_key_reads: bool = False  # with API_KEY set, also protect read routes
    token_max_age_seconds: int = 24 * 3600  # lifetime of Socket.IO registration tokens (POST /auth/token)
    # Per client address and route (Flask-Limiter syntax, e.g. "600 per minute"); off by default like API_KEY:
    # it costs ~0.3 ms per request, and behind a proxy every client shares one address.
    rate_limit: str = ""
    # Proxies in front of this server that append the client's address to X-Forwarded-For: the client
    # is the entry this many from the end. 0 trusts no header (a client can write any), so every client
    # behind a proxy shares the proxy's address; `serve --workers` sets 1 for its workers (its nginx).
    trusted_proxies: int = 0
    log_json: bool = True  # one JSON object per log line, with the request id
    async_mode: str = "gevent"  # Flask-SocketIO's mode; chosen by measurement (bench/README.md)
    # Trained models: written by `python main.py train` (or this process's retrain job), read by servers.
    model_dir: Path | None = None  # default: models/ beside the SQLite file, instance/models for other stores
    model_keep: int = 3  # artifacts kept in model_dir
    model_check_seconds: float = 1.0  # how often a server looks for a newer artifact (a directory listing)
    log_poll_seconds: float = 0.05  # SQLite has no notifications: how often a server reads the log's end
    retrain_interval_seconds: int = 600  # train in this process and swap the new model in; 0 = never
    compact_interval_seconds: int = 30  # fold single-event updates into the snapshots
    cache_cleanup_interval_seconds: int = 60
    trending_interval_seconds: int = 300
    # Experiments (issue 10). An event without a recommendation_id is attributed to the latest list
    # that showed its item to its user this long before it (30 min: one shopping session).
    attribution_window_seconds: float = 1800.0
    # Share of a list's slots given to the least shown items, so a new product is not starved (0: off).
    exploration_weight: float = Field(0.0, ge=0.0, le=1.0)
    # Served lists are logged in batches this often, off the request path (web/background.py).
    # 0.1: a flush holds the interpreter lock while it turns its lists into JSON, and a smaller batch stalls
    # the loop less (cached GET p99 under wrk 10 ms against 16 at 0.5; event->push p99 at ML-1M 8.7-9.1 ms
    # against 10.1-10.7) for the same throughput (bench/README, Impressions).
    impression_flush_seconds: float = 0.1
    impression_buffer_max: int = 200_000  # unwritten impressions kept while the store is down
    experiments_refresh_seconds: float = 1.0  # how soon every process sees an experiment start or stop
    bandit_refresh_seconds: float = 5.0  # Thompson shares and exploration candidates, from the store
    # The learned second stage (recommenders/ranker.py), learnt at each train on what users did next
    # ("temporal") or on a random share of their events ("random"). Off by default: on the next-event
    # protocol either loses to the blend (docs/evaluation.md, "The learned ranker").
    ranker: Literal["temporal", "random", "off"] = "off"
    # From this many items, recommendations and similar items score only candidates retrieved from ANN
    # indexes over the ALS factors and content vectors (recommenders/retrieval.py), built at train and
    # shipped in the artifact. Below it every item is scored (exact; a few ms at 100k items).
    ann_min_items: int = Field(100_000, ge=1)
    # Above this many catalog items every trainer leaves out the components that do not scale (registry.py:
    # EASE's dense items x items inverse, user-based neighbours, Surprise's SVD); the blend re-weighs the rest.
    unscalable_max_items: int = 200_000
    # The Spark trainer (`python main.py train --engine spark`, training/): the cluster, the PostgreSQL JDBC
    # driver it reads the log with (Debian's libpostgresql-jdbc-java), where a SQLite log is exported to
    # Parquet (default: a temporary folder; on a cluster, a path every executor reads), and how many
    # co-occurring items each item keeps (the counts are pruned per item, like item-item neighbours).
    spark_master: str = "local[*]"
    spark_jdbc_jar: Path = Path("/usr/share/java/postgresql.jar")
    spark_work_dir: Path | None = None
    spark_cooccurrence_per_item: int = 200


    @property
    def model_path(self) -> Path:
        if self.model_dir is not None:
            return self.model_dir
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).resolve().parent / "models"
        return PROJECT_ROOT / "instance" / "models"


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides (used by tests and the CLI)."""
    return Settings(**overrides)
