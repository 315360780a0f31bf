"""A seed (omnicache-ai) user's code runs: the seed README's examples as a seed user
writes them, the seed's call forms and names, the loud refusals (each naming its
replacement), and SDK-like values round-tripping through every layer and backend."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from omnicache_cluster import (
    MISS,
    AsyncCacheBackend,
    AsyncInMemoryBackend,
    AsyncLLMMiddleware,
    CacheBackend,
    CacheKeyBuilder,
    CacheManager,
    CacheWarmer,
    ConfigError,
    ContextCache,
    DiskBackend,
    EmbeddingCache,
    EmbeddingMiddleware,
    EvictionPolicy,
    GzipCompressor,
    InMemoryBackend,
    InvalidationEngine,
    JsonSerializer,
    LLMMiddleware,
    NoopCompressor,
    OmnicacheSettings,
    PickleSerializer,
    PromptCacheLayer,
    RequestConfig,
    ResponseCache,
    RetrievalCache,
    RetrieverMiddleware,
    StampedeShield,
    StreamingResponseCache,
    TTLPolicy,
    VectorBackend,
)
from tests.conftest import unique

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


# -- SDK-like values ---------------------------------------------------------------------


class Usage(pydantic.BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Completion(pydantic.BaseModel):
    """Shaped like an OpenAI ``ChatCompletion``: nested models, lists, optionals."""

    id: str
    model: str
    choices: list[dict[str, Any]]
    usage: Usage
    system_fingerprint: str | None = None


@dataclasses.dataclass(frozen=True)
class Doc:
    text: str
    score: float
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Turn:
    role: str
    content: str
    docs: tuple[Doc, ...] = ()


def completion(text: str = "4") -> Completion:
    return Completion(
        id="cmpl-1",
        model="gpt-4o",
        choices=[{"index": 0, "message": {"role": "assistant", "content": text}}],
        usage=Usage(prompt_tokens=12, completion_tokens=1),
    )


class SixMethodBackend:
    """The seed README's custom backend: six methods, a dict inside."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any | None:
        return self.data.get(key)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def exists(self, key: str) -> bool:
        return key in self.data

    def clear(self) -> None:
        self.data.clear()

    def close(self) -> None:
        pass


@pytest.fixture(params=["memory", "disk", "custom"])
def local_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        return InMemoryBackend()
    if request.param == "disk":
        return DiskBackend(directory=str(tmp_path / "cache"))
    return SixMethodBackend()


def manager_over(backend: Any) -> CacheManager:
    return CacheManager(backend=backend, key_builder=CacheKeyBuilder(namespace="myapp"))


# -- the seed README, as written ----------------------------------------------------------


def test_readme_quick_start_and_response_cache() -> None:
    manager = CacheManager(
        backend=InMemoryBackend(),
        key_builder=CacheKeyBuilder(namespace="myapp"),
    )
    manager.set("my_key", {"result": 42}, ttl=60)
    assert manager.get("my_key") == {"result": 42}

    cache = ResponseCache(manager)
    messages = [{"role": "user", "content": "What is 2+2?"}]
    cache.set(messages, "4", model_id="gpt-4o")
    assert cache.get(messages, model_id="gpt-4o") == "4"

    calls = []

    def call_llm(msgs: Any) -> str:
        calls.append(msgs)
        return "5"

    other = [{"role": "user", "content": "2+3?"}]
    assert cache.get_or_generate(other, call_llm, model_id="gpt-4o") == "5"
    assert cache.get_or_generate(other, call_llm, model_id="gpt-4o") == "5"
    assert len(calls) == 1


def test_seed_miss_check_over_a_manager_sees_a_miss() -> None:
    # The seed's ``if cached is not None`` must not take a miss for a hit.
    cache = ResponseCache(manager_over(InMemoryBackend()))
    cached = cache.get(MESSAGES, model_id="gpt-4o")
    assert cached is None
    assert cache.get(MESSAGES, model_id="gpt-4o", default=MISS) is MISS  # the switch
    for layer_get in (
        lambda: EmbeddingCache(manager_over(InMemoryBackend())).get("text"),
        lambda: RetrievalCache(manager_over(InMemoryBackend())).get("q"),
        lambda: ContextCache(manager_over(InMemoryBackend())).get("s", 0),
        lambda: StreamingResponseCache(manager_over(InMemoryBackend())).get(MESSAGES),
    ):
        assert layer_get() is None
    # Built over a backend (this package's way), a miss stays MISS.
    assert ResponseCache(InMemoryBackend()).get(MESSAGES) is MISS


