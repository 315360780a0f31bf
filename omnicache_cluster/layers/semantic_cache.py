"""The seed's module path: ``omnicache_ai.layers.semantic_cache``.

Kept so that imports run after renaming the package; every name here is importable
from ``omnicache_cluster`` too.
"""

from __future__ import annotations

from omnicache_cluster.semantic.cache import SemanticCache

__all__ = ["SemanticCache"]
