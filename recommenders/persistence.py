"""Arrays, sparse matrices and string ids to and from one `.npz` file, never a pickle.

Every fitted component and the model state save what they learned as named arrays. `.npz` is
numpy's own format: loading it runs no code (allow_pickle stays off), it is readable from any
numpy, and it keeps dtypes exactly, so save -> load gives bit-identical scores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Mapping, Union

import numpy as np
import scipy.sparse as sp

Value = Union[np.ndarray, sp.spmatrix, list[str], float, int, bool]
_SPARSE = "__csr__"
_STRINGS = "__strings__"
_SCALAR = "__scalar__"


def save_arrays(path: Path, values: Mapping[str, Value]) -> None:
    """Write `values` to `path` (.npz, uncompressed: loading speed matters more than disk here)."""
    flat: dict[str, np.ndarray] = {}
    for name, value in values.items():
        if sp.issparse(value):
            matrix = sp.csr_matrix(value)
            flat[f"{name}{_SPARSE}data"] = matrix.data
            flat[f"{name}{_SPARSE}indices"] = matrix.indices
            flat[f"{name}{_SPARSE}indptr"] = matrix.indptr
            flat[f"{name}{_SPARSE}shape"] = np.array(matrix.shape, np.int64)
        elif isinstance(value, list):
            flat[f"{name}{_STRINGS}"] = _encode_strings(value)
            flat[f"{name}{_STRINGS}offsets"] = _string_offsets(value)
        elif isinstance(value, (bool, int, float, np.number)):
            flat[f"{name}{_SCALAR}"] = np.array(value)
        else:
            flat[name] = np.asarray(value)
    with open(path, "wb") as file:
        np.savez(file, **flat)


def load_arrays(path: Path, only: Collection[str] | None = None) -> dict[str, Value]:
    """What `save_arrays` wrote, with sparse matrices as CSR and string lists as lists; with `only`,
    just those values (a bench reading the user ids of a state holding 50M events)."""
    values: dict[str, Value] = {}
    with np.load(path, allow_pickle=False) as archive:
        names = set(archive.files)
        for key in names:
            if only is not None and key.split(_SPARSE)[0].removesuffix(_STRINGS).removesuffix(_SCALAR) not in only:
                continue
            if _SPARSE in key:
                name, part = key.split(_SPARSE)
                if part == "shape":
                    values[name] = sp.csr_matrix((archive[f"{name}{_SPARSE}data"], archive[f"{name}{_SPARSE}indices"],
                                                  archive[f"{name}{_SPARSE}indptr"]), shape=tuple(archive[key]))
            elif key.endswith(_STRINGS):
                name = key[: -len(_STRINGS)]
                values[name] = _decode_strings(archive[key], archive[f"{key}offsets"])
            elif key.endswith(_SCALAR):
                values[key[: -len(_SCALAR)]] = archive[key].item()
            elif _STRINGS not in key:
                values[key] = archive[key]
    return values


# Ids as one UTF-8 buffer plus offsets: a fixed-width unicode array would pad every id to the
# longest (64 characters x 4 bytes), 40x the size for short numeric ids.
def _encode_strings(strings: list[str]) -> np.ndarray:
    return np.frombuffer("".join(strings).encode("utf-8"), dtype=np.uint8)


def _string_offsets(strings: list[str]) -> np.ndarray:
    lengths = np.fromiter((len(s.encode("utf-8")) for s in strings), dtype=np.int64, count=len(strings))
    return np.concatenate([[0], np.cumsum(lengths)])


def _decode_strings(buffer: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = buffer.tobytes()
    bounds = offsets.tolist()
    return [raw[start:end].decode("utf-8") for start, end in zip(bounds, bounds[1:])]
