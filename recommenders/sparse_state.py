"""Growable id maps and a sparse matrix that takes single-cell updates cheaply.

scipy's CSR is fast to read and slow to change, so the matrix is a CSR *snapshot* plus an
*overlay* of the rows changed since. Reading one row merges the two (cheap); models that need
every row read the snapshot, which `compact()` refreshes off the request path. It holds user x
item preferences and item x item co-occurrence counts alike.
"""
from __future__ import annotations

from typing import Iterable, Literal

import numpy as np
import scipy.sparse as sp


class IdMap:
    """External string id <-> dense integer index; new ids get the next index, no rebuild."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for external_id in ids:
            self.add(external_id)

    def add(self, external_id: str) -> int:
        index = self._index.get(external_id)
        if index is None:
            index = len(self._ids)
            self._index[external_id] = index
            self._ids.append(external_id)
        return index

    def get(self, external_id: str) -> int | None:
        return self._index.get(external_id)

    def id_of(self, index: int) -> str:
        return self._ids[index]

    def ids_of(self, indices: np.ndarray) -> list[str]:
        return [self._ids[i] for i in indices]

    def indices(self, external_ids: Iterable[str]) -> np.ndarray:
        """Indices of known ids; unknown ids are added (used when loading)."""
        return np.fromiter((self.add(e) for e in external_ids), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: str) -> bool:
        return external_id in self._index


Combine = Literal["add", "replace"]


class IncrementalMatrix:
    """Sparse values addressed by (row, column), e.g. (user, item).

    combine="add" sums repeated updates (event weights, co-occurrence counts); combine="replace"
    keeps the latest value (a user's newest rating of an item replaces the old one).
    """

    def __init__(self, snapshot: sp.csr_matrix, combine: Combine) -> None:
        self._snapshot = snapshot
        self._combine = combine
        self._overlay: dict[int, dict[int, float]] = {}
        self._shape = snapshot.shape

    @classmethod
    def from_triples(
        cls, rows: np.ndarray, columns: np.ndarray, values: np.ndarray, shape: tuple[int, int], combine: Combine
    ) -> "IncrementalMatrix":
        """Build from parallel arrays in event order (later events win for "replace")."""
        if combine == "replace" and len(rows):
            # Keep the last occurrence of each cell: reverse, then unique keeps the first.
            keys = rows.astype(np.int64) * max(shape[1], 1) + columns
            _, last = np.unique(keys[::-1], return_index=True)
            keep = len(keys) - 1 - last
            rows, columns, values = rows[keep], columns[keep], values[keep]
        matrix = sp.csr_matrix((values.astype(np.float64), (rows, columns)), shape=shape)
        matrix.sum_duplicates()
        return cls(matrix, combine)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def snapshot(self) -> sp.csr_matrix:
        """The compacted matrix; rows changed since the last `compact()` are not in it."""
        return self._snapshot

    @property
    def pending_rows(self) -> int:
        return len(self._overlay)

    def resize(self, n_rows: int, n_columns: int) -> None:
        self._shape = (max(self._shape[0], n_rows), max(self._shape[1], n_columns))

    def update(self, row: int, column: int, value: float) -> None:
        """"add": the overlay keeps only the increment; "replace": it keeps the row's latest values."""
        cells = self._overlay.get(row)
        if cells is None:
            cells = self._overlay[row] = {} if self._combine == "add" else self._snapshot_row_dict(row)
        cells[column] = cells.get(column, 0.0) + value if self._combine == "add" else value
        self.resize(row + 1, column + 1)

    def add(self, delta: sp.spmatrix) -> None:
        """Add a whole sparse matrix at once ("add" only): for changes too wide for single cells."""
        self.compact()
        self._snapshot = _plus(self._snapshot, delta, self._shape)

    def rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Several rows as one len(rows) x n_columns CSR, including changes not yet compacted."""
        if rows.size and rows.max() < self._snapshot.shape[0] and not any(row in self._overlay for row in rows.tolist()):
            picked = self._snapshot[rows]  # all in the snapshot: one C-level row gather
            picked.resize((len(rows), self._shape[1]))
            return picked
        return stacked_rows([self.row(row) for row in rows.tolist()], self._shape[1])

    def row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(column indices, values) of one row, including changes not yet compacted."""
        columns, values = self._snapshot_row(row)
        cells = self._overlay.get(row)
        if cells is None:
            return columns, values
        changed = np.fromiter(cells.keys(), dtype=np.int64, count=len(cells))
        changes = np.fromiter(cells.values(), dtype=np.float64, count=len(cells))
        if self._combine == "replace":
            return changed, changes
        merged, inverse = np.unique(np.concatenate([columns, changed]), return_inverse=True)
        return merged, np.bincount(inverse, weights=np.concatenate([values, changes]), minlength=len(merged))

    def value(self, row: int, column: int) -> float:
        """One cell, including changes not yet compacted (0 when empty)."""
        cells = self._overlay.get(row)
        if cells is None:
            return self._snapshot_value(row, column)
        if self._combine == "replace":  # the overlay holds the whole row
            return cells.get(column, 0.0)
        return self._snapshot_value(row, column) + cells.get(column, 0.0)

    def compact(self) -> None:
        """Fold the overlay into a new snapshot; readers keep the old one until the swap.

        "add": snapshot + a sparse delta of the increments (cost grows with the change, not the
        matrix: 0.45 s instead of 16 s on 100M co-occurrence entries). "replace": the changed rows
        are dropped from the snapshot and written again.
        """
        overlay, self._overlay = self._overlay, {}
        snapshot = resized(self._snapshot, self._shape)
        changes = _as_csr(overlay, self._shape)
        if self._combine == "add":
            self._snapshot = (snapshot + changes).tocsr()
            return
        kept = np.ones(self._shape[0])
        kept[changes.indptr[1:] > changes.indptr[:-1]] = 0.0  # rows the overlay replaces
        matrix = (sp.diags(kept) @ snapshot + changes).tocsr()
        matrix.eliminate_zeros()  # the zeroed rows' cells, which code reading the pattern would count
        self._snapshot = matrix

    def _snapshot_row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        if row >= self._snapshot.shape[0]:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        start, end = self._snapshot.indptr[row], self._snapshot.indptr[row + 1]
        return self._snapshot.indices[start:end].astype(np.int64), self._snapshot.data[start:end]

    def _snapshot_value(self, row: int, column: int) -> float:
        columns, values = self._snapshot_row(row)
        at = np.searchsorted(columns, column)  # a CSR row's columns are sorted
        return float(values[at]) if at < len(columns) and columns[at] == column else 0.0

    def _snapshot_row_dict(self, row: int) -> dict[int, float]:
        columns, values = self._snapshot_row(row)
        return dict(zip(columns.tolist(), values.tolist()))


class CooccurrenceCounts:
    """Item x item co-occurrence counts: a symmetric CSR snapshot plus the increments since.

    A user's first touch of an item adds 1 to (item, other) and (other, item) for every other item
    in their history: hundreds of cells for a heavy user, which cell by cell cost 2 ms of Python at
    ml-1m. Here a touch is one append of the history array; the touches are summed into a pending
    CSR, in C, when rows are read, and `compact()` folds that into the snapshot off the request path.
    """

    def __init__(self, snapshot: sp.csr_matrix) -> None:
        self._snapshot = snapshot
        self._shape = snapshot.shape
        self._pending = sp.csr_matrix(self._shape)
        self._touches: list[tuple[int, np.ndarray]] = []

    @property
    def snapshot(self) -> sp.csr_matrix:
        """The compacted matrix; increments since the last `compact()` are not in it."""
        return self._snapshot

    @property
    def pending_rows(self) -> int:
        self._settle()
        return int(np.count_nonzero(np.diff(self._pending.indptr)))

    def resize(self, n_rows: int, n_columns: int) -> None:
        self._shape = (max(self._shape[0], n_rows), max(self._shape[1], n_columns))

    def touch(self, item: int, others: np.ndarray) -> None:
        """`item` now co-occurs once more with each of `others` (distinct, without `item`)."""
        if len(others):
            self._touches.append((item, others.astype(np.int64, copy=False)))
            self.resize(item + 1, item + 1)

    def add(self, delta: sp.spmatrix) -> None:
        """Add a whole sparse matrix at once: for changes too wide for touches (a deleted user)."""
        self.compact()
        self._snapshot = _plus(self._snapshot, delta, self._shape)

    def rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Several rows as one len(rows) x n_columns CSR, increments included."""
        self._settle()
        picked = _rows_of(self._snapshot, rows, self._shape)
        indptr = self._pending.indptr
        if not (indptr[rows + 1] - indptr[rows]).any():  # none of these rows changed: no sparse add
            return picked
        return picked + self._pending[rows]

    def compact(self) -> None:
        """Fold the increments into a new snapshot; readers keep the old one until the swap."""
        self._settle()
        snapshot = resized(self._snapshot, self._shape)
        self._snapshot = (snapshot + self._pending).tocsr() if self._pending.nnz else snapshot
        self._pending = sp.csr_matrix(self._shape)

    def _settle(self) -> None:
        """Sum the touches since the last read into the pending CSR (duplicates add up)."""
        pending = resized(self._pending, self._shape)
        if self._touches:
            touches, self._touches = self._touches, []
            items = np.concatenate([np.full(len(others), item, np.int64) for item, others in touches])
            others = np.concatenate([others for _, others in touches])
            ones = np.ones(2 * len(items))
            delta = sp.csr_matrix((ones, (np.concatenate([items, others]), np.concatenate([others, items]))),
                                  shape=self._shape)
            pending = (pending + delta).tocsr()
        self._pending = pending


def _plus(snapshot: sp.csr_matrix, delta: sp.spmatrix, shape: tuple[int, int]) -> sp.csr_matrix:
    """snapshot + delta as a CSR of `shape`, without the cells that cancel out."""
    matrix = (snapshot + resized(sp.csr_matrix(delta), shape)).tocsr()
    matrix.eliminate_zeros()
    return matrix


def _rows_of(matrix: sp.csr_matrix, rows: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """matrix[rows] as a len(rows) x shape[1] CSR, where rows past the matrix's own rows are empty."""
    if matrix.shape[0] == 0:
        return sp.csr_matrix((len(rows), shape[1]))
    inside = rows < matrix.shape[0]
    picked = matrix[np.where(inside, rows, 0)]
    if not inside.all():
        picked = (sp.diags(inside.astype(np.float64)) @ picked).tocsr()
    picked.resize((len(rows), shape[1]))
    return picked


def stacked_rows(rows: list[tuple[np.ndarray, np.ndarray]], n_columns: int) -> sp.csr_matrix:
    """(column indices, values) pairs, one per row, as a len(rows) x n_columns CSR."""
    lengths = np.fromiter((len(columns) for columns, _ in rows), dtype=np.int64, count=len(rows))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    columns = np.concatenate([c for c, _ in rows]) if rows else np.empty(0, np.int64)
    values = np.concatenate([v for _, v in rows]).astype(np.float64) if rows else np.empty(0)
    return csr_of(values, columns, indptr, (len(rows), n_columns))


INT32_MAX = np.iinfo(np.int32).max


def csr_of(values: np.ndarray, columns: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """A CSR from its three arrays, with the int32 indices scipy would pick when they fit: given int64
    ones, scipy scans them to find that out, 35 of the 85 us the constructor took for one user's row."""
    if max(shape) <= INT32_MAX and len(values) <= INT32_MAX:
        columns, indptr = columns.astype(np.int32, copy=False), indptr.astype(np.int32, copy=False)
    return sp.csr_matrix((values, columns, indptr), shape=shape)


def resized(matrix: sp.csr_matrix, shape: tuple[int, int]) -> sp.csr_matrix:
    """A copy grown to `shape` (new rows/columns empty); the matrix itself when already that shape."""
    if matrix.shape == shape:
        return matrix
    matrix = matrix.copy()
    matrix.resize(shape)
    return matrix


def with_rows(matrix: sp.csr_matrix, rows: np.ndarray, values: sp.spmatrix) -> sp.csr_matrix:
    """`matrix` (grown to hold them) with `rows` set to the rows of `values`, in order.

    New items are rows past the end, and only appended: a round trip through LIL for the same took
    2.8-3.5 s per added item at 1M items (POST /items, py-spy); appending copies the arrays once."""
    n_rows = max(matrix.shape[0], int(rows.max()) + 1)
    first = matrix.shape[0] if rows.min() >= matrix.shape[0] else 0  # where the rows to place start
    placing = sp.csr_matrix((np.ones(len(rows)), (rows - first, np.arange(len(rows)))), shape=(n_rows - first, len(rows)))
    placed = (placing @ values).tocsr()
    if first:
        return sp.vstack([matrix, placed], format="csr")
    keep = np.ones(n_rows)
    keep[rows] = 0.0
    return (sp.diags(keep) @ resized(matrix, (n_rows, matrix.shape[1])) + placed).tocsr()


def _as_csr(overlay: dict[int, dict[int, float]], shape: tuple[int, int]) -> sp.csr_matrix:
    """The overlay's cells as a CSR matrix of `shape`."""
    rows = [np.full(len(cells), row, dtype=np.int64) for row, cells in overlay.items()]
    cols = [np.fromiter(cells.keys(), dtype=np.int64, count=len(cells)) for cells in overlay.values()]
    vals = [np.fromiter(cells.values(), dtype=np.float64, count=len(cells)) for cells in overlay.values()]
    if not rows:
        return sp.csr_matrix(shape)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
