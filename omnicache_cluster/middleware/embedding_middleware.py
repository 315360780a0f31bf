"""The seed's module path: ``omnicache_ai.middleware.embedding_middleware``.

Kept so that imports run after renaming the package; every name here is importable
from ``omnicache_cluster`` too.
"""

from __future__ import annotations

from omnicache_cluster.middleware.embedding import EmbeddingMiddleware

__all__ = ["EmbeddingMiddleware"]
