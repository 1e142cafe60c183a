"""All configuration in one place, read from environment variables (12-factor style).

Every setting has a default that gives a working single-process service on the demo data:
SQLite under instance/, an in-process cache, bound to 127.0.0.1:5000.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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


class CollaborativeWeights(BaseSettings):
    """Blend of the collaborative parts; `python main.py evaluate --tune` suggests values for a catalog."""

    model_config = SettingsConfigDict(env_prefix="COLLABORATIVE_WEIGHT_")

    user_based: float = 0.4
    ease: float = 0.4
    als: float = 0.2


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
    ttl: CacheTTLs = Field(default_factory=CacheTTLs)
    hybrid: HybridWeights = Field(default_factory=HybridWeights)
    collaborative: CollaborativeWeights = Field(default_factory=CollaborativeWeights)
    event_weights: EventWeights = Field(default_factory=EventWeights)
    cache_max_entries: int = 10_000  # per cache kind
    api_key: str | None = None  # set: write and admin routes need the X-API-Key header (demo default: open)
    api_key_reads: bool = False  # with API_KEY set, also protect read routes
    token_max_age_seconds: int = 24 * 3600  # lifetime of Socket.IO registration tokens (POST /auth/token)
    # Per client address and route (Flask-Limiter syntax, e.g. "600 per minute"); off by default like API_KEY:
    # it costs ~0.3 ms per request, and behind a proxy every client shares one address.
    rate_limit: str = ""
    log_json: bool = True  # one JSON object per log line, with the request id
    async_mode: str = "gevent"  # Flask-SocketIO's mode; chosen by measurement (bench/README.md)
    retrain_interval_seconds: int = 600  # full refit off the request path, swapped in atomically
    compact_interval_seconds: int = 30  # fold single-event updates into the snapshots
    cache_cleanup_interval_seconds: int = 60
    trending_interval_seconds: int = 300


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides (used by tests and the CLI)."""
    return Settings(**overrides)
