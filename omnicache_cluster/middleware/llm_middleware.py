"""The seed's module path: ``omnicache_ai.middleware.llm_middleware``.

Kept so that imports run after renaming the package; every name here is importable
from ``omnicache_cluster`` too.
"""

from __future__ import annotations

from omnicache_cluster.middleware.llm import AsyncLLMMiddleware, LLMMiddleware

__all__ = ["AsyncLLMMiddleware", "LLMMiddleware"]
