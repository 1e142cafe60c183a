"""Candidate retrieval for catalogs too large to score whole: approximate nearest neighbours (hnswlib).

Scoring every item for every request is fine at thousands of items and hopeless at a million: each
component's row, its normalisation and the top-k are passes over the catalog. Above ANN_MIN_ITEMS
the engine asks this module for a few hundred candidates per request, and the components score only
those (`Recommender.score_items`). The candidates are the union of
- the items with the largest inner product with the user's ALS vector (FactorIndex: the items of the
  largest factor norms scored exactly, an HNSW index over the rest); the vector is solved again after
  the user's events (fold-in), so their next candidates follow them;
- the items nearest the user's content profile (an HNSW index over the items' content vectors, reduced
  to EMBEDDING_DIMENSIONS by a truncated SVD fitted with the index); a new item is added at once;
- the most popular items of the user's favourite categories: content scores text likeness times a
  popularity prior, and in a category whose items read alike the prior decides, which no text index
  can find (without this source the retrieved top 10 held 62% of the exact one at 1M items; with
  3 categories x 50 items 86%, x 100 94%, x 200 98%);
- the item-to-item neighbours of the user's recent items, and the most popular items (newcomers).
For "similar items", the same indexes are queried with the item's own vectors.

hnswlib, by measurement against faiss on 200k synthetic clustered vectors with uneven norms, as ALS
factors have (a one-off script; `bench/ann.py --compare N` repeats it on an artifact's factors): at one
query thread, hnswlib's inner-product HNSW reached recall@100 0.90 at ef 400 against faiss HNSW's 0.87,
in less time (0.32 against 0.40 ms); faiss IVF reached 0.50 at nprobe 64 of 1,024; and hnswlib replaces
an edited item's vector in place where faiss's HNSW can only append. Indexes are saved in hnswlib's own
binary format (no pickle; loading runs no code) beside the arrays.
"""
from __future__ import annotations

import os
from pathlib import Path

import hnswlib
import numpy as np
from sklearn.decomposition import TruncatedSVD

from recommenders.base import row_entries
from recommenders.collaborative import ItemBasedRecommender
from recommenders.content_based import ContentRecommender
from recommenders.interaction_data import InteractionData
from recommenders.matrix_factorization import SEED, ALSRecommender
from recommenders.persistence import load_arrays, save_arrays

EMBEDDING_DIMENSIONS = 64
LINKS = 32  # HNSW's M: 16 reached recall@100 0.90 at ef 400 where 32 reached 0.95 (the synthetic vectors above)
BUILD_EF = 200
# HNSW's search list (ef) per result asked. At 1M items, ef 100 for the top 100 factor candidates found
# 0.9989 of the exact top 100 in 0.41 ms at p50, ef 200 0.9991 in 0.58 ms (with the exact norm head).
SEARCH_EF_PER_RESULT = 1
# ALS factor norms are skewed (1M items, 2M events: median 0.03, 99th percentile 0.75, largest 73), and
# an inner-product HNSW graph over them finds few of the true best: recall@100 0.61 at ef 400, 0.70 at
# ef 3,200. The NORM_HEAD share of items with the largest norms, where most of any user's best are, is
# scored exactly (10,000 x 64 at 1M: ~0.1 ms) and the graph holds the rest: recall@100 0.9994 at ef 200
# (norm-ranging, Yan et al. 2018; bench/ann.py).
NORM_HEAD = 0.01
# How many candidates each source gives: about 850 distinct in all at 1M items, 4.4 ms a list at p50.
FACTOR_CANDIDATES, CONTENT_CANDIDATES, NEIGHBOUR_CANDIDATES, POPULAR_CANDIDATES = 100, 50, 100, 100
RECENT_ANCHORS = 20  # the user's latest items whose item-to-item neighbours are candidates
FAVOURITE_CATEGORIES, CATEGORY_HEAD = 3, 200  # the user's top categories, and each one's most popular items
# The popular heads are ranked again after this many events: a pass over the catalog (sorting 1M items by
# category and popularity), so not per event; at the same log position every process holds the same heads.
POPULAR_REFRESH_EVENTS = 10_000
FACTORS_FILE, CONTENT_FILE, ARRAYS_FILE = "factors.hnsw", "content.hnsw", "retrieval.npz"


