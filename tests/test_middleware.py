"""Middleware decorators through the real cluster: signatures kept, calls cached."""

from __future__ import annotations

import asyncio
import inspect

import numpy as np
import pytest

from omnicache_cluster import CacheKeyBuilder
from omnicache_cluster.layers import EmbeddingCache, ResponseCache, RetrievalCache
from omnicache_cluster.middleware import (
    AsyncLLMMiddleware,
    EmbeddingMiddleware,
    LLMMiddleware,
    RetrieverMiddleware,
)

pytestmark = pytest.mark.ray


def test_llm_middleware_keeps_the_signature_and_caches_by_arguments(cluster):
    calls = []

    def call_llm(messages: list[dict], temperature: float = 0.0, *, seed: int | None = None) -> str:
        """Ask the model."""
        calls.append((messages, temperature, seed))
        return f"reply {len(calls)}"

    wrapped = LLMMiddleware(ResponseCache(cluster), model_id="gpt-4o")(call_llm)
    assert inspect.signature(wrapped) == inspect.signature(call_llm)
    assert (wrapped.__name__, wrapped.__doc__) == ("call_llm", "Ask the model.")
    msgs = [{"role": "user", "content": "hi"}]
    assert wrapped(msgs) == "reply 1"
    assert wrapped(msgs, 0.0) == "reply 1"  # positional, keyword and default are one call
    assert wrapped(messages=msgs, temperature=0) == "reply 1"
    assert wrapped(msgs, 0.5) == "reply 2"
    assert wrapped(msgs, seed=3) == "reply 3"
    assert len(calls) == 3
    with pytest.raises(TypeError):
        wrapped(msgs, 0.1, 7)  # the wrapper refuses what the function refuses


def test_llm_middleware_key_builder_scopes_the_tenant(cluster):
    cache = ResponseCache(cluster)
    replies = iter(["acme reply", "globex reply"])

    def ask(q: str) -> str:
        return next(replies)

    kb = CacheKeyBuilder(namespace=cluster.key_namespace, tenant="acme")
    acme = LLMMiddleware(cache, kb, model_id="m")(ask)
    globex = LLMMiddleware(cache, kb.for_tenant("globex"), model_id="m")(ask)
    assert (acme("q"), globex("q"), acme("q")) == ("acme reply", "globex reply", "acme reply")


async def test_async_llm_middleware_is_async_and_single_flight(cluster):
    calls = 0

    async def call_llm(prompt: str) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return prompt.upper()

    wrapped = AsyncLLMMiddleware(ResponseCache(cluster), model_id="gpt-4o")(call_llm)
    assert inspect.iscoroutinefunction(wrapped)
    assert inspect.signature(wrapped) == inspect.signature(call_llm)
    assert await asyncio.gather(*(wrapped("hello") for _ in range(5))) == ["HELLO"] * 5
    assert calls == 1
    # Over a plain function it gives a plain wrapper, as the seed did (issue 17).
    plain = AsyncLLMMiddleware(ResponseCache(cluster), model_id="plain")(lambda p: p + "!")
    assert not inspect.iscoroutinefunction(plain)
    assert await asyncio.to_thread(plain, "hi") == "hi!"


def test_embedding_middleware_batches_only_the_missing_texts(cluster):
    batches = []

    @EmbeddingMiddleware(EmbeddingCache(cluster), model_id="e5")
    def embed(texts: list[str], dimensions: int = 3) -> np.ndarray:
        batches.append((list(texts), dimensions))
        return np.array([[len(t)] * dimensions for t in texts], dtype=np.float32)

    first = embed(["a", "bb"])
    second = embed(["bb", "ccc"])
    third = embed(["a"], dimensions=2)  # another setting is another vector
    assert [v.tolist() for v in first] == [[1, 1, 1], [2, 2, 2]]
    assert [v.tolist() for v in second] == [[2, 2, 2], [3, 3, 3]]
    assert third[0].tolist() == [1, 1]
    assert batches == [(["a", "bb"], 3), (["ccc"], 3), (["a"], 2)]
    assert list(inspect.signature(embed).parameters) == ["texts", "dimensions"]


async def test_embedding_middleware_single_text_async(cluster):
    calls = []

    @EmbeddingMiddleware(EmbeddingCache(cluster), model_id="e5")
    async def embed_one(text: str) -> list[float]:
        calls.append(text)
        return [float(len(text)), 0.5]

    assert (await embed_one("four")).tolist() == [4.0, 0.5]
    assert (await embed_one("four")).tolist() == [4.0, 0.5]
    assert calls == ["four"]


def test_retriever_middleware_keys_query_top_k_and_filters(cluster):
    calls = []

    @RetrieverMiddleware(RetrievalCache(cluster), retriever_id="docs")
    def search(query: str, top_k: int = 3, lang: str = "en") -> list[str]:
        calls.append((query, top_k, lang))
        return [f"{lang}:{query}:{i}" for i in range(top_k)]

    assert search("ray") == ["en:ray:0", "en:ray:1", "en:ray:2"]
    assert search("ray", 3) == ["en:ray:0", "en:ray:1", "en:ray:2"]
    assert search("ray", top_k=1) == ["en:ray:0"]
    assert search("ray", lang="de")[0] == "de:ray:0"
    assert len(calls) == 3
    assert RetrievalCache(cluster).invalidate_retriever("docs") == 3
    search("ray")
    assert len(calls) == 4


async def test_retriever_middleware_async(cluster):
    calls = []

    @RetrieverMiddleware(RetrievalCache(cluster), retriever_id="vec", top_k_param="k")
    async def search(query: str, k: int = 2) -> list[str]:
        calls.append(query)
        return [query] * k

    assert await search("q") == ["q", "q"]
    assert await search("q", k=2) == ["q", "q"]
    assert calls == ["q"]
