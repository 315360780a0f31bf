"""The cache layers through the real cluster: hits, misses, TTL, tags, keys, tenants."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from omnicache_cluster import MISS, InMemoryBackend
from omnicache_cluster._flight import FAULTS
from omnicache_cluster.layers import (
    ContextCache,
    EmbeddingCache,
    ResponseCache,
    RetrievalCache,
)
from omnicache_cluster.policies import RequestConfig, TTLPolicy
from omnicache_cluster.testing import wait_shard_gone

pytestmark = pytest.mark.ray

MSGS = [{"role": "user", "content": "What is RAG?"}]
TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]


class Provider:
    """The fake LLM/embedding provider: counts calls, answers deterministically."""

    def __init__(self, answer=lambda x: f"answer:{x}") -> None:
        self.calls: list = []
        self._answer = answer
        self._lock = threading.Lock()

    def __call__(self, arg):
        with self._lock:
            self.calls.append(arg)
        return self._answer(arg)


def test_response_hit_miss_and_falsy_values_are_cacheable(cluster):
    rc = ResponseCache(cluster)
    assert rc.get(MSGS, "gpt-4o") is MISS
    assert rc.get(MSGS, "gpt-4o", default="fallback") == "fallback"
    for i, value in enumerate([None, "", 0, False, [], {}]):
        msgs = [{"role": "user", "content": f"q{i}"}]
        provider = Provider(lambda _m, v=value: v)
        assert rc.get_or_generate(msgs, provider, "gpt-4o") == value
        assert rc.get_or_generate(msgs, provider, "gpt-4o") == value
        assert rc.get(msgs, "gpt-4o") == value
        assert type(rc.get(msgs, "gpt-4o")) is type(value)
        assert len(provider.calls) == 1, value
    stats = rc.stats()
    assert (stats["lookups"], stats["hits"], stats["computes"]) == (2 + 6 * 4, 6 * 3, 6)


def test_response_key_has_every_field_that_changes_the_answer(cluster):
    rc = ResponseCache(cluster)
    base = rc.key_for(MSGS, "gpt-4o", {"temperature": 0.0, "top_p": 1})
    assert base == rc.key_for(MSGS, "gpt-4o", {"top_p": 1.0, "temperature": 0})  # dict order
    variants = [
        rc.key_for(MSGS, "gpt-4o-mini", {"temperature": 0.0, "top_p": 1}),
        rc.key_for(MSGS, "gpt-4o", {"temperature": 0.7, "top_p": 1}),
        rc.key_for(MSGS, "gpt-4o", {"temperature": 0.0, "top_p": 1}, tools=TOOLS),
        rc.key_for(MSGS, "gpt-4o", {"temperature": 0.0, "top_p": 1}, system="Be terse."),
        rc.key_for(MSGS, "gpt-4o", {"temperature": 0.0, "top_p": 1}, tool_choice="auto"),
        rc.key_for(
            MSGS, "gpt-4o", {"temperature": 0.0, "top_p": 1}, response_format={"type": "json"}
        ),
    ]
    assert len({base, *variants}) == 7
    # tools given as an argument or inside params are the same request
    assert rc.key_for(MSGS, "m", {"tools": TOOLS}) == rc.key_for(MSGS, "m", tools=TOOLS)
    with pytest.raises(ValueError, match="given twice"):
        rc.key_for(MSGS, "m", {"tools": TOOLS}, tools=[])
    with pytest.raises(TypeError, match="unexpected request fields"):
        rc.key_for(MSGS, "m", toolz=TOOLS)
    rc.set(MSGS, "with tools", "m", tools=TOOLS)
    assert rc.get(MSGS, "m") is MISS
    assert rc.get(MSGS, "m", tools=TOOLS) == "with tools"


def test_response_keys_are_stable_across_processes(cluster, ray_session, python_env):
    rc = ResponseCache(cluster)
    request = {"params": {"temperature": 0.2, "max_tokens": 64}, "system": "Be terse."}
    mine = str(rc.key_for(MSGS, "gpt-4o", request["params"], system=request["system"]))

    @ray_session.remote(num_cpus=0.1)
    def key_in_task(client):
        return str(
            ResponseCache(client).key_for(MSGS, "gpt-4o", request["params"], system="Be terse.")
        )

    assert ray_session.get(key_in_task.remote(cluster)) == mine
    script = f"""
