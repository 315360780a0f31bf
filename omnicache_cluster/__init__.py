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
    from omnicache_cluster.actors._migration import MigrationOptions
    from omnicache_cluster.backends.async_memory import AsyncInMemoryBackend
    from omnicache_cluster.backends.custom import (
        AsyncCacheBackend,
        CacheBackend,
        CustomBackend,
        VectorBackend,
    )
    from omnicache_cluster.backends.disk import DiskBackend
    from omnicache_cluster.backends.memory import InMemoryBackend
    from omnicache_cluster.backends.redis import RedisBackend
    from omnicache_cluster.backends.tiered import TieredBackend
    from omnicache_cluster.client import CacheCluster, ClientOptions
    from omnicache_cluster.config import L2Config, OmnicacheSettings
    from omnicache_cluster.core.codec import (
        JsonCodec,
        MsgpackCodec,
        PickleCodec,
        Serializer,
        allow_types,
    )
    from omnicache_cluster.core.compressor import Compressor, GzipCompressor, NoopCompressor
    from omnicache_cluster.core.nearcache import NearCacheOptions
    from omnicache_cluster.core.quota import TenantQuota
    from omnicache_cluster.core.serializer import JsonSerializer, PickleSerializer
    from omnicache_cluster.core.stampede import StampedeShield
    from omnicache_cluster.layers._prices import ModelPrice
    from omnicache_cluster.layers._streamwire import StreamInterrupted
    from omnicache_cluster.layers.context import ContextCache
    from omnicache_cluster.layers.embedding import EmbeddingCache
    from omnicache_cluster.layers.prompt import PromptCacheLayer
    from omnicache_cluster.layers.response import ResponseCache
    from omnicache_cluster.layers.retrieval import RetrievalCache
    from omnicache_cluster.layers.streaming import StreamingResponseCache
    from omnicache_cluster.manager import CacheManager, CacheMetrics
    from omnicache_cluster.middleware.embedding import EmbeddingMiddleware
    from omnicache_cluster.middleware.llm import AsyncLLMMiddleware, LLMMiddleware
    from omnicache_cluster.middleware.retriever import RetrieverMiddleware
    from omnicache_cluster.observability.cost import PriceTable, record_saving
    from omnicache_cluster.observability.metrics import ActorMetricsConfig
    from omnicache_cluster.observability.otel import OpenTelemetryExporter
    from omnicache_cluster.observability.prometheus import PrometheusExporter
    from omnicache_cluster.observability.snapshot import ClusterMetrics
    from omnicache_cluster.placement import ShardPlacement
    from omnicache_cluster.policies import (
        EvictionPolicy,
        InvalidationEngine,
        RequestConfig,
        TTLPolicy,
    )
    from omnicache_cluster.semantic.adaptive import AdaptiveSemanticCache
    from omnicache_cluster.semantic.cache import SemanticCache
    from omnicache_cluster.warmer import CacheWarmer, WarmReport

__all__ = [
    "MISS",
    "ActorMetricsConfig",
    "AdaptiveSemanticCache",
    "AsyncCacheBackend",
    "AsyncInMemoryBackend",
    "AsyncLLMMiddleware",
    "CacheBackend",
    "CacheCluster",
    "CacheKey",
    "CacheKeyBuilder",
    "CacheManager",
    "CacheMetrics",
    "CacheWarmer",
    "ClientOptions",
    "ClusterMetrics",
    "CodecError",
    "Compressor",
    "ConfigError",
    "ContextCache",
    "CustomBackend",
    "DiskBackend",
    "EmbeddingCache",
    "EmbeddingMiddleware",
    "EvictionPolicy",
    "GzipCompressor",
    "InMemoryBackend",
    "InvalidationEngine",
    "JsonCodec",
    "JsonSerializer",
    "L2Config",
    "L2Unavailable",
    "LLMMiddleware",
    "MigrationOptions",
    "ModelPrice",
    "Moved",
    "MsgpackCodec",
    "NearCacheOptions",
    "NoopCompressor",
    "OmnicacheError",
    "OmnicacheSettings",
    "OpenTelemetryExporter",
    "PermanentError",
    "PickleCodec",
    "PickleSerializer",
    "PriceTable",
    "PrometheusExporter",
    "PromptCacheLayer",
    "QuotaExceeded",
    "RedisBackend",
    "RequestConfig",
    "ResponseCache",
    "RetrievalCache",
    "RetrieverMiddleware",
    "SemanticCache",
    "Serializer",
    "ShardPlacement",
    "ShardUnavailable",
    "StampedeShield",
    "StreamInterrupted",
    "StreamingResponseCache",
    "TTLPolicy",
    "TenantQuota",
    "TieredBackend",
    "Timeout",
    "TransientError",
    "ValueTooLarge",
    "VectorBackend",
    "WarmReport",
    "__version__",
    "allow_types",
    "record_saving",
]