def test_readme_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OMNICACHE_BACKEND", "disk")
    monkeypatch.setenv("OMNICACHE_DISK_PATH", str(tmp_path))
    monkeypatch.setenv("OMNICACHE_DEFAULT_TTL", "3600")
    monkeypatch.setenv("OMNICACHE_SEMANTIC_THRESHOLD", "0.9")
    manager = CacheManager.from_settings(OmnicacheSettings.from_env())
    assert isinstance(manager.backend, DiskBackend)
    assert manager.semantic_threshold == 0.9
    manager.set("k", "v")
    assert manager.get("k") == "v"


def test_readme_embedding_retrieval_context() -> None:
    manager = manager_over(InMemoryBackend())
    emb_cache = EmbeddingCache(manager)
    computed = []

    def encode(t: str) -> np.ndarray:
        computed.append(t)
        return np.arange(4, dtype=np.float32)

    for _ in range(2):
        vec = emb_cache.get_or_compute(
            text="Hello world",
            compute_fn=lambda t: encode(t),
            model_id="text-embedding-3-small",
        )
    assert vec.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert computed == ["Hello world"]

    ret_cache = RetrievalCache(manager)
    docs = ret_cache.get_or_retrieve(
        query="What is RAG?",
        retrieve_fn=lambda q: [f"{q}-doc{i}" for i in range(5)],
        retriever_id="my-vectorstore",
        top_k=5,
    )
    assert docs == [f"What is RAG?-doc{i}" for i in range(5)]

    ctx_cache = ContextCache(manager)
    ctx_cache.set(session_id="user-123", turn_index=0, messages=[{"role": "user"}])
    assert ctx_cache.get(session_id="user-123", turn_index=0) == [{"role": "user"}]
    ctx_cache.invalidate_session("user-123")
    assert ctx_cache.get(session_id="user-123", turn_index=0) is None


def test_readme_middleware_entries_are_visible_to_the_response_cache() -> None:
    manager = manager_over(InMemoryBackend())
    response_cache = ResponseCache(manager)
    key_builder = manager.key_builder
    calls = []
    middleware = LLMMiddleware(response_cache, key_builder, model_id="gpt-4o")

    @middleware
    def call_llm(messages: list[dict[str, Any]]) -> str:
        calls.append(messages)
        return "4"

    assert call_llm(MESSAGES) == "4"
    assert call_llm(MESSAGES) == "4"
    assert len(calls) == 1
    assert response_cache.get(MESSAGES, model_id="gpt-4o") == "4"
    wrapped = middleware(lambda messages: "never")  # or wrap an existing callable
    assert wrapped(MESSAGES) == "4"
    assert middleware.decorate(lambda messages: "never")(MESSAGES) == "4"
    positional = LLMMiddleware(response_cache, key_builder, "gpt-4o")
    assert positional.model_id == "gpt-4o"


def test_readme_async_middleware_and_over_a_sync_function() -> None:
    response_cache = ResponseCache(manager_over(InMemoryBackend()))
    key_builder = CacheKeyBuilder(namespace="myapp")

    @AsyncLLMMiddleware(response_cache, key_builder, model_id="gpt-4o")
    async def call_llm_async(messages: Any) -> str:
        return "async"

    assert asyncio.run(call_llm_async(MESSAGES)) == "async"
    assert response_cache.get(MESSAGES, model_id="gpt-4o") == "async"

    @AsyncLLMMiddleware(response_cache, key_builder, model_id="other")
    def sync_llm(messages: Any) -> str:
        return "sync"

    assert sync_llm(MESSAGES) == "sync"  # a plain wrapper, as in the seed
    assert response_cache.get(MESSAGES, model_id="other") == "sync"


def test_retriever_middleware_seed_forms() -> None:
    cache = RetrievalCache(manager_over(InMemoryBackend()))
    seen = []

    @RetrieverMiddleware(cache, "pinecone", 3)
    def retrieve(query: str, top_k: int) -> list[str]:  # top_k required
        seen.append(top_k)
        return [f"{query}{i}" for i in range(top_k)]

    assert retrieve("q") == ["q0", "q1", "q2"]
    assert retrieve("q") == ["q0", "q1", "q2"]
    assert seen == [3]
    assert retrieve("q", top_k=2) == ["q0", "q1"]
    mw = RetrieverMiddleware(cache, retriever_id="x", default_top_k=7)
    assert mw.top_k == 7
    assert callable(EmbeddingMiddleware(EmbeddingCache(InMemoryBackend()), "m").decorate)