from omnicache_cluster import InMemoryBackend
from omnicache_cluster.layers import ResponseCache
rc = ResponseCache(InMemoryBackend(namespace={cluster.key_namespace!r}))
params = dict(reversed(list({request["params"]!r}.items())))
print(rc.key_for({MSGS!r}, "gpt-4o", params, system="Be terse."))
"""
    env = {**python_env, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # Another process, another hash seed, another dict order: the same key, except the
    # tenant part (InMemoryBackend's admin view is tenant "default" like the cluster's).
    assert out.stdout.strip() == mine


def test_response_ttl_and_invalidate_model(cluster):
    rc = ResponseCache(cluster, ttl_policy=TTLPolicy(default=60, per_layer={"response": 0.3}))
    rc.set(MSGS, "short", "gpt-4o")
    rc.set(MSGS, "long", "gpt-4o", config=RequestConfig(ttl=60), system="s")
    rc.set(MSGS, "other model", "claude", ttl=60)
    time.sleep(0.5)
    assert rc.get(MSGS, "gpt-4o") is MISS
    assert rc.get(MSGS, "gpt-4o", system="s") == "long"
    assert rc.invalidate_model("gpt-4o") == 1
    assert rc.get(MSGS, "gpt-4o", system="s") is MISS
    assert rc.get(MSGS, "claude") == "other model"


def test_request_config_skip_cache_and_no_store(cluster):
    rc = ResponseCache(cluster)
    provider = Provider()
    rc.set(MSGS, "cached", "m")
    skip = RequestConfig(skip_cache=True)
    assert rc.get_or_generate(MSGS, provider, "m", config=skip) == f"answer:{MSGS}"
    assert rc.get(MSGS, "m") == "cached"  # skip_cache neither read nor wrote
    no_store = RequestConfig(no_store=True)
    other = [{"role": "user", "content": "not stored"}]
    assert rc.get_or_generate(MSGS, provider, "m", config=no_store) == "cached"  # reads
    assert rc.get_or_generate(other, provider, "m", config=no_store) == f"answer:{other}"
    assert rc.get(other, "m") is MISS
    assert len(provider.calls) == 2
    with pytest.raises(ValueError, match="threshold"):
        RequestConfig(threshold=1.5)
    with pytest.raises(TypeError, match="RequestConfig"):
        rc.get(MSGS, "m", config={"ttl": 3})


def test_get_or_generate_is_single_flight_across_tasks(cluster, ray_session):
    @ray_session.remote(num_cpus=0.1)
    def ask(client, gate_at):
        import time as t

        from omnicache_cluster.layers import ResponseCache as RC

        t.sleep(max(0.0, gate_at - t.time()))
        calls = []

        def slow(messages):
            calls.append(1)
            t.sleep(0.5)
            return "the answer"

        return RC(client).get_or_generate(MSGS, slow, "gpt-4o"), len(calls)

    gate = time.time() + 2.0
    results = ray_session.get([ask.remote(cluster, gate) for _ in range(4)])
    assert [r[0] for r in results] == ["the answer"] * 4
    assert sum(r[1] for r in results) == 1


def test_embedding_vectors_keep_dtype_and_shape(cluster):
    ec = EmbeddingCache(cluster)
    ec.set("half", np.arange(4, dtype=np.float16), "e5")
    ec.set("block", np.ones((2, 3), dtype=np.float64), "e5")
    half, block = ec.get_many(["half", "block"], "e5")
    assert (half.dtype, half.tolist()) == (np.float16, [0, 1, 2, 3])
    assert (block.shape, block.dtype) == ((2, 3), np.float64)
    assert ec.get("half", "other-model") is MISS
    assert ec.get("half", "e5", params={"dimensions": 2}) is MISS
    ec.set("zero", np.zeros(3, dtype=np.float32), "e5")
    assert ec.get("zero", "e5").tolist() == [0.0, 0.0, 0.0]  # a falsy-looking vector hits


def test_get_or_compute_many_calls_fn_once_with_exactly_the_missing(cluster):
    ec = EmbeddingCache(cluster)
    ec.set_many({"b": [2.0, 2.0], "d": [4.0, 4.0]}, "e5")
    batches: list[list[str]] = []

    def embed(texts):
        batches.append(list(texts))
        return np.array([[float(ord(t) - 96)] * 2 for t in texts], dtype=np.float32)

    texts = ["a", "b", "c", "a", "d", "e"]
    vectors = ec.get_or_compute_many(texts, embed, "e5")
    assert batches == [["a", "c", "e"]]
    assert [v.tolist() for v in vectors] == [[n, n] for n in (1.0, 2.0, 3.0, 1.0, 4.0, 5.0)]
    assert ec.get_or_compute_many(["e", "c", "b"], embed, "e5")[0].tolist() == [5.0, 5.0]
    assert batches == [["a", "c", "e"]]  # all hits: no call
    with pytest.raises(ValueError, match="returned 1 vectors for 2 texts"):
        ec.get_or_compute_many(["x", "y"], lambda ts: [[0.0]], "e5")


async def test_async_get_or_compute_many_and_single(cluster):
    ec = EmbeddingCache(cluster)
    batches = []

    async def embed(texts):
        batches.append(list(texts))
        await asyncio.sleep(0.01)
        return [np.full(3, len(t), dtype=np.float32) for t in texts]

    first = await ec.aget_or_compute_many(["aa", "b"], embed, "e5")
    second = await ec.aget_or_compute_many(["b", "ccc", "aa"], embed, "e5")
    assert batches == [["aa", "b"], ["ccc"]]
    assert ([v[0] for v in first], [v[0] for v in second]) == ([2, 1], [1, 3, 2])
    single = await ec.aget_or_compute("dddd", lambda t: np.full(2, len(t)), "e5")
    assert single.tolist() == [4, 4]
    assert (await ec.aget("dddd", "e5")).tolist() == [4, 4]


def test_retrieval_key_query_retriever_top_k_filters(cluster):
    rc = RetrievalCache(cluster)
    docs = Provider(lambda q: [q])

    def retrieve(query, top_k, filters=None):
        return docs((query, top_k, filters))

    assert rc.get_or_retrieve("q", retrieve, "idx", 3) == [("q", 3, None)]
    assert rc.get_or_retrieve("q", retrieve, "idx", 3) == [("q", 3, None)]
    rc.get_or_retrieve("q", retrieve, "idx", 4)
    rc.get_or_retrieve("q", retrieve, "idx2", 3)
    rc.get_or_retrieve("q", retrieve, "idx", 3, filters={"lang": "de"})
    assert len(docs.calls) == 4
    rc.set("empty", [], "idx", 3)
    assert rc.get("empty", "idx", 3) == []  # an empty result is a hit
    assert rc.invalidate_retriever("idx") == 4  # three results and the empty one
    assert rc.get("q", "idx2", 3) == [("q", 3, None)]


def test_context_turns_and_invalidate_session(cluster):
    cc = ContextCache(cluster, ttl_policy=TTLPolicy(per_layer={"context": 0.3}))
    for turn in range(3):
        cc.set("s1", [{"role": "user", "content": f"turn {turn}"}], turn, ttl=60)
    cc.set("s1", ["latest"], ttl=60)
    cc.set("s2", ["other session"], 0)
    assert cc.get_turns("s1", [0, 2, 5]) == [
        [{"role": "user", "content": "turn 0"}],
        [{"role": "user", "content": "turn 2"}],
        MISS,
    ]
    assert cc.get("s1") == ["latest"]
    assert cc.invalidate_session("s1") == 4
    assert cc.get("s1", 1) is MISS
    time.sleep(0.5)
    assert cc.get("s2", 0) is MISS  # the layer's policy ttl


def test_layers_keep_tenants_apart(cluster):
    acme = ResponseCache(cluster.for_tenant("acme"))
    globex = ResponseCache(cluster).for_tenant("globex")
    acme.set(MSGS, "acme says", "gpt-4o")
    globex.set(MSGS, "globex says", "gpt-4o")
    assert acme.get(MSGS, "gpt-4o") == "acme says"
    assert globex.get(MSGS, "gpt-4o") == "globex says"
    assert globex.invalidate_model("gpt-4o") == 1
    assert acme.get(MSGS, "gpt-4o") == "acme says"
    assert acme.key_for(MSGS, "gpt-4o") != globex.key_for(MSGS, "gpt-4o")


async def test_async_layers_do_not_block_the_event_loop(cluster):
    rc = ResponseCache(cluster)
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def slow_llm(messages):
        await asyncio.sleep(0.3)
        return "async answer"

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    answers = await asyncio.gather(
        *(rc.aget_or_generate(MSGS, slow_llm, "gpt-4o") for _ in range(5)),
        *(rc.aget([{"role": "user", "content": f"x{i}"}], "gpt-4o") for i in range(20)),
    )
    elapsed = time.monotonic() - started
    stop.set()
    await task
    assert answers[:5] == ["async answer"] * 5
    assert answers[5:] == [MISS] * 20
    # ~30 ticks fit in the 0.3 s the answer takes; a blocked loop would tick ~once.
    assert ticks >= 0.5 * elapsed / 0.01 - 2, (ticks, elapsed)
    assert await rc.aget(MSGS, "gpt-4o") == "async answer"


def test_layers_run_on_a_cache_manager_and_an_in_memory_backend(cluster):
    from omnicache_cluster import CacheKeyBuilder, CacheManager

    manager = CacheManager(cluster, CacheKeyBuilder(namespace=cluster.key_namespace, tenant="m"))
    rc = ResponseCache(manager)
    provider = Provider()
    rc.get_or_generate(MSGS, provider, "gpt-4o")
    rc.get_or_generate(MSGS, provider, "gpt-4o")
    assert len(provider.calls) == 1
    assert manager.metrics.snapshot()["hits"] == 1
    local = ResponseCache(InMemoryBackend())
    barrier = threading.Barrier(6)

    def slow(messages):
        time.sleep(0.2)
        return provider(messages)

    def call():
        barrier.wait()
        return local.get_or_generate(MSGS, slow, "gpt-4o")

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(provider.calls) == 2  # one more, for six concurrent local callers
    with pytest.raises(TypeError, match="CacheManager"):
        ResponseCache(object())


def test_layers_fail_open_when_the_cluster_is_down(fresh_cluster, ray_session):
    cluster = fresh_cluster(num_shards=1).with_options(retry_deadline_s=0.3, call_timeout_s=1.0)
    rc, ec = ResponseCache(cluster), EmbeddingCache(cluster)
    rc.set(MSGS, "cached", "gpt-4o")
    (shard,) = cluster._state.ring.members
    ray_session.kill(cluster._state.handle_of(shard), no_restart=True)
    wait_shard_gone(cluster, shard)
    before = dict(FAULTS)
    assert rc.get(MSGS, "gpt-4o") is MISS
    assert rc.get_or_generate(MSGS, lambda m: "live answer", "gpt-4o") == "live answer"
    vectors = ec.get_or_compute_many(["a", "b"], lambda ts: [[1.0]] * len(ts), "e5")
    assert [v.tolist() for v in vectors] == [[1.0], [1.0]]
    assert FAULTS["get"] >= before.get("get", 0) + 2
    assert FAULTS["set"] >= before.get("set", 0) + 1
    assert json.dumps(rc.stats())  # plain numbers, for exporters


def test_a_layer_sent_to_a_ray_task_shares_the_cache(cluster, ray_session):
    rc = ResponseCache(cluster, ttl_policy=TTLPolicy(default=60, per_layer={"x": None}))
    rc.set(MSGS, "from the driver", "gpt-4o")
    rc.get(MSGS, "gpt-4o")

    @ray_session.remote(num_cpus=0.1)
    def use(layer):
        value = layer.get(MSGS, "gpt-4o")
        layer.set(MSGS, "from the task", "claude")
        return value, layer.stats()["lookups"], layer.ttl_policy.ttl_for("response")

    # the layer pickles by name (its counters start afresh in the task)
    assert ray_session.get(use.remote(rc)) == ("from the driver", 1, 60.0)
    assert rc.get(MSGS, "claude") == "from the task"
    assert rc.stats()["lookups"] == 2


def test_response_hits_count_the_tokens_and_cost_they_saved(cluster):
    from omnicache_cluster.layers.response import usage_tokens
    from omnicache_cluster.observability import flush_savings
    from omnicache_cluster.observability.snapshot import cluster_metrics

    rc = ResponseCache(cluster)
    model = "gpt-4o"
    msgs = [{"role": "user", "content": f"savings {time.time_ns()}"}]
    response = {
        "choices": [{"message": {"content": "ok"}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100},
    }
    assert usage_tokens(response) == (1000, 100)
    assert usage_tokens({"usage": {"input_tokens": 7, "output_tokens": 3}}) == (7, 3)
    assert usage_tokens("plain text") is None

    def totals():
        snap = cluster_metrics(cluster)
        tokens = snap.tokens_saved.get(model, {"prompt": 0, "completion": 0})
        return tokens["prompt"], tokens["completion"], snap.cost_saved_usd.get(model, 0.0)

    assert flush_savings(cluster)
    before = totals()
    assert rc.get_or_generate(msgs, lambda m: response, model_id=model) == response  # computed
    assert rc.get_or_generate(msgs, lambda m: response, model_id=model) == response  # hit
    assert rc.get(msgs, model_id=model) == response  # hit
    assert rc.get([{"role": "user", "content": "never asked"}], model_id=model) is MISS
    assert flush_savings(cluster)
    after = totals()
    assert (after[0] - before[0], after[1] - before[1]) == (2000, 200)
    assert after[2] > before[2]
