"""Decorators that put a cache layer in front of any LLM, embed or retriever callable,
keeping its signature. Importing this package imports neither Ray nor numpy."""

from __future__ import annotations

from omnicache_cluster.middleware.embedding import EmbeddingMiddleware
from omnicache_cluster.middleware.llm import AsyncLLMMiddleware, LLMMiddleware
from omnicache_cluster.middleware.retriever import RetrieverMiddleware

__all__ = ["AsyncLLMMiddleware", "EmbeddingMiddleware", "LLMMiddleware", "RetrieverMiddleware"]
