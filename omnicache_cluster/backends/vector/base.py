"""What the vector backends share: the record, the scope, vector checks, the seam.

A semantic index is partitioned by `IndexScope` (tenant, key namespace, embedding
model, conversation-context hash): a search never crosses a scope, so a tenant never
sees another tenant's entries and a reworded message of another conversation never
matches. A `VectorRecord` points at a cache entry by its stored key; the answer itself
lives in the shards.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "MAX_TEXT_CHARS",
    "IndexScope",
    "VectorBackend",
    "VectorRecord",
    "check_vectors",
    "require",
]

#: Query texts kept beside a vector (for the lexical guard) are cut to this length.
MAX_TEXT_CHARS = 2048


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or raise an ImportError naming the extra.

    Raises:
        ImportError: ``module`` is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{module} is not installed; install it with: pip install 'omnicache-cluster[{extra}]'"
        ) from None


class IndexScope(NamedTuple):
    """One partition of the semantic index; searches never cross partitions."""

    tenant: str
    namespace: str
    model: str
    context: str = ""

    def label(self) -> str:
        """Return the scope as one string (``namespace:tenant:model:context``)."""
        return f"{self.namespace}:{self.tenant}:{self.model}:{self.context}"


@dataclass(frozen=True)
class VectorRecord:
    """A vector that points at one cache entry.

    Attributes:
        key: the stored key of the cache entry (``namespace:tenant:layer:digest``).
        vector: the L2-normalised float32 vector.
        scope: the index partition.
        expires_at: wall-clock expiry (seconds since the epoch), ``None`` for never.
        text: the query text the vector was made from (for the lexical guard).
    """

    key: str
    vector: Any
    scope: IndexScope
    expires_at: float | None = None
    text: str | None = None


def check_vectors(vectors: Any, dim: int | None = None) -> np.ndarray:
    """Validate vectors and return them L2-normalised as a C-contiguous float32 matrix.

    Args:
        vectors: one vector (1-D) or a matrix of row vectors.
        dim: the expected dimension; ``None`` accepts any.

    Raises:
        ValueError: wrong dimension, NaN or infinite values, a zero vector, or not
            numeric.
    """
    try:
        arr = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a vector must be a sequence of numbers: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"expected a vector or a matrix of vectors, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"vector dimension must be {dim}, got {arr.shape[1]}")
    if not np.isfinite(arr).all():
        raise ValueError("a vector holds NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1)
    if (norms == 0).any() or not all(math.isfinite(n) for n in norms):
        raise ValueError("a zero vector has no direction; cosine similarity is undefined")
    return np.ascontiguousarray(arr / norms[:, None], dtype=np.float32)


@runtime_checkable
class VectorBackend(Protocol):
    """A vector store holding `VectorRecord` objects, searched within one scope.

    The seed's calls (``add``, ``search``, ``delete``, ``clear``, ``close``) plus the
    batch and scan calls the index actor needs for write-through and rebuild.
    ``close`` never deletes data.
    """

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace records (by key)."""
        ...

    def delete_keys(self, keys: Iterable[str]) -> None:
        """Remove the records of ``keys``."""
        ...

    def search_scope(
        self, scope: IndexScope, vector: Any, top_k: int = 1
    ) -> list[tuple[str, float]]:
        """Return up to ``top_k`` ``(key, score)`` of unexpired records of ``scope``."""
        ...

    def scan(self) -> Iterator[VectorRecord]:
        """Yield every unexpired record (for a rebuild)."""
        ...

    def close(self) -> None:
        """Release connections; keeps the data."""
        ...