_LAZY = {
    "AsyncInMemoryBackend": "omnicache_cluster.backends.async_memory",
    "DiskBackend": "omnicache_cluster.backends.disk",
    "L2Config": "omnicache_cluster.config",
    "OmnicacheSettings": "omnicache_cluster.config",
    "RedisBackend": "omnicache_cluster.backends.redis",
    "TieredBackend": "omnicache_cluster.backends.tiered",
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
    "ActorMetricsConfig": "omnicache_cluster.observability.metrics",
    "ClusterMetrics": "omnicache_cluster.observability.snapshot",
    "OpenTelemetryExporter": "omnicache_cluster.observability.otel",
    "PriceTable": "omnicache_cluster.observability.cost",
    "PrometheusExporter": "omnicache_cluster.observability.prometheus",
    "record_saving": "omnicache_cluster.observability.cost",
    "NearCacheOptions": "omnicache_cluster.core.nearcache",
    "AsyncLLMMiddleware": "omnicache_cluster.middleware.llm",
    "CacheWarmer": "omnicache_cluster.warmer",
    "ContextCache": "omnicache_cluster.layers.context",
    "EmbeddingCache": "omnicache_cluster.layers.embedding",
    "EmbeddingMiddleware": "omnicache_cluster.middleware.embedding",
    "InvalidationEngine": "omnicache_cluster.policies",
    "LLMMiddleware": "omnicache_cluster.middleware.llm",
    "ModelPrice": "omnicache_cluster.layers._prices",
    "PromptCacheLayer": "omnicache_cluster.layers.prompt",
    "RequestConfig": "omnicache_cluster.policies",
    "ResponseCache": "omnicache_cluster.layers.response",
    "RetrievalCache": "omnicache_cluster.layers.retrieval",
    "RetrieverMiddleware": "omnicache_cluster.middleware.retriever",
    "StreamInterrupted": "omnicache_cluster.layers._streamwire",
    "StreamingResponseCache": "omnicache_cluster.layers.streaming",
    "TTLPolicy": "omnicache_cluster.policies",
    "WarmReport": "omnicache_cluster.warmer",
    "MigrationOptions": "omnicache_cluster.actors._migration",
    "ShardPlacement": "omnicache_cluster.placement",
    "AsyncCacheBackend": "omnicache_cluster.backends.custom",
    "CacheBackend": "omnicache_cluster.backends.custom",
    "CustomBackend": "omnicache_cluster.backends.custom",
    "VectorBackend": "omnicache_cluster.backends.custom",
    "Compressor": "omnicache_cluster.core.compressor",
    "GzipCompressor": "omnicache_cluster.core.compressor",
    "NoopCompressor": "omnicache_cluster.core.compressor",
    "JsonSerializer": "omnicache_cluster.core.serializer",
    "PickleSerializer": "omnicache_cluster.core.serializer",
    "StampedeShield": "omnicache_cluster.core.stampede",
    "EvictionPolicy": "omnicache_cluster.policies",
    "AdaptiveSemanticCache": "omnicache_cluster.semantic.adaptive",
    "SemanticCache": "omnicache_cluster.semantic.cache",
    "allow_types": "omnicache_cluster.core.codec",
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
