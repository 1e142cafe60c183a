"""The Spark trainer's driver: read the log into Spark, run the jobs, assemble the engine.

`python main.py train --engine spark` comes here through service.train, which writes the engine
this returns as the same artifact the local trainer writes (recommenders/artifacts.py): a server
loads it without knowing which trainer made it.

What runs where:
- Spark (training/spark_jobs.py): the preference cells, popularity, item-to-item neighbours and
  co-occurrence counts (a self-join on the user, pruned per item), and ALS (MLlib).
- The driver: the model state (InteractionData, the arrays every server holds), built from the events
  collected from Spark with Spark's popularity and co-occurrence; the TF-IDF content vectors
  (scikit-learn: one pass over the catalog); and, below UNSCALABLE_MAX_ITEMS, the components that do
  not scale, with their local `fit`.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sqlalchemy.engine import URL

from config import Settings
from recommenders import registry
from recommenders.base import Recommender
from recommenders.engine import Engine
from recommenders.hybrid import HybridPolicy
from recommenders.interaction_data import EventColumns, EventWeighting, InteractionData
from recommenders.matrix_factorization import SEED
from recommenders.records import ItemRecord
from recommenders.sparse_state import IdMap
from storage import Store
from storage.schema import Interaction
from training import spark_jobs

EVENT_COLUMNS = ["user_id", "item_id", "event_type", "rating", "timestamp", "seq"]
# The components Spark fits; every other one is fitted on the driver (or left out).
SPARK_FITTED = ("als", "item_based")
SUBMITTED = "PYSPARK_GATEWAY_PORT"  # set when spark-submit runs this process (pyspark joins its JVM)
BLOCKS_PER_CORE = 2  # item blocks of the neighbour job (spark_jobs.item_pairs) per core of the cluster
# Shuffle partitions per core: Spark's fixed 200 made ml-1m's small stages on 2 cores mostly task overhead.
SHUFFLE_PARTITIONS_PER_CORE = 4


def spark_session(master: str, jars: Sequence[Path] = ()) -> SparkSession:
    """A session on `master` that hands results to the driver as Arrow, with times in UTC (the store's).

    Under spark-submit (which starts the JVM and tells pyspark its port) spark-submit's --master and
    --jars decide: a master set here would override them, and a jar given after the JVM started never
    reaches its driver."""
    builder = SparkSession.builder
    if SUBMITTED not in os.environ:
        builder = builder.master(master)
        if jars:
            builder = builder.config("spark.jars", ",".join(str(jar) for jar in jars))
    builder = (builder.appName("recommendations-train")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.session.timeZone", "UTC")
               # a train job reports through its progress bar or JSON line, not a UI port or console bars
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spark.conf.set("spark.sql.shuffle.partitions", SHUFFLE_PARTITIONS_PER_CORE * spark.sparkContext.defaultParallelism)
    return spark


def jdbc_source(url: URL) -> tuple[str, dict[str, str]]:
    """The JDBC URL and connection properties of a PostgreSQL SQLAlchemy URL."""
    properties = {"driver": "org.postgresql.Driver", "user": url.username or ""}
    if url.password:
        properties["password"] = str(url.password)
    return f"jdbc:postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database}", properties


def read_log(spark: SparkSession, store: Store, through: int, work_dir: Path) -> DataFrame:
    """The events up to seq `through` as a Spark DataFrame (EVENT_COLUMNS).

    PostgreSQL is read straight over JDBC, in seq ranges, one per task. SQLite has no network reader: its
    log is exported to Parquet in `work_dir` a page at a time (never the whole log in memory), and read there.
    """
    if store.backend == "postgresql":
        jdbc_url, properties = jdbc_source(store.sql_engine.url)
        events = spark.read.jdbc(jdbc_url, Interaction.__tablename__, column="seq", lowerBound=1,
                                 upperBound=max(through, 1) + 1, numPartitions=spark.sparkContext.defaultParallelism,
                                 properties=properties)
        events = events.where(F.col("seq") <= through).withColumn(
            "timestamp", F.unix_micros("occurred_at").cast("double") / 1e6)
        return events.select(*EVENT_COLUMNS)
    path = work_dir / "events.parquet"
    export_parquet(store.interaction_pages(until_seq=through), path)
    return spark.read.parquet(str(path))


def export_parquet(pages: Iterable[pd.DataFrame], path: Path) -> None:
    """Write frames of EVENT_COLUMNS to one Parquet file, page by page."""
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()),
                        ("rating", pa.float64()), ("timestamp", pa.float64()), ("seq", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for page in pages:
            writer.write_table(pa.Table.from_pandas(page[EVENT_COLUMNS], schema=schema, preserve_index=False))


def fit_on_spark(spark: SparkSession, events: DataFrame, items: Sequence[ItemRecord], user_ids: Iterable[str],
                 weighting: EventWeighting, policy: HybridPolicy, collaborative_weights: dict[str, float] | None,
                 unscalable_max_items: int, cooccurring: int, ann_min_items: int | None = None,
                 on_component: Callable[[str], None] | None = None) -> Engine:
    """A fitted engine, like Engine.build's, with what scales fitted on Spark (see the module's docstring);
    with its ANN indexes from `ann_min_items` items (Engine.index_for_retrieval)."""
    started = time.perf_counter()
    events = events.persist()  # read once (JDBC, Parquet) for the driver's copy and the jobs
    frame = events.toPandas().sort_values("seq", kind="stable")  # seq order: a later rating replaces an earlier
    # The engine's indices: users as given, then any other in first appearance (as InteractionData numbers them)
    users, catalog = IdMap(user_ids), IdMap(item.item_id for item in items)
    users.indices(pd.unique(frame["user_id"].astype(str)))
    user_list, item_list = users.ids_of(range(len(users))), catalog.ids_of(range(len(catalog)))
    index_frame = indexed_on_spark(spark, events, user_list, item_list)
    cells = spark_jobs.preference_cells(index_frame, weighting).persist()
    n_items = len(item_list)
    left_out = registry.left_out(n_items, unscalable_max_items)
    components: dict[str, Recommender] = {}
    seconds: dict[str, float] = {}

    def done(name: str, began: float) -> None:
        seconds[name] = time.perf_counter() - began
        if on_component is not None:
            on_component(name)

    began = time.perf_counter()
    totals = spark_jobs.item_totals(cells).persist()
    popularity = dense_vector(totals, "item", "popularity", n_items)
    item_based = registry.registrations()["item_based"].factory()
    # Enough blocks to keep every core busy; each user's row travels once per block they touch, so no more.
    cores = spark.sparkContext.defaultParallelism
    blocks = BLOCKS_PER_CORE * cores
    pairs = spark_jobs.item_pairs(cells, totals.select("item", "norm"), blocks, item_based.params()["neighbours"],
                                  cooccurring).toPandas()
    totals.unpersist()
    similarity, cooccurrence = (square_matrix(pairs[pairs["kind"] == kind], n_items)
                                  for kind in (spark_jobs.COSINE, spark_jobs.COUNT))
    data = InteractionData(items, user_list, EventColumns.from_frame(frame), weighting,
                           popularity=popularity, cooccurrence=cooccurrence)
    item_based.restore({"similarity": similarity})
    components["item_based"] = item_based
    done("item_based", began)

    began = time.perf_counter()
    als = registry.registrations()["als"].factory()
    params = als.params()
    user_factors, item_factors = spark_jobs.als_factors(cells, params["factors"], params["regularization"],
                                                        params["iterations"], params["alpha"], SEED, cores)
    user_vectors, solved = factor_rows(user_factors, data.n_users, params["factors"])
    item_vectors, _ = factor_rows(item_factors, n_items, params["factors"])
    als.restore({"item_factors": item_vectors, "user_factors": user_vectors, "solved": solved})
    components["als"] = als
    done("als", began)
    cells.unpersist()
    events.unpersist()

    for name, entry in registry.registrations().items():  # the driver's share, in the registry's order
        if name in SPARK_FITTED or name in left_out:
            continue
        began = time.perf_counter()
        components[name] = entry.factory().fit(data)
        done(name, began)
    ordered = {name: components[name] for name in registry.registrations() if name in components}
    engine = Engine(data, ordered, policy, collaborative_weights)
    engine.component_seconds = seconds
    engine.index_for_retrieval(ann_min_items, on_component)
    engine.fit_seconds, engine.fitted_at = time.perf_counter() - started, time.time()
    return engine


def indexed_on_spark(spark: SparkSession, events: DataFrame, user_ids: list[str], item_ids: list[str]) -> DataFrame:
    """The events with the driver's user and item indices (spark_jobs.indexed)."""
    users = spark.createDataFrame(pd.DataFrame({"user_id": user_ids, "user": np.arange(len(user_ids))}))
    items = spark.createDataFrame(pd.DataFrame({"item_id": item_ids, "item": np.arange(len(item_ids))}))
    return spark_jobs.indexed(events, users, items)