def test_readme_metrics_snapshot() -> None:
    manager = CacheManager(backend=InMemoryBackend(), key_builder=CacheKeyBuilder())
    manager.get("key")
    manager.set("key", "val")
    manager.get("key")
    snap = manager.metrics.snapshot()
    assert {k: snap[k] for k in ("hits", "misses", "evictions", "sets")} == {
        "hits": 1,
        "misses": 1,
        "evictions": 0,
        "sets": 1,
    }
    assert snap["hit_rate"] == 0.5
    assert snap["miss_rate"] == 0.5


def test_readme_json_serializer_and_compression() -> None:
    manager = manager_over(InMemoryBackend())
    cache = ResponseCache(manager, serializer=JsonSerializer())
    cache.set(MESSAGES, {"answer": 4}, model_id="m")
    assert cache.get(MESSAGES, model_id="m") == {"answer": 4}
    with pytest.raises(TypeError, match="JSON"):
        cache.set(MESSAGES, {1, 2}, model_id="m")  # JSON cannot hold a set: loud

    backend = InMemoryBackend()
    manager = CacheManager(
        backend=backend,
        key_builder=CacheKeyBuilder(),
        compressor=GzipCompressor(level=6),
    )
    blob = b"x" * 1000
    manager.set("blob", blob)
    assert manager.get("blob") == blob
    assert gzip.decompress(backend.get("blob")) == blob  # stored compressed
    assert CacheManager(InMemoryBackend(), compressor=NoopCompressor()).get("x") is None


def test_readme_streaming_and_async_backend() -> None:
    stream_cache = StreamingResponseCache(manager_over(InMemoryBackend()))
    live = []

    def stream_fn(messages: Any) -> Any:
        live.append(1)
        return iter(["Hel", "lo"])

    for _ in range(2):
        chunks = list(stream_cache.get_or_stream(MESSAGES, stream_fn, model_id="gpt-4o"))
        assert chunks == ["Hel", "lo"]
    assert live == [1]

    async def main() -> Any:
        backend = AsyncInMemoryBackend(max_size=10_000)
        await backend.set("key", "value", ttl=60)
        await backend.set("positional", "v", 60)
        return await backend.get("key"), isinstance(backend, AsyncCacheBackend)

    assert asyncio.run(main()) == ("value", True)


def test_readme_tag_invalidation() -> None:
    manager = CacheManager(
        backend=InMemoryBackend(),
        key_builder=CacheKeyBuilder(),
        invalidation_engine=InvalidationEngine(InMemoryBackend()),
    )
    manager.set("key1", "v1", tags=["model:gpt-4o", "env:prod"])
    manager.set("key2", "v2", tags=["model:gpt-4o"])
    assert manager.invalidate("model:gpt-4o") == 2
    assert manager.get("key1") is None
    assert manager.get("key2") is None
    rc = ResponseCache(manager)
    rc.set(MESSAGES, "4", model_id="gpt-4o")
    assert rc.invalidate_model("gpt-4o") == 1
    ctx = ContextCache(manager)
    ctx.set("user-123", ["m"], 0)
    assert ctx.invalidate_session("user-123") == 1


def test_seed_invalidation_engine_calls() -> None:
    backend = InMemoryBackend()
    backend.set("a", 1)
    backend.set("b", 2)
    engine = InvalidationEngine(InMemoryBackend())
    engine.register("a", ["t"])
    engine.register("b", ["t"])
    assert engine.invalidate_tag("t", backend) == 2
    assert backend.get("a") is MISS
    assert backend.get("b") is MISS
    backend.set("c", 3)
    engine.invalidate_key("c", backend)
    assert backend.get("c") is MISS
    # registered keys go with manager.invalidate too
    manager = CacheManager(InMemoryBackend(), invalidation_engine=engine)
    manager.set("d", 4)
    engine.register("d", ["u"])
    assert manager.invalidate("u") == 1
    assert manager.get("d") is None


