"""The seed's module path: ``omnicache_ai.middleware.retriever_middleware``.

Kept so that imports run after renaming the package; every name here is importable
from ``omnicache_cluster`` too.
"""

from __future__ import annotations

from omnicache_cluster.middleware.retriever import RetrieverMiddleware

__all__ = ["RetrieverMiddleware"]
