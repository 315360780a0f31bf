"""The seed's module path: ``omnicache_ai.layers.streaming_cache``.

Kept so that imports run after renaming the package; every name here is importable
from ``omnicache_cluster`` too.
"""

from __future__ import annotations

from omnicache_cluster.layers.streaming import StreamingResponseCache

__all__ = ["StreamingResponseCache"]
