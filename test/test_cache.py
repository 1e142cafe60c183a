"""The cache's behaviour, run against both backends: in-process and the real Redis at 127.0.0.1:6379.

Each Redis test gets its own namespace, cleared afterwards, so runs never see each other's keys.
"""
from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest
import redis

from config.settings import load_settings
from recommenders.records import Recommendation
from utils.cache import RankedList, RecommendationCache, RedisRecommendationCache, make_cache

REDIS_URL = "redis://127.0.0.1:6379/0"
TTLS = {"recommendations": 300, "profiles": 3600, "similar": 86400, "popular": 1800}
STATS_FIELDS = {"hits", "misses", "hit_rate", "size", "max_size", "ttl_seconds"}

RANKED = [Recommendation("i1", 0.9, "hybrid", {"reason": "bought together", "rank": [1, 2]}),
          Recommendation("i2", 0.25, "content_based")]
OTHER = [Recommendation("i3", 0.5, "collaborative")]
PROFILE = {"user_id": "alice", "interactions": 2, "top_categories": [{"name": "books", "weight": 1.5}]}
HYBRID = ("recommend", "hybrid", None, None, None)
REALTIME = ("realtime", "i1", "view")
AS_OF = ("model-1", 7)  # (model version, log position) of the engine that computed an answer


@pytest.fixture
def namespace():
    name = f"test-cache-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))  # the answers and the hit counters
    if keys:
        client.delete(*keys)


@pytest.fixture(params=["local", "redis"])
def new_cache(request):
    """Builds caches of one backend; Redis ones of a test share a namespace, like several processes."""
    if request.param == "local":
        return lambda ttls=TTLS: RecommendationCache(ttls)
    name = request.getfixturevalue("namespace")
    return lambda ttls=TTLS: RedisRecommendationCache(REDIS_URL, ttls, name)


@pytest.fixture
def cache(new_cache):
    return new_cache()


def test_round_trip_keeps_recommendations_and_their_extra_fields(cache):
    cache.put("recommendations", "alice", RANKED, HYBRID)
    cache.put("profiles", "alice", PROFILE)
    cache.put("similar", "i1", [])
    assert cache.get("recommendations", "alice", HYBRID) == RANKED
    assert cache.get("profiles", "alice") == PROFILE
    assert cache.get("similar", "i1") == []  # an empty answer is a hit, not a miss
    assert cache.get("similar", "i2") is None


def test_variants_of_one_user_are_kept_apart(cache):
    cache.put("recommendations", "alice", RANKED, HYBRID)
    cache.put("recommendations", "alice", OTHER, REALTIME)
    assert cache.get("recommendations", "alice", HYBRID) == RANKED
    assert cache.get("recommendations", "alice", REALTIME) == OTHER
    assert cache.get("recommendations", "alice", ("realtime", "i2", "view")) is None
    assert cache.get("recommendations", "bob", HYBRID) is None


def test_invalidate_user_drops_all_of_that_user_only(cache):
    for user in ("alice", "bob"):
        cache.put("recommendations", user, RANKED, HYBRID)
        cache.put("recommendations", user, OTHER, REALTIME)
        cache.put("profiles", user, PROFILE)
    assert cache.invalidate_user("alice") is True
    assert [cache.get("recommendations", "alice", v) for v in (HYBRID, REALTIME)] == [None, None]
    assert cache.get("profiles", "alice") is None
    assert cache.get("recommendations", "bob", HYBRID) == RANKED
    assert cache.get("profiles", "bob") == PROFILE
    assert cache.invalidate_user("alice") is False
    assert cache.invalidate_user("nobody") is False


def test_non_user_kinds_are_keyed_by_ids_tuples_and_none(cache):
    cache.put("popular", ("popular", None), RANKED)
    cache.put("popular", ("popular", "books"), OTHER)
    cache.put("popular", ("recommend", "popular", None, None, None), OTHER)
    cache.put("similar", "i1", RANKED)
    assert cache.get("popular", ("popular", None)) == RANKED
    assert cache.get("popular", ("popular", "books")) == OTHER
    assert cache.get("popular", ("recommend", "popular", None, None, None)) == OTHER
    assert cache.get("popular", ("popular", "toys")) is None
    cache.invalidate("similar", "i1")
    assert cache.get("similar", "i1") is None
    assert cache.get("popular", ("popular", None)) == RANKED


