"""The Spark trainer (training/): on a small shop, in local[2], through service.train and the CLI.

Its artifact must be the local trainer's format (load_engine reads it, a server serves it), hold what
Spark fitted (item neighbours and co-occurrence equal to the local fit's, a planted pair found by
item-to-item and ALS), leave out the unscalable parts above UNSCALABLE_MAX_ITEMS, and read a
PostgreSQL log over JDBC. Two Spark trains in all, in this process: starting Spark is most of the
first one's 40 s on 2 cores.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from config import Settings, load_settings
from recommenders import registry
from recommenders.artifacts import load_engine, newest_artifact
from recommenders.records import EventType, InteractionRecord, ItemRecord
from service import RecommendationService, train
from storage import Store
from main import main
from web import create_app

pytest.importorskip("pyspark")
if not Path("/usr/bin/java").exists() and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime (.ci/run installs Debian's openjdk-17-jre-headless)",
                allow_module_level=True)

MASTER = "local[2]"
PLANTED = ("planted-a", "planted-b")  # bought together by the same 15 users, never apart
UNSCALABLE = [name for name, entry in registry.registrations().items() if not entry.scales]


def shop_records() -> tuple[list[ItemRecord], list[InteractionRecord]]:
    """40 items in 4 categories plus the planted pair, and ~450 events of 60 users (views, carts,
    purchases and ratings, one rating replaced by a later one)."""
    rng = np.random.default_rng(7)
    categories = ["books", "kitchen", "garden", "toys"]
    items = [ItemRecord(f"item-{n}", f"Item {n} {categories[n % 4]}", categories[n % 4], f"brand-{n % 3}",
                        f"a {categories[n % 4]} thing number {n}") for n in range(40)]
    items += [ItemRecord(item_id, item_id.title(), "kitchen", "brand-0", "moka pot espresso") for item_id in PLANTED]
    events, moment = [], 1_700_000_000.0
    for user in range(60):
        for item in rng.choice(40, size=6, replace=False):
            kind = [EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.RATING][rng.integers(4)]
            rating = float(rng.integers(1, 6)) if kind == EventType.RATING else None
            moment += 60.0
            events.append(InteractionRecord(f"user-{user}", f"item-{item}", kind, moment, rating))
    for user in range(15):
        for item_id in PLANTED:
            moment += 60.0
            events.append(InteractionRecord(f"user-{user}", item_id, EventType.PURCHASE, moment))
    events.append(InteractionRecord("user-20", "item-3", EventType.RATING, moment + 60, 5.0))
    events.append(InteractionRecord("user-20", "item-3", EventType.RATING, moment + 120, 1.0))  # replaces the 5
    return items, events


def fill(store: Store) -> None:
    items, events = shop_records()
    store.upsert_items(items)
    store.append_interactions(events)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A SQLite store with the shop, and its local and Spark artifacts."""
    folder = tmp_path_factory.mktemp("spark-shop")
    settings = load_settings(database_url=f"sqlite:///{folder / 'store.db'}", load_demo_data=False, redis_url=None,
                             model_dir=folder / "models")
    store = Store(settings.database_url)
    fill(store)
    local = train(store, settings.model_copy(update={"model_dir": folder / "local"}))
    spark = train(store, settings, spark_master=MASTER)
    yield settings, store, local, spark
    store.close()


def test_the_spark_artifact_is_the_local_format_with_what_spark_fitted(shop):
    settings, store, local, spark = shop
    assert spark.manifest["engine"] == "spark" and local.manifest["engine"] == "local"
    assert spark.manifest["left_out"] == [] and spark.manifest["counts"] == local.manifest["counts"]
    on_spark, on_driver = load_engine(spark), load_engine(local)
    assert list(on_spark.components) == list(registry.registrations())
    # the model state Spark contributed (popularity, co-occurrence) and the item neighbours equal the local fit's
    assert np.allclose(on_spark.data.popularity, on_driver.data.popularity)
    assert (on_spark.data.cooccurrence.snapshot != on_driver.data.cooccurrence.snapshot).nnz == 0
    spark_similarity = on_spark.components["item_based"].similarity
    assert abs(spark_similarity - on_driver.components["item_based"].similarity).max() < 1e-9
    # ALS was fitted by MLlib: the planted pair's factors point the same way, and every user with events is solved
    a, b = (on_spark.data.items.get(item_id) for item_id in PLANTED)
    als = on_spark.components["als"]
    cosine = als.similar_items(on_spark.data, np.array([a]))[0]
    assert cosine[b] > 0.99 and np.delete(cosine, [a, b]).max() < cosine[b]
    assert als.solved.sum() == on_spark.data.n_users
    assert on_spark.similar_items(PLANTED[0], 1)[0].item == PLANTED[1]