def test_readme_custom_backend() -> None:
    assert isinstance(SixMethodBackend(), CacheBackend)
    store = SixMethodBackend()
    manager = CacheManager(backend=store, key_builder=CacheKeyBuilder(namespace="app"))
    manager.set("k", {"a": [1, 2]}, ttl=60, tags=["t"])
    manager.set("none", None)
    assert manager.get("k") == {"a": [1, 2]}
    assert manager.get("none", default=MISS) is None  # a cached None is a hit
    assert all(isinstance(v, bytes) for v in store.data.values())  # data, not objects
    assert manager.invalidate("t") == 1
    assert manager.get("k") is None
    rc = ResponseCache(manager)
    assert rc.get_or_generate(MESSAGES, lambda m: "4", model_id="m") == "4"
    assert rc.get(MESSAGES, model_id="m") == "4"
    with pytest.raises(TypeError, match="get, set, delete, exists, clear and close"):
        CacheManager(backend=object())


def test_disk_backend_seed_forms(tmp_path: Path) -> None:
    manager = CacheManager(backend=DiskBackend(path=str(tmp_path / "p")), key_builder=None)
    manager.set("k", "v")
    assert DiskBackend(directory=str(tmp_path / "p")).get("k") == "v"
    backend = DiskBackend(directory=str(tmp_path / "d"))
    backend.set("k", "v", 60)
    assert backend.get("k") == "v"


# -- the seed's call forms and names -------------------------------------------------------


def test_manager_seed_constructor_and_ttl_policy() -> None:
    now = [1000.0]
    backend = InMemoryBackend(clock=lambda: now[0])
    manager = CacheManager(
        backend,
        CacheKeyBuilder("app"),
        TTLPolicy(default_ttl=100, per_type={"response": 10}),
        None,
        None,
        InvalidationEngine(InMemoryBackend()),
        0.9,
        None,
    )
    manager.set("plain", 1, cache_type="default")  # not in per_type: default_ttl
    manager.set("typed", 2, None, None, ["t"], "response")  # positional, cache_type
    manager.set("seed", 3)  # no cache_type: "response", the seed's default
    rc = ResponseCache(manager)  # layers take the manager's ttls
    rc.set(MESSAGES, "4", model_id="m")
    now[0] += 11
    assert manager.get("plain") == 1
    assert manager.get("typed") is None
    assert manager.get("seed") is None
    assert rc.get(MESSAGES, model_id="m") is None
    now[0] += 90
    assert manager.get("plain") is None
    assert manager.ttl_policy.default_ttl == 100
    assert manager.ttl_policy.per_type == {"response": 10.0}


def test_manager_semantic_get_with_a_vector_backend() -> None:
    from omnicache_cluster.backends.vector.faiss import FAISSBackend

    assert isinstance(FAISSBackend(dim=4), VectorBackend)
    manager = CacheManager(
        InMemoryBackend(),
        CacheKeyBuilder("app"),
        vector_backend=FAISSBackend(dim=4),
        semantic_threshold=0.95,
    )
    manager.set("capital of France?", "Paris", vector=np.array([1.0, 0.0, 0.0, 0.1]))
    assert manager.get("x", semantic=True, vector=np.array([1.0, 0.0, 0.0, 0.12])) == "Paris"
    assert manager.get("x", semantic=True, vector=np.array([0.0, 1.0, 0.0, 0.0])) is None
    # without vector= the seed's semantic=True is an exact lookup
    assert manager.get("capital of France?", semantic=True) == "Paris"
    assert CacheManager(InMemoryBackend()).get("k", semantic=True, vector=[1.0]) is None
    manager.delete("capital of France?")
    assert manager.get("x", semantic=True, vector=np.array([1.0, 0.0, 0.0, 0.1])) is None


def test_settings_seed_fields_and_variables(tmp_path: Path) -> None:
    env = {
        "OMNICACHE_MAX_MEMORY_ENTRIES": "2",
        "OMNICACHE_VECTOR_BACKEND": "faiss",
        "OMNICACHE_EMBEDDING_DIM": "8",
        "OMNICACHE_KEY_HASH_ALGO": "blake2b",
        "OMNICACHE_SEMANTIC_THRESHOLD": "0.8",
        "OMNICACHE_TTL_RESPONSE": "none",
    }
    settings = OmnicacheSettings.from_env(env)
    assert settings.ttl_response is None
    assert settings.layer_ttls["response"] is None
    manager = CacheManager.from_settings(settings)
    assert manager.semantic_threshold == 0.8
    assert manager.vector_backend.dim == 8  # type: ignore[union-attr]
    for i in range(3):
        manager.set(f"k{i}", i)
    assert manager.get("k0") is None
    assert manager.get("k2") == 2
    s = OmnicacheSettings(max_memory_entries=5, ttl_response=60, embedding_dim=16)
    assert s.layer_ttls["response"] == 60
    assert s.ttl_embedding == 86400
    assert CacheManager.from_settings(s).ttl_policy.ttl_for("response") == 60