def test_entries_expire_after_their_ttl_counted_from_creation(new_cache):
    cache = new_cache({kind: 1 for kind in TTLS})
    cache.put("recommendations", "alice", RANKED, HYBRID)
    cache.put("profiles", "alice", PROFILE)
    cache.put("popular", ("popular", None), RANKED)
    time.sleep(0.6)
    cache.put("recommendations", "alice", OTHER, REALTIME)  # a later variant does not extend the user's entry
    assert cache.get("recommendations", "alice", HYBRID) == RANKED
    time.sleep(0.6)
    cache.expire()
    assert cache.get("recommendations", "alice", HYBRID) is None
    assert cache.get("recommendations", "alice", REALTIME) is None
    assert cache.get("profiles", "alice") is None
    assert cache.get("popular", ("popular", None)) is None


def test_a_full_kind_drops_its_least_recently_used_entry():
    cache = RecommendationCache(TTLS, max_entries=2)
    cache.put("similar", "i1", RANKED)
    cache.put("similar", "i2", OTHER)
    assert cache.get("similar", "i1") == RANKED  # i2 is now the least recently used
    cache.put("similar", "i3", OTHER)
    assert [cache.get("similar", item) for item in ("i1", "i2", "i3")] == [RANKED, None, OTHER]
    assert cache.stats()["similar"]["size"] == 2 and cache.stats()["similar"]["max_size"] == 2


def test_stats_count_hits_misses_and_sizes(cache):
    assert cache.get("recommendations", "alice", HYBRID) is None
    cache.put("recommendations", "alice", RANKED, HYBRID)
    cache.put("recommendations", "alice", OTHER, REALTIME)
    cache.put("recommendations", "bob", RANKED, HYBRID)
    cache.get("recommendations", "alice", HYBRID)
    cache.get("recommendations", "bob", HYBRID)
    cache.put("popular", ("popular", None), RANKED)
    stats = cache.stats()
    assert set(stats) == {"recommendations", "profiles", "similar", "popular"}
    assert all(set(entry) == STATS_FIELDS for entry in stats.values())
    recs = stats["recommendations"]
    assert (recs["hits"], recs["misses"], recs["hit_rate"]) == (2, 1, 0.6667)
    assert recs["size"] == 2 and recs["ttl_seconds"] == 300  # one entry per user
    assert (stats["popular"]["size"], stats["popular"]["hit_rate"]) == (1, 0.0)
    profiles = stats["profiles"]
    assert (profiles["hits"], profiles["misses"], profiles["size"], profiles["ttl_seconds"]) == (0, 0, 0, 3600)


def test_two_redis_caches_on_one_namespace_share_entries_invalidations_and_counts(namespace):
    """Two server processes: what A caches B serves, and the invalidation every process applies from the
    log drops the answer from both tiers of both."""
    a, b = (RedisRecommendationCache(REDIS_URL, TTLS, namespace) for _ in range(2))
    a.put("recommendations", "alice", RANKED, HYBRID, AS_OF)
    a.put("profiles", "alice", PROFILE)
    assert b.get("recommendations", "alice", HYBRID, lambda: AS_OF) == RANKED  # from Redis, then kept by B
    assert b.get("recommendations", "alice", HYBRID, lambda: AS_OF) == RANKED  # from B's own tier
    assert b.get("profiles", "alice") == PROFILE
    assert b.stats()["recommendations"]["hits"] == 2 and a.stats()["profiles"]["hits"] == 1
    assert [cache.invalidate_user("alice") for cache in (b, a)] == [True, True]  # as each applies the event
    for cache in (a, b):
        assert cache.get("recommendations", "alice", HYBRID, lambda: AS_OF) is None
        assert cache.get("profiles", "alice") is None
    assert a.stats()["recommendations"]["misses"] == 2