class VectorIndex:
    """One HNSW index over item vectors, labelled by item index, that grows as items arrive."""

    def __init__(self, index: hnswlib.Index) -> None:
        self.index = index

    @classmethod
    def build(cls, vectors: np.ndarray, items: np.ndarray, space: str) -> "VectorIndex":
        """An index of vectors[items], labelled by `items`."""
        index = hnswlib.Index(space=space, dim=vectors.shape[1])
        index.init_index(max_elements=max(len(items), 1), M=LINKS, ef_construction=BUILD_EF, random_seed=SEED)
        # Every core for the build (the train job's); two builds then differ a little, but every server
        # loads the one the artifact holds, and adds later items one at a time in log order: all alike.
        index.set_num_threads(os.cpu_count() or 1)
        if len(items):
            index.add_items(vectors[items].astype(np.float32), items)
        index.set_num_threads(1)
        return cls(index)

    @classmethod
    def load(cls, path: Path, space: str, dimensions: int) -> "VectorIndex":
        index = hnswlib.Index(space=space, dim=dimensions)
        index.load_index(str(path))
        index.set_num_threads(1)
        return cls(index)

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))

    @property
    def size(self) -> int:
        return self.index.get_current_count()

    def nearest(self, query: np.ndarray, n: int) -> np.ndarray:
        """Up to n item indices nearest `query`, nearest first (none for an empty index or a zero query)."""
        n = min(n, self.size)
        if n == 0 or not np.any(query):
            return np.empty(0, np.int64)
        self.index.set_ef(SEARCH_EF_PER_RESULT * n)
        labels, _ = self.index.knn_query(query[None, :].astype(np.float32), k=n)
        return labels[0].astype(np.int64)

    def put(self, vectors: np.ndarray, items: np.ndarray) -> None:
        """Add new items, or replace the vectors of items already in (an edited product)."""
        if len(items) == 0:
            return
        needed = self.size + len(items)
        if needed > self.index.get_max_elements():
            self.index.resize_index(max(needed, 2 * self.index.get_max_elements()))
        self.index.add_items(vectors.astype(np.float32), items)


class FactorIndex:
    """Items by inner product with a vector: the NORM_HEAD share of largest norm exactly, the rest by HNSW."""

    def __init__(self, factors: np.ndarray, head: np.ndarray, tail: VectorIndex) -> None:
        self.factors = factors  # the ALS item factors (shared with the ALS component, not copied)
        self.head = head
        self.head_factors = np.ascontiguousarray(factors[head])  # one block: no gather per query
        self.tail = tail

    @classmethod
    def load(cls, path: Path, factors: np.ndarray) -> "FactorIndex":
        """The index `Retrieval.save` wrote to the folder `path`, over these (the artifact's) factors."""
        return cls(factors, load_arrays(path / ARRAYS_FILE, only={"head"})["head"],
                   VectorIndex.load(path / FACTORS_FILE, "ip", factors.shape[1]))

    @classmethod
    def build(cls, factors: np.ndarray) -> "FactorIndex":
        norms = np.linalg.norm(factors, axis=1)
        by_norm = np.argsort(-norms, kind="stable")
        size = int(np.ceil(NORM_HEAD * len(factors)))
        head, tail = np.sort(by_norm[:size]), by_norm[size:]
        return cls(factors, head, VectorIndex.build(factors, np.sort(tail[norms[tail] > 0]), "ip"))

    @property
    def size(self) -> int:
        return len(self.head) + self.tail.size

    def nearest(self, query: np.ndarray, n: int) -> np.ndarray:
        """Up to n item indices of the largest inner product with `query`, largest first."""
        if not np.any(query):
            return np.empty(0, np.int64)
        head_scores = self.head_factors @ query
        if len(self.head) > n:
            head = self.head[np.argpartition(-head_scores, n - 1)[:n]]
        else:
            head = self.head
        found = np.concatenate([head, self.tail.nearest(query, n)])
        return found[np.argsort(-(self.factors[found] @ query), kind="stable")[:n]]


