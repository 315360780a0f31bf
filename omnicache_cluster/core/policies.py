"""The seed's module path: ``omnicache_ai.core.policies``.

Kept so that imports run after renaming the package; every name here is importable
from ``omnicache_cluster`` too. The names load on first use (``core`` imports nothing
above it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnicache_cluster.policies import EvictionPolicy, TTLPolicy

__all__ = ["EvictionPolicy", "TTLPolicy"]

_WHERE = {
    "EvictionPolicy": "omnicache_cluster.policies",
    "TTLPolicy": "omnicache_cluster.policies",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
