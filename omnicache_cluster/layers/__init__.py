"""The seed's cache layers, on the cluster: each takes a `CacheCluster`, an
`InMemoryBackend` or a `CacheManager`, has sync and async methods, and accepts a
`RequestConfig` per call. Importing this package imports neither Ray nor numpy.
"""

from __future__ import annotations

from omnicache_cluster.layers._base import CacheLayer, LayerBackend, LayerStats
from omnicache_cluster.layers._prices import (
    DEFAULT_PRICES,
    ModelPrice,
    PromptCacheSavings,
    PromptCacheUsage,
)
from omnicache_cluster.layers._streamwire import StreamInterrupted
from omnicache_cluster.layers.context import ContextCache
from omnicache_cluster.layers.embedding import EmbeddingCache
from omnicache_cluster.layers.prompt import PromptCacheLayer
from omnicache_cluster.layers.response import ResponseCache
from omnicache_cluster.layers.retrieval import RetrievalCache
from omnicache_cluster.layers.streaming import StreamingResponseCache

__all__ = [
    "DEFAULT_PRICES",
    "CacheLayer",
    "ContextCache",
    "EmbeddingCache",
    "LayerBackend",
    "LayerStats",
    "ModelPrice",
    "PromptCacheLayer",
    "PromptCacheSavings",
    "PromptCacheUsage",
    "ResponseCache",
    "RetrievalCache",
    "StreamInterrupted",
    "StreamingResponseCache",
]