class Retrieval:
    """Candidates for a user or an item from the ANN indexes; built at fit, shipped in the artifact."""

    def __init__(self, als: ALSRecommender, content: ContentRecommender, item_based: ItemBasedRecommender) -> None:
        self.als = als
        self.content = content
        self.item_based = item_based
        self.factors: FactorIndex | None = None
        self.texts: VectorIndex | None = None
        self.projection = np.zeros((0, EMBEDDING_DIMENSIONS), np.float32)  # content vector -> embedding
        # (events bucket, the popular head, items grouped by category with each group's start)
        self._heads: tuple[int, np.ndarray, np.ndarray, np.ndarray] = (-1, *[np.empty(0, np.int64)] * 3)

    def fit(self, data: InteractionData) -> "Retrieval":
        self.factors = FactorIndex.build(self.als.item_factors)
        vectors = self.content.item_vectors
        dimensions = min(EMBEDDING_DIMENSIONS, max(vectors.shape[1] - 1, 1))
        svd = TruncatedSVD(dimensions, algorithm="randomized", n_iter=4, random_state=SEED).fit(vectors)
        self.projection = svd.components_.T.astype(np.float32)
        embedded = self._embed(np.arange(vectors.shape[0]))
        self.texts = VectorIndex.build(embedded, np.flatnonzero(np.any(embedded != 0, axis=1)), "cosine")
        return self

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.factors.tail.save(path / FACTORS_FILE)
        self.texts.save(path / CONTENT_FILE)
        save_arrays(path / ARRAYS_FILE, {"projection": self.projection, "head": self.factors.head})

    @classmethod
    def load(cls, path: Path, als: ALSRecommender, content: ContentRecommender,
             item_based: ItemBasedRecommender) -> "Retrieval":
        retrieval = cls(als, content, item_based)
        retrieval.projection = load_arrays(path / ARRAYS_FILE, only={"projection"})["projection"]
        retrieval.factors = FactorIndex.load(path, als.item_factors)
        retrieval.texts = VectorIndex.load(path / CONTENT_FILE, "cosine", retrieval.projection.shape[1])
        return retrieval

    def candidates(self, data: InteractionData, user: int | None, product: int | None = None,
                   at_least: int = 0) -> np.ndarray:
        """Sorted distinct item indices worth scoring for the user (seen ones included: the caller masks),
        and, for the push, for the product on screen (`similar_candidates`, `at_least` from each index).
        With the popular head among them, always more than a list of MAX_COUNT (100) needs."""
        sources = [self.popular_head(data)]
        if user is not None:
            users = np.array([user])
            sources += [self.factors.nearest(self.als.user_vectors(data, users)[0], FACTOR_CANDIDATES),
                        self.texts.nearest(self._embed_profile(self.content.profiles(data, users)[0]),
                                           CONTENT_CANDIDATES),
                        self._neighbours(data.recent.of(user).items[-RECENT_ANCHORS:]),
                        self._favourite_categories_head(data, user)]
        if product is not None:
            sources.append(self.similar_candidates(data, product, at_least))
        return np.unique(np.concatenate(sources))

    def similar_candidates(self, data: InteractionData, item: int, at_least: int = 0) -> np.ndarray:
        """Sorted distinct item indices worth scoring as like `item` (the item itself included); each index
        gives `at_least` of them: a new item has no factors yet, and its text alone must fill a list."""
        factors = self.als.item_factors
        by_factors = (self.factors.nearest(factors[item], max(FACTOR_CANDIDATES, at_least)) if item < len(factors)
                      else np.empty(0, np.int64))
        by_text = self.texts.nearest(self._embed(np.array([item]))[0], max(CONTENT_CANDIDATES, at_least + 1))
        return np.unique(np.concatenate([by_factors, by_text, self._neighbours(np.array([item]))]))

    def popular_head(self, data: InteractionData) -> np.ndarray:
        """The POPULAR_CANDIDATES most popular items (as of the last refresh)."""
        return self._refreshed_heads(data)[1]

    def _favourite_categories_head(self, data: InteractionData, user: int) -> np.ndarray:
        """The CATEGORY_HEAD most popular items of each of the user's FAVOURITE_CATEGORIES."""
        _, _, grouped, starts = self._refreshed_heads(data)
        weights = data.category_preferences(user)
        favourites = np.argsort(-weights, kind="stable")[:FAVOURITE_CATEGORIES]
        favourites = favourites[(weights[favourites] > 0) & (favourites < len(starts) - 1)]
        if favourites.size == 0:
            return np.empty(0, np.int64)
        return np.concatenate([grouped[starts[c]:starts[c + 1]] for c in favourites.tolist()])

    def _refreshed_heads(self, data: InteractionData) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        bucket = data.n_interactions // POPULAR_REFRESH_EVENTS
        if self._heads[0] != bucket or len(self._heads[3]) < len(data.categories) + 1:
            popularity = data.popularity[:data.n_items]
            head = np.argpartition(-popularity, POPULAR_CANDIDATES)[:POPULAR_CANDIDATES] \
                if data.n_items > POPULAR_CANDIDATES else np.arange(data.n_items)
            categories = data.item_category[:data.n_items]
            order = np.lexsort((-popularity, categories))  # by category, the most popular first
            order = order[categories[order] >= 0]
            group_starts = np.searchsorted(categories[order], np.arange(len(data.categories) + 1))
            rank = np.arange(len(order)) - group_starts[categories[order]]
            kept = order[rank < CATEGORY_HEAD]
            self._heads = (bucket, np.sort(head), kept,
                           np.searchsorted(categories[kept], np.arange(len(data.categories) + 1)))
        return self._heads

    def add_items(self, data: InteractionData, items: np.ndarray) -> None:
        """New or edited items into the content index at once (after the content model vectorised them).
        They have no ALS factors until the next fit, so the factor index keeps what it has."""
        embedded = self._embed(items)
        described = np.any(embedded != 0, axis=1)
        self.texts.put(embedded[described], items[described])

    def _embed(self, items: np.ndarray) -> np.ndarray:
        """The items' content vectors in the reduced space (zeros for items without a vector)."""
        vectors = self.content.item_vectors
        known = items < vectors.shape[0]
        embedded = np.zeros((len(items), self.projection.shape[1]), np.float32)
        if known.any():
            embedded[known] = np.asarray(vectors[items[known]] @ self.projection)
        return embedded

    def _embed_profile(self, profile: np.ndarray) -> np.ndarray:
        """A content profile (dense over the vocabulary, mostly zeros) in the reduced space: only its
        nonzero terms' rows of the projection (the whole product was 1-2 ms at 50k terms)."""
        used = np.flatnonzero(profile)
        return profile[used].astype(np.float32) @ self.projection[used]

    def _neighbours(self, anchors: np.ndarray) -> np.ndarray:
        """The strongest item-to-item neighbours of these items, by summed similarity."""
        similarity = self.item_based.similarity
        entries, _ = row_entries(similarity, anchors[anchors < similarity.shape[0]])
        if entries.size == 0:
            return np.empty(0, np.int64)
        found, position = np.unique(similarity.indices[entries], return_inverse=True)  # no catalog-wide bincount
        totals = np.bincount(position, weights=similarity.data[entries])
        return found[np.argsort(-totals, kind="stable")[:NEIGHBOUR_CANDIDATES]]