def test_in_memory_backend_seed_forms() -> None:
    evicted: list[str] = []
    backend = InMemoryBackend(2, None, evicted.append)  # max_size positional
    for i in range(3):
        backend.set(f"k{i}", i, 60)  # ttl positional
    assert backend.get("k0") is MISS
    assert len(evicted) == 1
    assert InMemoryBackend(max_size=1000).get("x", default=None) is None
    lru = InMemoryBackend(eviction_policy=EvictionPolicy("lru", max_entries=1))
    lru.set("a", 1)
    lru.set("b", 2)
    assert lru.get("a") is MISS
    ttl_only = InMemoryBackend(3, eviction_policy=EvictionPolicy("ttl_only"))
    for i in range(10):
        ttl_only.set(i, i)
    assert ttl_only.get(0) == 0
    manager = CacheManager(lru, eviction_policy=lru.eviction_policy)
    assert manager.eviction_policy == EvictionPolicy("lru", max_entries=1)


def test_key_builder_request_config_and_embedding_dim() -> None:
    manager = manager_over(InMemoryBackend())
    key = manager.key_builder.build("response", "abc", extra={"model": "m"})
    manager.set(key, "v")
    assert manager.get(key) == "v"
    assert manager.get(str(key)) is None
    cfg = RequestConfig(semantic_threshold=0.8, ttl=120, tags=["x"])
    assert cfg.threshold == 0.8
    assert cfg.semantic_threshold == 0.8
    assert cfg.tags == ("x",)
    emb = EmbeddingCache(manager, dim=3)
    with pytest.raises(ValueError, match="3 values"):
        emb.get_or_compute(text="t", compute_fn=lambda t: np.zeros(4), model_id="m")
    vec = emb.get_or_compute(text="t", compute_fn=lambda t: np.ones(3), model_id="m", ttl=5)
    assert vec.tolist() == [1.0, 1.0, 1.0]


def test_stampede_shield_one_leader() -> None:
    shield = StampedeShield()
    results: list[bool] = []
    inside = threading.Event()
    release = threading.Event()

    def leader() -> None:
        with shield.lock("k") as first:
            results.append(first)
            inside.set()
            release.wait(10)

    def follower() -> None:
        with shield.lock("k") as first:
            results.append(first)

    t0 = threading.Thread(target=leader)
    t0.start()
    assert inside.wait(10)
    followers = [threading.Thread(target=follower) for _ in range(4)]
    for t in followers:
        t.start()
    release.set()
    for t in [t0, *followers]:
        t.join(10)
    assert results[0] is True
    assert results[1:] == [False] * 4
    with shield.lock("k") as first:  # a new flight after the last one ended
        assert first is True


def test_warmer_seed_result_dict() -> None:
    cache = ResponseCache(manager_over(InMemoryBackend()))
    warmer = CacheWarmer(cache, progress=False)
    first = warmer.warm_from_queries(["What is RAG?", "Explain caching"], lambda m: "a")
    assert first == {"What is RAG?": "warmed", "Explain caching": "warmed"}
    assert first["What is RAG?"] == "warmed"
    assert len(first) == 2
    again = asyncio.run(
        warmer.awarm_from_queries(["What is RAG?", "New"], lambda m: "b", model_id="default")
    )
    assert dict(again.items()) == {"What is RAG?": "hit", "New": "warmed"}


def test_prompt_cache_layer_seed_metrics() -> None:
    manager = manager_over(InMemoryBackend())
    layer = PromptCacheLayer(metrics=manager.metrics)
    usage = {"usage": {"input_tokens": 50, "cache_read_input_tokens": 8000}}
    layer.record(usage, "claude-sonnet-4-5")
    metrics: Any = manager.metrics
    assert metrics.provider_cache_hits == 1
    assert metrics.estimated_tokens_saved == 8000
    assert metrics.estimated_cost_saved_usd > 0
    assert PromptCacheLayer(manager.metrics)._metrics is manager.metrics