def dense_vector(frame: DataFrame, index: str, value: str, size: int) -> np.ndarray:
    """A (index, value) DataFrame as a float64 vector of `size`, 0 where absent."""
    collected = frame.toPandas()
    vector = np.zeros(size)
    vector[collected[index].to_numpy(np.int64)] = collected[value].to_numpy(np.float64)
    return vector


def square_matrix(pairs: pd.DataFrame, size: int) -> sp.csr_matrix:
    """(item, other, score) pairs as a size x size CSR."""
    return sp.csr_matrix((pairs["score"].to_numpy(np.float64),
                          (pairs["item"].to_numpy(np.int64), pairs["other"].to_numpy(np.int64))), shape=(size, size))


def factor_rows(factors: DataFrame, size: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """MLlib's (id, features) as a float32 matrix of `size` rows, zeros where MLlib had no row; and which it had."""
    table = factors.toArrow()
    ids = table.column("id").to_numpy()
    values = table.column("features").combine_chunks().flatten().to_numpy().reshape(-1, rank)
    matrix, present = np.zeros((size, rank), np.float32), np.zeros(size, bool)
    matrix[ids], present[ids] = values, True
    return matrix, present


def fit_from_store(store: Store, settings: Settings, through: int, master: str,
                   on_component: Callable[[str], None] | None = None) -> Engine:
    """`fit_on_spark` on the store's log up to `through`, on a session at `master` (service.train's Spark path)."""
    if store.counts()["interactions"] == 0:  # MLlib and Spark's readers fail on nothing with a schema error
        raise ValueError("the log holds no events yet: nothing for Spark to fit (load some with `python main.py "
                         "load`, or train the empty model with `python main.py train`)")
    if store.backend == "postgresql" and not settings.spark_jdbc_jar.is_file():
        raise ValueError(f"SPARK_JDBC_JAR {settings.spark_jdbc_jar} is missing: Spark reads PostgreSQL through it "
                         "(Debian: apt-get install libpostgresql-jdbc-java)")
    # Given whenever it is there: Spark's JVM loads a jar into its driver only at its start, so a later session
    # in the same process (a server's retrain, a test) finds the JDBC driver only if the first had it.
    spark = spark_session(master, [settings.spark_jdbc_jar] if settings.spark_jdbc_jar.is_file() else [])
    try:
        with tempfile.TemporaryDirectory(prefix="spark-train-", dir=settings.spark_work_dir) as work_dir:
            events = read_log(spark, store, through, Path(work_dir))
            return fit_on_spark(spark, events, store.all_items(), store.all_user_ids(),
                                EventWeighting(**settings.event_weights.model_dump()),
                                HybridPolicy(**settings.hybrid.model_dump()), settings.collaborative_weights,
                                settings.unscalable_max_items, settings.spark_cooccurrence_per_item,
                                settings.ann_min_items, on_component)
    finally:
        spark.stop()
