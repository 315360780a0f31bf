"""The seed's module path: ``omnicache_ai.backends.memory_backend``.

Kept so that imports run after renaming the package; every name here is importable
from ``omnicache_cluster`` too.
"""

from __future__ import annotations

from omnicache_cluster.backends.memory import InMemoryBackend

__all__ = ["InMemoryBackend"]
