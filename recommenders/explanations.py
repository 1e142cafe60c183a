"""Why an item is recommended, in a few words: "because you liked iPhone 15", "popular in kitchen",
"bought together with Barista Express Espresso Machine". Items are named as people see them (the
catalog name; the id only for an item without one).

The anchor of a personal recommendation is the user's liked item closest to it, weighted by how
much the user liked it: by item-to-item similarity (people who liked one liked the other), or, for
items with no such link, by content similarity. Each is one sparse product over the k items.
"""
from __future__ import annotations

import numpy as np

from recommenders.base import row_entries
from recommenders.collaborative import ItemBasedRecommender
from recommenders.content_based import ContentRecommender
from recommenders.interaction_data import InteractionData
from recommenders.records import EventType

MAX_ANCHORS = 50  # a reason names one of the user's 50 most-liked items: cheap for heavy users
CONTEXT_VERBS = {EventType.VIEW: "viewed together with", EventType.ADD_TO_CART: "bought together with",
                 EventType.PURCHASE: "bought together with", EventType.RATING: "liked together with"}


class Explainer:
    def __init__(self, content: ContentRecommender, item_based: ItemBasedRecommender) -> None:
        self.content = content
        self.item_based = item_based

    def reasons(self, data: InteractionData, items: np.ndarray, labels: list[str], user: int | None = None,
                context_item: int | None = None, event_type: EventType = EventType.VIEW) -> list[str]:
        anchors = self._anchors(data, user, items) if user is not None else {}
        reasons = []
        for position, (item, label) in enumerate(zip(items.tolist(), labels)):
            if label in ("popular", "trending"):
                category = data.item_records[item].category
                reasons.append(f"{label} in {category}" if category else f"{label} overall")
            elif context_item is not None and label == "behavior":
                reasons.append(f"{CONTEXT_VERBS[event_type]} {_name(data, context_item)}")
            elif context_item is not None and (label == "content" or position not in anchors):
                reasons.append(f"similar to {_name(data, context_item)}")
            elif position in anchors:
                reasons.append(f"because you liked {_name(data, anchors[position])}")
            else:
                reasons.append("popular with shoppers like you")
        return reasons

    def _anchors(self, data: InteractionData, user: int, items: np.ndarray) -> dict[int, int]:
        """Position in `items` -> the user's liked item closest to it (where any is close at all)."""
        liked, weights = data.preference_row(user)
        if liked.size == 0 or items.size == 0:
            return {}
        strongest = np.argsort(-weights, kind="stable")[:MAX_ANCHORS]
        liked, weights = liked[strongest], weights[strongest]
        anchors: dict[int, int] = {}
        # Co-interaction first (cheap, and the usual reason); text similarity for the items left over.
        for similarity in (self._item_similarity, self._content_similarity):
            open_positions = np.array([p for p in range(items.size) if p not in anchors], dtype=np.int64)
            if open_positions.size == 0:
                break
            affinity = similarity(liked, items[open_positions])
            if affinity is None:
                continue
            affinity *= weights[:, None]  # the items the user liked most make the better reason
            best = affinity.argmax(axis=0)
            anchors.update({int(position): int(liked[row]) for position, row, column in
                            zip(open_positions, best, range(open_positions.size)) if affinity[row, column] > 0})
        return anchors

    # Both read only the k recommended items' rows: column indexing the whole matrix is not cheap.
    def _content_similarity(self, liked: np.ndarray, items: np.ndarray) -> np.ndarray | None:
        vectors = self.content.item_vectors
        if liked.max() >= vectors.shape[0] or items.max() >= vectors.shape[0]:
            return None
        return (vectors[items] @ vectors[liked].T).toarray().T

    def _item_similarity(self, liked: np.ndarray, items: np.ndarray) -> np.ndarray | None:
        similarity = self.item_based.similarity
        if liked.max() >= similarity.shape[0] or items.max() >= similarity.shape[0]:
            return None
        # The items' entries straight from the CSR arrays: scipy's row and column slicing, for a few
        # hundred entries, was 6% of a hybrid answer at ml-1m (py-spy).
        entries, lengths = row_entries(similarity, items)
        # liked item -> its row in the result (liked are distinct), by binary search: a catalog-wide lookup
        # table was 8 MB to fill per request at 1M items
        order = np.argsort(liked)
        position = np.minimum(np.searchsorted(liked[order], similarity.indices[entries]), liked.size - 1)
        hit = liked[order][position] == similarity.indices[entries]
        rows = order[position]
        affinity = np.zeros((liked.size, items.size), similarity.dtype)
        np.add.at(affinity, (rows[hit], np.repeat(np.arange(items.size), lengths)[hit]), similarity.data[entries[hit]])
        return affinity


def _name(data: InteractionData, item: int) -> str:
    return data.item_records[item].name or data.items.id_of(item)
