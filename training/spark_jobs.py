"""The Spark computations of the Spark trainer: what has to scale with the log, on a cluster.

Each function takes and returns Spark DataFrames in the engine's index space (`user`, `item`: the
driver's InteractionData indices), so the driver drops the results into arrays without mapping ids
again. They compute what the local components compute in one process's memory:

- the preference cells (InteractionData.preference_matrix): summed event weights plus the weight of
  each pair's latest rating;
- popularity (InteractionData.popularity): each item's summed preferences; a category's popularity
  is the same numbers under the category's mask, so it needs nothing more;
- item-to-item cosine (ItemBasedRecommender.fit) and co-occurrence counts (InteractionData's), both
  from one self-join of the cells on the user, pruned per item (scipy within each block of items);
- ALS factors (ALSRecommender.fit): MLlib's implicit-feedback ALS.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.ml.recommendation import ALS
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recommenders.collaborative import keep_top_per_row
from recommenders.interaction_data import EventWeighting
from recommenders.records import EventType

# The smallest rating MLlib is given: it reads a rating <= 0 as "not preferred" (confidence 1 + alpha|r|
# towards 0), and `preference_confidence` may map a faint preference there.
MIN_MLLIB_RATING = 1e-6


def indexed(events: DataFrame, users: DataFrame, items: DataFrame) -> DataFrame:
    """The events with the engine's `user` and `item` indices; events of items outside the catalog
    are dropped, as InteractionData drops them."""
    return events.join(users, "user_id").join(items, "item_id")


def preference_cells(events: DataFrame, weighting: EventWeighting) -> DataFrame:
    """(user, item, preference) for every pair a user touched, as InteractionData.preference_matrix holds
    them: the pair's summed view / cart / purchase weights plus the weight of its latest rating (by seq,
    a re-rating replaces the old one). A pair seen but not liked (a 2-star rating) is kept with 0: it
    still co-occurs."""
    is_rating = F.col("event_type") == EventType.RATING.value
    weights = F.create_map(*[F.lit(value) for kind in EventType if kind != EventType.RATING
                             for value in (kind.value, weighting.event_weight(kind))])
    latest_rating = F.max_by(F.when(is_rating, F.col("rating")), F.when(is_rating, F.col("seq")))
    cells = events.groupBy("user", "item").agg(
        F.sum(F.when(~is_rating, weights[F.col("event_type")]).otherwise(0.0)).alias("behaviour"),
        latest_rating.alias("rating"))
    rating_weight = F.greatest(F.col("rating") - F.lit(weighting.rating_neutral), F.lit(0.0))
    preference = F.col("behaviour") + F.coalesce(rating_weight, F.lit(0.0))
    return cells.select("user", "item", preference.alias("preference"))


def item_totals(cells: DataFrame) -> DataFrame:
    """(item, popularity, norm): each item's summed preferences, and the norm of its log-damped column."""
    damped = F.log1p("preference")
    return cells.groupBy("item").agg(F.sum("preference").alias("popularity"),
                                     F.sqrt(F.sum(damped * damped)).alias("norm"))


def item_pairs(cells: DataFrame, norms: DataFrame, blocks: int, neighbours: int, cooccurring: int) -> DataFrame:
    """(kind, item, other, score): for kind COSINE each item's `neighbours` most similar others, by the
    cosine of log-damped preference columns (ItemBasedRecommender.fit); for kind COUNT its `cooccurring`
    most frequent partners, by how many users touched both (InteractionData's co-occurrence).

    A self-join on the user sends each user's row to every block of items they touched; a block then has
    every user of its items, so it computes its items' whole rows of X^T X with scipy and prunes them
    before anything leaves the task. The plain pair-per-row join (a row per user per pair, summed by
    Spark SQL) took 385 s for the 260M pairs of ml-1m on 2 cores; pruning per item keeps the output, and
    the artifact, linear in the catalog. `norms` is (item, norm): each item's whole column's norm."""
    damped = cells.select("user", "item", F.log1p("preference").alias("value"))
    touched = damped.select("user", (F.col("item") % blocks).alias("block")).distinct()
    rows = touched.join(damped, "user").join(norms, "item")
    return rows.groupBy("block").applyInPandas(partial(_block_pairs, blocks=blocks, neighbours=neighbours,
                                                       cooccurring=cooccurring), PAIRS_SCHEMA)


