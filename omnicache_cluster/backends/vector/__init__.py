"""Vector backends: `FAISSBackend` (in process), `QdrantBackend`, `ChromaBackend` (durable).

Each backend lives in its own module and imports its library (and numpy) only there,
so importing this package loads none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnicache_cluster.backends.vector.base import VectorBackend, VectorRecord
    from omnicache_cluster.backends.vector.chroma import ChromaBackend
    from omnicache_cluster.backends.vector.faiss import FAISSBackend
    from omnicache_cluster.backends.vector.qdrant import QdrantBackend

__all__ = ["ChromaBackend", "FAISSBackend", "QdrantBackend", "VectorBackend", "VectorRecord"]

_LAZY = {
    "ChromaBackend": "omnicache_cluster.backends.vector.chroma",
    "FAISSBackend": "omnicache_cluster.backends.vector.faiss",
    "QdrantBackend": "omnicache_cluster.backends.vector.qdrant",
    "VectorBackend": "omnicache_cluster.backends.vector.base",
    "VectorRecord": "omnicache_cluster.backends.vector.base",
}


#: The seed's vector backends that are not provided here, and why.
_NOT_PROVIDED = ("WeaviateBackend", "PineconeBackend")


def __getattr__(name: str) -> Any:
    if name in _NOT_PROVIDED:
        raise ImportError(
            f"{name} (the seed's) is not provided: no server for it could be run where "
            "omnicache-cluster is built and tested; use QdrantBackend or ChromaBackend"
        )
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
