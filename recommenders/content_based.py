"""Content-based filtering: items described by their text, category and brand; a user's profile
is the preference-weighted mean of the items they liked."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import OneHotEncoder, normalize

from recommenders.base import Recommender, normalise, padded
from recommenders.interaction_data import InteractionData
from recommenders.records import ItemRecord

# How much each field counts in an item's vector. Text alone dilutes "same brand" among dozens of
# words; as separate one-hot blocks, category and brand count as much as a shop expects.
FIELD_WEIGHTS = {"text": 1.0, "category": 0.5, "brand": 0.7}


class ContentRecommender(Recommender):
    """Cosine between each item's vector and the user's profile."""

    name = "content"

    def __init__(self, max_features: int = 50_000) -> None:
        self.text_vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", max_features=max_features,
                                               token_pattern=r"(?u)\b\w[\w-]+\b")
        self.field_encoder = OneHotEncoder(handle_unknown="ignore")
        self.item_vectors: sp.csr_matrix = sp.csr_matrix((0, 0))
        self._has_text = False

    def fit(self, data: InteractionData) -> "ContentRecommender":
        records = data.item_records
        if not records:  # an empty catalog: nothing to learn until the first item arrives
            self.item_vectors = sp.csr_matrix((0, 0))
            return self
        self._has_text = any(item.text().strip() for item in records)
        if self._has_text:
            try:
                self.text_vectorizer.fit(item.text() for item in records)
            except ValueError:  # only stop words or one-letter tokens: no usable text
                self._has_text = False
        self.field_encoder.fit(_fields(records))
        self.item_vectors = self._vectors(records)
        return self

    def add_item(self, data: InteractionData, item: ItemRecord, index: int) -> None:
        """Vectorise a new or edited item with the fitted vocabulary, so it is recommendable at once.

        A shop that started empty has no vocabulary yet: the first item fits one on the catalog.
        """
        if self.item_vectors.shape[0] == 0:
            self.fit(data)
            return
        row = self._vectors([item])
        if index < self.item_vectors.shape[0]:
            vectors = self.item_vectors.tolil()
            vectors[index] = row
            self.item_vectors = vectors.tocsr()
            return
        gap = sp.csr_matrix((index - self.item_vectors.shape[0], self.item_vectors.shape[1]))
        self.item_vectors = sp.vstack([self.item_vectors, gap, row]).tocsr()

    def profile(self, data: InteractionData, user: int) -> np.ndarray:
        """The user's taste as one dense vector: preference-weighted sum of liked items, L2-normalised.

        Dense, because a sparse-by-sparse product with its input checks cost five times more here.
        """
        items, weights = data.preference_row(user)
        known = items < self.item_vectors.shape[0]
        profile = self.item_vectors[items[known]].T @ weights[known]
        norm = np.linalg.norm(profile)
        return profile / norm if norm > 0 else profile

    def score(self, data: InteractionData, user: int) -> np.ndarray:
        """Cosine to the profile times a popularity prior.

        Pure text similarity ranks obscure items first when item text is thin (a film's title and
        genres): on ML-100K NDCG@10 went from 0.03 to 0.21 with the prior, above popularity alone
        (0.18), with 3.5x its catalog coverage. The floor keeps never-seen items recommendable.
        """
        scores = padded(self.item_vectors @ self.profile(data, user), data.n_items)
        return scores * popularity_prior(data)

    def similar_items(self, data: InteractionData, item: int) -> np.ndarray:
        if item >= self.item_vectors.shape[0]:
            return np.zeros(data.n_items)
        return padded(self.item_vectors @ self.item_vectors[item].toarray().ravel(), data.n_items)

    def _vectors(self, records: list[ItemRecord]) -> sp.csr_matrix:
        fields = self.field_encoder.transform(_fields(records)).tocsc()
        n_categories = len(self.field_encoder.categories_[0])
        blocks = [FIELD_WEIGHTS["category"] * fields[:, :n_categories], FIELD_WEIGHTS["brand"] * fields[:, n_categories:]]
        if self._has_text:
            text = normalize(self.text_vectorizer.transform(item.text() for item in records))
            blocks.insert(0, FIELD_WEIGHTS["text"] * text)
        return normalize(sp.hstack(blocks).tocsr())


def _fields(records: list[ItemRecord]) -> np.ndarray:
    return np.array([[item.category or "", item.brand or ""] for item in records], dtype=object).reshape(-1, 2)


PRIOR_FLOOR, PRIOR_POWER = 0.1, 0.5


def popularity_prior(data: InteractionData) -> np.ndarray:
    """(floor + (1 - floor) * normalised log-popularity) ** power: in (0, 1], gentle at the top."""
    return data.memo("popularity_prior", lambda: (
        PRIOR_FLOOR + (1 - PRIOR_FLOOR) * normalise(np.log1p(data.popularity))) ** PRIOR_POWER)