def test_a_shared_entry_is_kept_in_the_readers_process_and_served_from_there(own_redis, monkeypatch):
    """A hit in the local tier needs no Redis: with Redis hung, a call to it would wait for the timeout
    and mark it down."""
    monkeypatch.setattr("utils.cache.HIT_FLUSH_SECONDS", 3600.0)  # no batch of hit counts falls due meanwhile
    url, process = own_redis
    namespace = f"test-cache-{uuid.uuid4().hex}"
    writer, reader = (RedisRecommendationCache(url, TTLS, namespace) for _ in range(2))
    writer.put("recommendations", "alice", RANKED, HYBRID, AS_OF)
    writer.put("similar", "i1", OTHER, as_of=AS_OF)
    assert reader.get("recommendations", "alice", HYBRID, lambda: AS_OF) == RANKED
    assert reader.get("similar", "i1", as_of=lambda: AS_OF) == OTHER
    os.kill(process.pid, signal.SIGSTOP)
    started = time.monotonic()
    for _ in range(3):
        assert writer.get("recommendations", "alice", HYBRID, lambda: AS_OF) == RANKED  # its own put
        assert reader.get("recommendations", "alice", HYBRID, lambda: AS_OF) == RANKED  # its copy
        assert reader.get("similar", "i1", as_of=lambda: AS_OF) == OTHER
    assert time.monotonic() - started < 0.3
    assert not reader.down and not writer.down
    assert reader.invalidate_user("alice") is False  # Redis is down: the local tier is emptied ...
    assert reader.get("recommendations", "alice", HYBRID, lambda: AS_OF) is None  # ... and this one gone


def test_an_entry_from_a_process_behind_this_one_or_from_another_model_is_served_but_not_kept(own_redis):
    """A process that had not yet applied an event may store an answer without it after this process
    dropped the shared one: served, as any shared entry, but a copy would outlive the next event's
    invalidation here, since this process has applied that event already."""
    url, process = own_redis
    namespace = f"test-cache-{uuid.uuid4().hex}"
    writer, reader = (RedisRecommendationCache(url, TTLS, namespace) for _ in range(2))
    version, position = AS_OF
    writer.put("recommendations", "behind", RANKED, HYBRID, (version, position - 1))
    writer.put("recommendations", "ahead", RANKED, HYBRID, (version, position + 1))
    writer.put("recommendations", "old_model", RANKED, HYBRID, ("model-0", position))
    writer.put("recommendations", "unstamped", RANKED, HYBRID)
    writer.put("similar", "behind", OTHER, as_of=(version, position - 1))
    writer.put("popular", "behind", OTHER, as_of=(version, position - 1))  # no log entry drops popular answers
    for user in ("behind", "ahead", "old_model", "unstamped"):
        assert reader.get("recommendations", user, HYBRID, lambda: AS_OF) == RANKED
    assert reader.get("recommendations", "ahead", HYBRID) == RANKED  # a reader that does not say is not kept
    for kind in ("similar", "popular"):
        assert reader.get(kind, "behind", as_of=lambda: AS_OF) == OTHER
    os.kill(process.pid, signal.SIGSTOP)
    assert reader.get("recommendations", "ahead", HYBRID, lambda: AS_OF) == RANKED
    assert reader.get("popular", "behind", as_of=lambda: AS_OF) == OTHER
    assert not reader.down
    assert reader.get("recommendations", "behind", HYBRID, lambda: AS_OF) is None  # not kept: Redis is asked
    assert reader.down
    for user in ("old_model", "unstamped"):
        assert reader.get("recommendations", user, HYBRID, lambda: AS_OF) is None
    assert reader.get("similar", "behind", as_of=lambda: AS_OF) is None


