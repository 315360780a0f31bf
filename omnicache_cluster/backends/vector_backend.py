"""The seed's module path (``omnicache_ai.backends.vector_backend``), kept so imports
run after renaming the package: ``FAISSBackend``, ``ChromaBackend``, ``QdrantBackend``
(each loads its library only when named; the seed's ``WeaviateBackend`` and
``PineconeBackend`` raise ``ImportError`` naming the replacement).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omnicache_cluster.backends import vector as _vector

if TYPE_CHECKING:
    from omnicache_cluster.backends.vector.chroma import ChromaBackend
    from omnicache_cluster.backends.vector.faiss import FAISSBackend
    from omnicache_cluster.backends.vector.qdrant import QdrantBackend

__all__ = ["ChromaBackend", "FAISSBackend", "QdrantBackend"]


def __getattr__(name: str) -> Any:
    return getattr(_vector, name)