# kind is a code, not a string: pandas 3's Arrow-backed strings reach pyspark 4.0's serialiser as chunked
# arrays, which it refuses
PAIRS_SCHEMA = "kind int, item long, other long, score double"
COSINE, COUNT = 0, 1


def _block_pairs(rows: pd.DataFrame, blocks: int, neighbours: int, cooccurring: int) -> pd.DataFrame:
    """One block's pruned rows of the cosine and the co-occurrence counts (see item_pairs)."""
    users, user_codes = np.unique(rows["user"].to_numpy(), return_inverse=True)
    items = rows["item"].to_numpy(np.int64)
    size = int(items.max()) + 1
    values = sp.csr_matrix((rows["value"].to_numpy(np.float64), (user_codes, items)), shape=(len(users), size))
    norm = np.zeros(size)
    norm[items] = rows["norm"].to_numpy(np.float64)
    inverse = np.divide(1.0, norm, out=np.zeros(size), where=norm > 0)
    mine = np.flatnonzero(np.arange(size) % blocks == rows["block"].iloc[0])
    scaled = values @ sp.diags(inverse)
    seen = values.copy()
    seen.data = np.ones_like(seen.data)
    frames = []
    for kind, left, right, k in ((COSINE, scaled, scaled, neighbours), (COUNT, seen, seen, cooccurring)):
        product = (left[:, mine].T @ right).tocoo()
        other = product.col != mine[product.row]  # an item is not its own neighbour
        product = sp.csr_matrix((product.data[other], (product.row[other], product.col[other])), shape=product.shape)
        product.eliminate_zeros()
        top = keep_top_per_row(product, k).tocoo()
        frames.append(pd.DataFrame({"kind": kind, "item": mine[top.row], "other": top.col.astype(np.int64),
                                    "score": top.data}))
    return pd.concat(frames, ignore_index=True)


def preference_confidence(preference: Column, alpha: float) -> Column:
    """The MLlib rating whose confidence equals `implicit`'s for the same preference.

    `implicit` (ALSRecommender) takes c = alpha * log1p(w) as the whole confidence; MLlib takes
    c = 1 + alpha * r. So r = log1p(w) - 1 / alpha gives the same c; a faint preference whose c would
    fall below 1 is held at the smallest positive rating (c = 1)."""
    return F.greatest(F.log1p(preference) - F.lit(1.0 / alpha), F.lit(MIN_MLLIB_RATING))


def als_factors(cells: DataFrame, factors: int, regularization: float, iterations: int, alpha: float,
                seed: int, blocks: int) -> tuple[DataFrame, DataFrame]:
    """(id, features) of users and of items: MLlib ALS with implicit preferences on `implicit`'s confidences,
    users and items each in `blocks` blocks.

    MLlib multiplies the regularisation by each row's count of preferences (ALS-WR); `implicit` adds it
    as it is. Dividing by the mean count gives the average user the same regularisation as locally."""
    liked = cells.where(F.col("preference") > 0)
    counts = liked.agg(F.count(F.lit(1)).alias("cells"), F.countDistinct("user").alias("users")).first()
    mean_count = counts["cells"] / max(counts["users"], 1)
    ratings = liked.select("user", "item", preference_confidence(F.col("preference"), alpha).alias("confidence"))
    model = ALS(rank=factors, maxIter=iterations, regParam=regularization / max(mean_count, 1.0), alpha=alpha,
                implicitPrefs=True, seed=seed, userCol="user", itemCol="item", ratingCol="confidence",
                numUserBlocks=blocks, numItemBlocks=blocks).fit(ratings)
    return model.userFactors, model.itemFactors