# -- what stays different fails loudly, naming the replacement -----------------------------


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: CacheKeyBuilder("app", algo="sha256"), ValueError, "blake2b"),
        (lambda: CacheKeyBuilder("app", "md5"), ValueError, "blake2b"),
        (
            lambda: OmnicacheSettings.from_env({"OMNICACHE_KEY_HASH_ALGO": "sha256"}),
            ConfigError,
            "OMNICACHE_KEY_HASH_ALGO.*blake2b",
        ),
        (lambda: OmnicacheSettings(key_hash_algo="md5"), ConfigError, "blake2b"),
        (
            lambda: OmnicacheSettings.from_env({"OMNICACHE_VECTOR_BACKEND": "weaviate"}),
            ConfigError,
            "none, faiss, chroma",
        ),
        (lambda: RequestConfig(namespace_prefix="t1"), TypeError, "for_tenant"),
        (lambda: PickleSerializer(), ValueError, r"secret_key=.*JsonSerializer"),
        (
            lambda: StreamingResponseCache(InMemoryBackend(), chunk_joiner="".join),
            TypeError,
            "to_cacheable",
        ),
        (lambda: PromptCacheLayer(min_chars_to_cache=1024), TypeError, "min_tokens="),
        (
            lambda: CacheManager(InMemoryBackend(), eviction_policy=EvictionPolicy(max_entries=5)),
            ValueError,
            r"InMemoryBackend\(eviction_policy=",
        ),
    ],
    ids=[
        "algo",
        "algo-positional",
        "env-algo",
        "settings-algo",
        "vector-backend",
        "namespace-prefix",
        "unsigned-pickle",
        "chunk-joiner",
        "min-chars",
        "eviction-policy",
    ],
)
def test_remaining_differences_fail_loudly(call: Any, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()


def test_disk_size_limit_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"InMemoryBackend\(max_bytes=.*maxmemory"):
        DiskBackend(directory=str(tmp_path), size_limit=2**30)


def test_unencodable_values_fail_where_stored(local_backend: Any) -> None:
    manager = manager_over(local_backend)
    rc = ResponseCache(manager)
    obj = types.SimpleNamespace(text="4")
    with pytest.raises(TypeError, match=r"SimpleNamespace.*model_dump"):
        rc.set(MESSAGES, obj, model_id="m")
    calls = []

    def generate(messages: Any) -> Any:
        calls.append(1)
        return obj

    with pytest.raises(TypeError, match="SimpleNamespace"):
        rc.get_or_generate(MESSAGES, generate, model_id="m")
    assert rc.get(MESSAGES, model_id="m") is None
    with pytest.raises(TypeError, match="SimpleNamespace"):
        manager.set("k", obj)
    with pytest.raises(TypeError, match="SimpleNamespace"):
        ContextCache(manager).set("s", obj, 0)


# -- SDK-like objects round-trip through every layer on every local backend ----------------


def _round_trip_every_layer(manager_or_backend: Any) -> None:
    value = completion()
    docs = [Doc("a", 0.9, {"src": "x"}), Doc("b", 0.5)]
    turn = Turn("assistant", "hi", tuple(docs))

    rc = ResponseCache(manager_or_backend)
    rc.set(MESSAGES, value, model_id="gpt-4o")
    got = rc.get(MESSAGES, model_id="gpt-4o")
    assert got == value
    assert type(got) is Completion
    assert type(got.usage) is Usage
    other = [{"role": "user", "content": "gen"}]
    assert rc.get_or_generate(other, lambda m: completion("5"), model_id="gpt-4o") == completion(
        "5"
    )
    assert rc.get(other, model_id="gpt-4o") == completion("5")

    ret = RetrievalCache(manager_or_backend)
    assert ret.get_or_retrieve("q", lambda q, k: docs, "idx", 2) == docs
    cached_docs = ret.get("q", "idx", 2)
    assert cached_docs == docs
    assert all(type(d) is Doc for d in cached_docs)

    ctx = ContextCache(manager_or_backend)
    ctx.set("s1", [turn], 0)
    (back,) = ctx.get("s1", 0)
    assert back == turn
    assert type(back.docs) is tuple
    assert type(back.docs[0]) is Doc

    sc = StreamingResponseCache(manager_or_backend)
    chunks = [completion("4"), completion("2")]
    assert list(sc.get_or_stream(MESSAGES, lambda m: iter(chunks), model_id="s")) == chunks
    replay = list(sc.get_or_stream(MESSAGES, lambda m: iter(()), model_id="s"))
    assert replay == chunks
    assert all(type(c) is Completion for c in replay)

    @LLMMiddleware(rc, model_id="mw")
    def call(messages: Any) -> Completion:
        return completion("mw")

    assert call(MESSAGES) == completion("mw")
    assert rc.get(MESSAGES, model_id="mw") == completion("mw")


