"""RequestConfig, TTLPolicy from the settings, and InvalidationEngine across the cluster."""

from __future__ import annotations

import numpy as np
import pytest

from omnicache_cluster import MISS, ConfigError, InMemoryBackend
from omnicache_cluster.layers import (
    ContextCache,
    EmbeddingCache,
    ResponseCache,
    StreamingResponseCache,
)
from omnicache_cluster.policies import InvalidationEngine, RequestConfig, TTLPolicy


def test_ttl_policy_reads_the_omnicache_settings():
    env = {
        "OMNICACHE_DEFAULT_TTL": "30",
        "OMNICACHE_TTL_RESPONSE": "0",
        "OMNICACHE_TTL_STREAM": "5",
    }
    policy = TTLPolicy.from_env(env)
    assert policy.ttl_for("response") is None  # 0: never expires
    assert policy.ttl_for("stream") == 5.0
    assert policy.ttl_for("embedding") == 86400.0  # the seed's default for the layer
    assert policy.ttl_for("some-layer") == 30.0
    assert policy.ttl_for("response", override=7) == 7.0
    with pytest.raises(ConfigError, match="OMNICACHE_TTL_RESPONSE"):
        TTLPolicy.from_env({"OMNICACHE_TTL_RESPONSE": "soon"})
    assert ResponseCache(InMemoryBackend(), ttl_policy=policy).ttl_policy is policy
    with pytest.raises(ValueError, match="ttl"):
        TTLPolicy(default=-1)


def test_layer_ttl_follows_policy_then_request(monkeypatch):
    now = [1000.0]
    backend = InMemoryBackend(clock=lambda: now[0])
    monkeypatch.setenv("OMNICACHE_TTL_CONTEXT", "10")
    cc = ContextCache(backend)  # the policy comes from the environment
    cc.set("s", ["a"], 0)
    cc.set("s", ["b"], 1, config=RequestConfig(ttl=100))
    now[0] += 11
    assert cc.get_turns("s", [0, 1]) == [MISS, ["b"]]


def test_request_config_validates():
    assert RequestConfig(ttl=5, tags=["x"]).tags == ("x",)
    assert not RequestConfig(no_store=True).writes
    assert RequestConfig(no_store=True).reads
    assert not RequestConfig(skip_cache=True).reads
    for bad, error in (
        ({"ttl": 0}, ValueError),
        ({"threshold": -0.1}, ValueError),
        ({"skip_cache": 1}, TypeError),
        ({"tags": "one-tag"}, TypeError),
        ({"tags": [""]}, TypeError),
    ):
        with pytest.raises(error):
            RequestConfig(**bad)


@pytest.mark.ray
def test_invalidation_engine_removes_a_models_entries_in_every_layer(cluster):
    acme, globex = cluster.for_tenant("acme"), cluster.for_tenant("globex")
    msgs = [{"role": "user", "content": "hi"}]
    for view in (acme, globex):
        ResponseCache(view).set(msgs, "hello", "gpt-4o")
        ResponseCache(view).set(msgs, "hey", "claude")
        EmbeddingCache(view).set_many({f"t{i}": np.ones(2) for i in range(20)}, "gpt-4o")
        list(StreamingResponseCache(view).get_or_stream(msgs, lambda m: iter("ab"), "gpt-4o"))
    engine = InvalidationEngine(acme)
    assert engine.invalidate_model("gpt-4o") == 1 + 20 + 1  # spread over both shards
    assert ResponseCache(acme).get(msgs, "gpt-4o") is MISS
    assert ResponseCache(acme).get(msgs, "claude") == "hey"
    assert ResponseCache(globex).get(msgs, "gpt-4o") == "hello"  # another tenant
    assert InvalidationEngine(globex).invalidate_many(["model:gpt-4o", "model:claude"]) == 23
    with pytest.raises(TypeError):
        InvalidationEngine(object())


@pytest.mark.ray
async def test_invalidation_engine_async(cluster):
    rc = ResponseCache(cluster)
    await rc.aset([{"role": "user", "content": "x"}], "y", "m1")
    engine = InvalidationEngine(cluster)
    assert await engine.ainvalidate_many(["model:m1", "model:m2"]) == 1
    assert await rc.aget([{"role": "user", "content": "x"}], "m1") is MISS
