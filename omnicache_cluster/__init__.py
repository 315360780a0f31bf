"""omnicache-cluster: a distributed cache cluster on Ray for AI agent pipelines.

Importing this package imports neither Ray nor any optional dependency; heavy names
load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from omnicache_cluster._version import __version__
from omnicache_cluster.core.keys import CacheKey, CacheKeyBuilder
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.errors import (
    CodecError,
    ConfigError,
    L2Unavailable,
    Moved,
    OmnicacheError,
    PermanentError,
    QuotaExceeded,
    ShardUnavailable,
    Timeout,
    TransientError,
    ValueTooLarge,
)

if TYPE_CHECKING:
    from omnicache_cluster.backends.memory import InMemoryBackend
    from omnicache_cluster.client import CacheCluster, ClientOptions
    from omnicache_cluster.core.codec import JsonCodec, MsgpackCodec, PickleCodec, Serializer
    from omnicache_cluster.core.quota import TenantQuota
    from omnicache_cluster.manager import CacheManager, CacheMetrics

__all__ = [
    "MISS",
    "CacheCluster",
    "CacheKey",
    "CacheKeyBuilder",
    "CacheManager",
    "CacheMetrics",
    "ClientOptions",
    "CodecError",
    "ConfigError",
    "InMemoryBackend",
    "JsonCodec",
    "L2Unavailable",
    "Moved",
    "MsgpackCodec",
    "OmnicacheError",
    "PermanentError",
    "PickleCodec",
    "QuotaExceeded",
    "Serializer",
    "ShardUnavailable",
    "TenantQuota",
    "Timeout",
    "TransientError",
    "ValueTooLarge",
    "__version__",
]

_LAZY = {
    "CacheCluster": "omnicache_cluster.client",
    "ClientOptions": "omnicache_cluster.client",
    "CacheManager": "omnicache_cluster.manager",
    "CacheMetrics": "omnicache_cluster.manager",
    "InMemoryBackend": "omnicache_cluster.backends.memory",
    "JsonCodec": "omnicache_cluster.core.codec",
    "MsgpackCodec": "omnicache_cluster.core.codec",
    "PickleCodec": "omnicache_cluster.core.codec",
    "Serializer": "omnicache_cluster.core.codec",
    "TenantQuota": "omnicache_cluster.core.quota",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'omnicache_cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