def test_a_kept_copy_expires_with_the_shared_entry(namespace):
    writer, reader = (RedisRecommendationCache(REDIS_URL, {kind: 1 for kind in TTLS}, namespace) for _ in range(2))
    writer.put("popular", ("popular", None), RANKED, as_of=AS_OF)
    writer.put("recommendations", "alice", RANKED, HYBRID, AS_OF)
    time.sleep(0.6)
    assert reader.get("popular", ("popular", None), as_of=lambda: AS_OF) == RANKED  # kept with ~0.4 s left
    assert reader.get("recommendations", "alice", HYBRID, lambda: AS_OF) == RANKED
    time.sleep(0.6)
    assert reader.get("popular", ("popular", None), as_of=lambda: AS_OF) is None
    assert reader.get("recommendations", "alice", HYBRID, lambda: AS_OF) is None


def test_local_tier_hits_reach_the_shared_counters_in_batches(namespace, monkeypatch):
    monkeypatch.setattr("utils.cache.HIT_FLUSH_SECONDS", 0.5)
    a, b = (RedisRecommendationCache(REDIS_URL, TTLS, namespace) for _ in range(2))
    a.put("similar", "i1", OTHER)
    for _ in range(5):
        assert a.get("similar", "i1") == OTHER
    assert b.hit_counts()["similar"] == (0, 0)  # no Redis call per local hit
    assert a.hit_counts()["similar"] == (5, 0)  # a process's own figures include its latest hits
    assert b.hit_counts()["similar"] == (5, 0)
    a.get("similar", "i1")
    a.expire()  # the cache-cleanup job adds them
    assert b.hit_counts()["similar"] == (6, 0)
    a.get("similar", "i1")
    assert b.hit_counts()["similar"] == (6, 0)
    time.sleep(0.6)
    a.get("similar", "i1")  # the first local hit after HIT_FLUSH_SECONDS adds them
    assert b.hit_counts()["similar"] == (8, 0)


def test_redis_layout_is_json_hashes_with_the_kind_ttl(namespace):
    cache = RedisRecommendationCache(REDIS_URL, TTLS, namespace)
    cache.put("recommendations", "alice", RANKED, HYBRID, AS_OF)
    cache.put("popular", ("popular", None), OTHER)
    client = cache._redis
    user_key = f"{namespace}:recommendations:alice"
    assert client.type(user_key) == "hash" and 0 < client.ttl(user_key) <= 300
    stored = client.hgetall(user_key)
    assert list(stored) == ['stamped:["recommend","hybrid",null,null,null]']
    entry = json.loads(stored[list(stored)[0]])
    assert entry["as_of"] == list(AS_OF) and entry["value"][0]["extra"] == RANKED[0].extra
    popular_key = f'{namespace}:popular:stamped:["popular",null]'
    entry = json.loads(client.get(popular_key))
    assert entry["as_of"] is None and entry["value"][0]["item"] == "i3" and 0 < client.ttl(popular_key) <= 1800


def test_a_ranked_list_renders_each_count_once_and_keeps_a_few():
    renders = []

    def render(recommendations):
        renders.append(len(recommendations))
        return json.dumps([r.item for r in recommendations]).encode()

    ranked = RankedList(RANKED + OTHER * 4)
    assert ranked == RANKED + OTHER * 4 and ranked.json(2, render) == b'["i1", "i2"]'
    assert ranked.json(2, render) == b'["i1", "i2"]' and ranked.json(1, render) == b'["i1"]'
    assert renders == [2, 1]
    for count in (3, 3, 4, 5, 5):  # 3 and 4 are kept too; 5 is one count too many
        ranked.json(count, render)
    assert renders == [2, 1, 3, 4, 5, 5]
    assert [ranked.json(count, render) for count in (1, 2)] == [b'["i1"]', b'["i1", "i2"]'] and len(renders) == 6


def test_make_cache_picks_redis_only_when_a_url_is_set():
    assert type(make_cache(load_settings(redis_url=None))) is RecommendationCache
    assert type(make_cache(load_settings(redis_url=REDIS_URL))) is RedisRecommendationCache


