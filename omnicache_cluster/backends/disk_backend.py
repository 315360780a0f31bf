"""The seed's module path: ``omnicache_ai.backends.disk_backend``.

Kept so that imports run after renaming the package; every name here is importable
from ``omnicache_cluster`` too.
"""

from __future__ import annotations

from omnicache_cluster.backends.disk import DiskBackend

__all__ = ["DiskBackend"]