def test_sdk_objects_round_trip_through_every_layer(local_backend: Any) -> None:
    _round_trip_every_layer(manager_over(local_backend))


def test_readme_tiered_backend_and_round_trip_on_redis(redis_server: str) -> None:
    from omnicache_cluster import RedisBackend, TieredBackend

    backend = TieredBackend(
        l1=InMemoryBackend(max_size=1000),
        l2=RedisBackend(url=redis_server, key_prefix=unique("seed-tiered") + ":"),
        l1_ttl=300,
    )
    manager = CacheManager(backend=backend, key_builder=CacheKeyBuilder())
    manager.set("k", "v")
    assert manager.get("k") == "v"
    _round_trip_every_layer(manager)
    redis_only = RedisBackend(url=redis_server, key_prefix=unique("seed-redis") + ":")
    _round_trip_every_layer(manager_over(redis_only))


@pytest.mark.ray
def test_seed_examples_and_round_trip_on_the_cluster(cluster: Any) -> None:
    manager = CacheManager(cluster, CacheKeyBuilder(namespace=cluster.key_namespace, tenant="seed"))
    manager.set("my_key", {"result": 42}, ttl=60)
    assert manager.get("my_key") == {"result": 42}
    assert ResponseCache(manager).get([{"role": "user", "content": "never"}]) is None
    _round_trip_every_layer(manager)
    _round_trip_every_layer(cluster.for_tenant("seed-direct"))
    rc = ResponseCache(manager)
    other = [{"role": "user", "content": "unencodable"}]
    with pytest.raises(TypeError, match="SimpleNamespace"):
        rc.set(other, types.SimpleNamespace(text="4"), model_id="m")
    with pytest.raises(TypeError, match="SimpleNamespace"):
        rc.get_or_generate(other, lambda m: types.SimpleNamespace(text="4"), model_id="m")
    assert rc.get(other, model_id="m") is None


def test_semantic_threshold_setting_reaches_the_semantic_caches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from omnicache_cluster import SemanticCache

    def embed(text: str) -> np.ndarray:
        return np.array([1.0, float(len(text)), 0.5])

    manager = CacheManager.from_settings(
        OmnicacheSettings.from_env({"OMNICACHE_SEMANTIC_THRESHOLD": "0.83"})
    )
    assert SemanticCache(manager, embed).threshold == 0.83
    monkeypatch.setenv("OMNICACHE_SEMANTIC_THRESHOLD", "0.77")
    assert SemanticCache(InMemoryBackend(), embed).threshold == 0.77
    assert SemanticCache(InMemoryBackend(), embed, threshold=0.99).threshold == 0.99
    monkeypatch.setenv("OMNICACHE_SEMANTIC_THRESHOLD", "2")
    with pytest.raises(ConfigError, match="OMNICACHE_SEMANTIC_THRESHOLD"):
        SemanticCache(InMemoryBackend(), embed)


# -- the migration guide's examples run ---------------------------------------------------

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "migrating-from-omnicache-ai.md"


def _guide_block(marker: str) -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"<!-- migrate:{marker} -->")
    return text[start:].split("```python\n", 1)[1].split("```", 1)[0]


def test_guide_single_process_example_runs() -> None:
    exec(compile(_guide_block("single"), str(GUIDE), "exec"), {})  # noqa: S102


