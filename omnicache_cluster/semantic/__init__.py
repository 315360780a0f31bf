"""Semantic caching: answers reused for reworded questions, measured to be right.

`SemanticCache` (a static similarity threshold plus the lexical guard),
`AdaptiveSemanticCache` (a bound on the false-hit rate; thresholds learned from
verification), `SemanticIndex` (the client of the cluster's index actor),
`LocalSemanticIndex` (the same index in this process, for a local backend), and the
helpers `context_hash`, `chat_context` and `lexical_match`. Nothing heavy is imported
until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnicache_cluster.semantic.adaptive import AdaptivePolicy, AdaptiveSemanticCache
    from omnicache_cluster.semantic.cache import Lookup, SemanticCache, SemanticMetrics
    from omnicache_cluster.semantic.guard import chat_context, context_hash, lexical_match
    from omnicache_cluster.semantic.index import SemanticIndex
    from omnicache_cluster.semantic.local import LocalSemanticIndex

__all__ = [
    "AdaptivePolicy",
    "AdaptiveSemanticCache",
    "LocalSemanticIndex",
    "Lookup",
    "SemanticCache",
    "SemanticIndex",
    "SemanticMetrics",
    "chat_context",
    "context_hash",
    "lexical_match",
]

_LAZY = {
    "AdaptivePolicy": "omnicache_cluster.semantic.adaptive",
    "AdaptiveSemanticCache": "omnicache_cluster.semantic.adaptive",
    "LocalSemanticIndex": "omnicache_cluster.semantic.local",
    "Lookup": "omnicache_cluster.semantic.cache",
    "SemanticCache": "omnicache_cluster.semantic.cache",
    "SemanticMetrics": "omnicache_cluster.semantic.cache",
    "SemanticIndex": "omnicache_cluster.semantic.index",
    "chat_context": "omnicache_cluster.semantic.guard",
    "context_hash": "omnicache_cluster.semantic.guard",
    "lexical_match": "omnicache_cluster.semantic.guard",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