def serving(settings: Settings) -> RecommendationService:
    """The service a server builds on `settings` (the newest artifact in its MODEL_DIR), without retrains."""
    return RecommendationService.create(settings.model_copy(update={"retrain_interval_seconds": 0}))


def test_a_server_serves_the_spark_artifact(shop):
    settings, _, _, spark = shop
    service = serving(settings)
    try:
        assert service.model_version == spark.version
        answer = create_app(service.settings, service=service).test_client().get("/recommendations/user-3?count=5")
        assert answer.status_code == 200 and len(answer.get_json()["recommendations"]) == 5
    finally:
        service.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the shared fixture's emptied database
def test_the_cli_reads_postgresql_over_jdbc_and_leaves_out_what_does_not_scale(database_url, tmp_path, monkeypatch,
                                                                                capsys):
    """A large catalog in miniature: the unscalable parts left out, ANN retrieval on."""
    store = Store(database_url)
    fill(store)
    through = store.last_seq()
    for name, value in {"DATABASE_URL": database_url, "MODEL_DIR": str(tmp_path / "models"), "LOAD_DEMO_DATA": "0",
                        "UNSCALABLE_MAX_ITEMS": "10", "ANN_MIN_ITEMS": "10", "RETRAIN_INTERVAL_SECONDS": "0"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    try:
        # in this process, where the Spark of the module's fixture already runs: a subprocess starts a JVM (20 s here)
        assert main(["train", "--engine", "spark", "--spark-master", MASTER]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # no terminal: one JSON line
        assert summary["engine"] == "spark" and summary["left_out"] == UNSCALABLE
        assert summary["fitted_through_seq"] == through and summary["interactions"] == len(shop_records()[1])
        local = train(store, settings.model_copy(update={"model_dir": tmp_path / "local"}))
        assert local.manifest["left_out"] == UNSCALABLE  # the local trainer leaves out the same
        for artifact in (local, newest_artifact(settings.model_path)):
            assert artifact.manifest["retrieval"]  # ANN indexes over the Spark-fitted ALS factors too
            engine = load_engine(artifact, ann_min_items=settings.ann_min_items)
            assert not set(UNSCALABLE) & set(engine.components)
            assert engine.collaborative.used_weights == {"als": 1.0}  # 0.2 of 1.0, scaled to the whole share
            assert engine.similar_items(PLANTED[0], 1)[0].item == PLANTED[1]
    finally:
        store.close()
    service = serving(settings)
    try:
        client = create_app(service.settings, service=service).test_client()
        for case in registry.cases():
            answer = client.get(f"/recommend?user_id=user-3&case={case}&count=5")
            assert answer.status_code == 200, (case, answer.get_json())
        answer = client.get("/recommend?user_id=user-3&case=collaborative&count=5").get_json()
        assert answer["recommendations"] and all("predicted_rating" not in r for r in answer["recommendations"])
    finally:
        service.close()


def test_an_empty_log_is_refused_with_a_reason(tmp_path, monkeypatch, capsys):
    """A fresh clone's store has no events: Spark would fail on an empty schema; the CLI says what to do."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    Store(f"sqlite:///{tmp_path / 'empty.db'}").close()
    assert main(["train", "--engine", "spark", "--spark-master", MASTER]) == 1
    assert "the log holds no events yet" in capsys.readouterr().err