def test_guide_lists_no_silent_difference() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    changed = text.split("## Changed on purpose", 1)[1]
    rows = [r for r in changed.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert rows
    for row in rows:
        assert row.rstrip().endswith("|"), row
        assert row.split("|")[-2].strip(), f"no 'how it shows' for: {row}"


@pytest.mark.ray
def test_guide_three_lines_on_a_cluster(ray_session: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNICACHE_RAY_NAMESPACE", unique("guide"))
    monkeypatch.setenv("OMNICACHE_NUM_SHARDS", "1")
    monkeypatch.setenv("OMNICACHE_BACKEND", "memory")
    scope: dict[str, Any] = {}
    exec(compile(_guide_block("cluster"), str(GUIDE), "exec"), scope)  # noqa: S102
    cluster, manager = scope["cluster"], scope["manager"]
    try:
        rc = ResponseCache(manager)
        assert rc.get_or_generate(MESSAGES, lambda m: completion(), model_id="gpt-4o") == (
            completion()
        )
        assert rc.get(MESSAGES, model_id="gpt-4o") == completion()
        assert manager.get("absent") is None
    finally:
        cluster.shutdown(stop_ray=False)


def test_typed_values_resolve_only_against_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    import msgpack

    from omnicache_cluster import CodecError, Serializer, allow_types
    from omnicache_cluster.core import codec

    ser = Serializer()
    blob = ser.dumps(Doc("a", 1.0))
    monkeypatch.setattr(codec, "_allowed", {})  # a reader process that never wrote a Doc
    with pytest.raises(CodecError, match=r"allow_types\(Doc\)"):
        ser.loads(blob)
    backend = InMemoryBackend()
    backend.set("k", Doc("a", 1.0))  # writing allows it again in this process
    monkeypatch.setattr(codec, "_allowed", {})
    assert backend.get("k") is MISS  # refused: a miss, counted
    assert backend.stats()["decode_errors"] == 1
    allow_types(Doc)
    assert ser.loads(blob) == Doc("a", 1.0)
    with pytest.raises(TypeError, match="dataclasses and pydantic"):
        allow_types(types.SimpleNamespace)
    # Bytes naming another class (a function, a non-data class) are never resolved.
    for name in ("os:system", "subprocess:Popen", f"{__name__}:SixMethodBackend"):
        body = msgpack.packb([name, {}])
        forged = ser.dumps(0)[:5] + msgpack.packb(msgpack.ExtType(6, body))
        with pytest.raises(CodecError, match="allow-list"):
            ser.loads(forged)


SEED_IMPORTS = [
    ("backends.memory_backend", "InMemoryBackend"),
    ("backends.async_memory_backend", "AsyncInMemoryBackend"),
    ("backends.disk_backend", "DiskBackend"),
    ("backends.redis_backend", "RedisBackend"),
    ("backends.tiered_backend", "TieredBackend"),
    ("backends.vector_backend", "FAISSBackend"),
    ("backends.vector_backend", "ChromaBackend"),
    ("backends.base", "CacheBackend"),
    ("backends.base", "VectorBackend"),
    ("backends.async_base", "AsyncCacheBackend"),
    ("core.cache_manager", "CacheManager"),
    ("core.key_builder", "CacheKeyBuilder"),
    ("core.metrics", "CacheMetrics"),
    ("core.policies", "TTLPolicy"),
    ("core.policies", "EvictionPolicy"),
    ("core.invalidation", "InvalidationEngine"),
    ("core.request_config", "RequestConfig"),
    ("core.warmer", "CacheWarmer"),
    ("core.compressor", "GzipCompressor"),
    ("core.serializer", "JsonSerializer"),
    ("core.stampede", "StampedeShield"),
    ("layers.response_cache", "ResponseCache"),
    ("layers.embedding_cache", "EmbeddingCache"),
    ("layers.retrieval_cache", "RetrievalCache"),
    ("layers.context_cache", "ContextCache"),
    ("layers.streaming_cache", "StreamingResponseCache"),
    ("layers.prompt_cache", "PromptCacheLayer"),
    ("layers.semantic_cache", "SemanticCache"),
    ("layers.adaptive_semantic_cache", "AdaptiveSemanticCache"),
    ("middleware.llm_middleware", "LLMMiddleware"),
    ("middleware.llm_middleware", "AsyncLLMMiddleware"),
    ("middleware.embedding_middleware", "EmbeddingMiddleware"),
    ("middleware.retriever_middleware", "RetrieverMiddleware"),
]


@pytest.mark.parametrize(
    ("module", "name"), SEED_IMPORTS, ids=[f"{m}.{n}" for m, n in SEED_IMPORTS]
)
def test_seed_module_paths_import_after_the_rename(module: str, name: str) -> None:
    import importlib

    import omnicache_cluster

    obj = getattr(importlib.import_module(f"omnicache_cluster.{module}"), name)
    if module == "backends.vector_backend":  # not top-level names: optional libraries
        from omnicache_cluster.backends import vector

        assert obj is getattr(vector, name)
    else:
        assert obj is getattr(omnicache_cluster, name)