def test_hit_counts_match_the_stats_counters(cache):
    cache.put("similar", "i1", [])
    cache.get("similar", "i1")
    cache.get("similar", "nope")
    counts = cache.hit_counts()
    assert counts["similar"] == (1, 1)
    assert {kind: (figures["hits"], figures["misses"]) for kind, figures in cache.stats().items()} == counts


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own on a free port, so it can be paused (never the shared one)."""
    import subprocess

    from live_server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    process = subprocess.Popen(["redis-server", "--port", url.split(":")[2].split("/")[0], "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _answers(url):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield url, process
    os.kill(process.pid, signal.SIGCONT)
    process.terminate()
    process.wait()


def _answers(url: str) -> bool:
    import redis

    try:
        return redis.Redis.from_url(url).ping()
    except redis.RedisError:
        return False


def test_a_redis_outage_turns_the_cache_into_misses_and_stale_answers_are_dropped_after(own_redis, monkeypatch):
    monkeypatch.setattr("utils.cache.REDIS_RETRY_SECONDS", 0.0)
    url, process = own_redis
    namespace = f"test-cache-{uuid.uuid4().hex}"
    cache = RedisRecommendationCache(url, TTLS, namespace)
    RedisRecommendationCache(url, TTLS, namespace).put("recommendations", "alice", RANKED, HYBRID)  # another process
    os.kill(process.pid, signal.SIGSTOP)  # hung: every call times out

    assert cache.get("recommendations", "alice", HYBRID) is None  # a miss, not an error
    assert cache.invalidate_user("alice") is False  # lost: Redis still holds alice's answer
    assert set(cache.stats()) == {"recommendations", "profiles", "similar", "popular"}
    assert cache.down

    os.kill(process.pid, signal.SIGCONT)
    assert cache.get("recommendations", "alice", HYBRID) is None  # the stale answer was dropped first
    assert not cache.down
    cache.put("recommendations", "alice", OTHER, HYBRID)
    assert cache.get("recommendations", "alice", HYBRID) == OTHER


def test_while_redis_is_known_down_the_cache_does_not_wait_on_it(own_redis):
    url, process = own_redis
    cache = RedisRecommendationCache(url, TTLS, f"test-cache-{uuid.uuid4().hex}")
    os.kill(process.pid, signal.SIGSTOP)
    assert cache.get("similar", "i1") is None  # this one waits for the timeout...
    started = time.monotonic()
    for _ in range(20):
        assert cache.get("similar", "i1") is None
    assert time.monotonic() - started < 2.0  # ...the next ones, within REDIS_RETRY_SECONDS, do not (20 x 0.5 s)


def test_while_redis_is_down_answers_are_cached_in_the_process_and_dropped_when_it_returns(own_redis, monkeypatch):
    monkeypatch.setattr("utils.cache.REDIS_RETRY_SECONDS", 0.0)
    url, process = own_redis
    cache = RedisRecommendationCache(url, TTLS, f"test-cache-{uuid.uuid4().hex}")
    assert cache.status() == "ok"
    os.kill(process.pid, signal.SIGSTOP)

    assert cache.status() == "unreachable"
    cache.put("recommendations", "alice", RANKED, HYBRID)
    cache.put("similar", "i1", OTHER)
    assert cache.get("recommendations", "alice", HYBRID) == RANKED  # kept here while Redis is away
    assert cache.invalidate_user("alice") is True  # the log follower's invalidations reach it
    assert cache.get("recommendations", "alice", HYBRID) is None
    assert cache.get("similar", "i1") == OTHER

    os.kill(process.pid, signal.SIGCONT)
    assert cache.status() == "ok"
    assert cache.get("similar", "i1") is None  # Redis again, and nothing from the outage lingers here ...
    os.kill(process.pid, signal.SIGSTOP)
    assert cache.get("similar", "i1") is None  # ... for the next outage either
    os.kill(process.pid, signal.SIGCONT)


def test_the_local_cache_has_no_redis_status():
    assert RecommendationCache(TTLS).status() is None
