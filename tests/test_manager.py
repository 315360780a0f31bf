"""The seed-compatible facade: CacheManager over InMemoryBackend and over the cluster."""

from __future__ import annotations

import pytest

from omnicache_cluster import (
    MISS,
    CacheKeyBuilder,
    CacheManager,
    InMemoryBackend,
    ValueTooLarge,
)
from omnicache_cluster.protocols import CacheBackend


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _exercise(manager: CacheManager) -> None:
    assert manager.get("key") is None
    assert manager.get("key", default=MISS) is MISS
    manager.set("key", "val", tags=["model:gpt-4o", "env:prod"])
    manager.set("key2", None, tags=["model:gpt-4o"])
    assert manager.get("key") == "val"
    assert manager.get("key2", default=MISS) is None  # a cached None is a hit
    assert manager.exists("key2")
    snap = manager.metrics.snapshot()
    assert (snap["hits"], snap["misses"], snap["sets"]) == (2, 2, 2)
    assert snap["hit_rate"] == pytest.approx(0.5)
    assert snap["miss_rate"] == pytest.approx(0.5)
    assert manager.invalidate("model:gpt-4o") == 2
    assert manager.get("key", default=MISS) is MISS
    manager.set("key3", [1, 2])
    assert manager.delete("key3")
    assert not manager.delete("key3")


def test_manager_over_memory_backend():
    _exercise(CacheManager(InMemoryBackend(), CacheKeyBuilder(namespace="app")))


@pytest.mark.ray
def test_manager_over_cluster(cluster):
    _exercise(CacheManager(backend=cluster, key_builder=CacheKeyBuilder(namespace="seedapi")))


@pytest.mark.ray
def test_manager_namespaces_and_tenants_over_cluster(cluster):
    app = CacheManager(cluster, CacheKeyBuilder(namespace="app1"))
    other = CacheManager(cluster, CacheKeyBuilder(namespace="app2"))
    acme = app.for_tenant("acme")
    app.set("k", "app1")
    other.set("k", "app2")
    acme.set("k", "acme")
    assert (app.get("k"), other.get("k"), acme.get("k")) == ("app1", "app2", "acme")
    assert acme.key_builder.tenant == "acme"
    assert acme.clear() == 1
    assert (app.get("k"), acme.get("k")) == ("app1", None)
    assert acme.metrics.snapshot()["sets"] == 1


async def test_manager_async_methods():
    manager = CacheManager(InMemoryBackend(), CacheKeyBuilder(namespace="app"))
    await manager.aset("k", {"a": 1}, tags=["t"])
    assert await manager.aget("k") == {"a": 1}
    assert await manager.aget("missing", default=MISS) is MISS
    assert await manager.ainvalidate("t") == 1
    await manager.aset("k2", 1)
    assert await manager.adelete("k2")


def test_default_ttl_and_ttl_expiry_with_fake_clock():
    clock = FakeClock()
    manager = CacheManager(InMemoryBackend(clock=clock), default_ttl=10)
    manager.set("short", 1)
    manager.set("long", 2, ttl=100)
    clock.now += 11
    assert manager.get("short", default=MISS) is MISS
    assert manager.get("long") == 2


def test_memory_backend_is_bounded_and_counts_evictions():
    backend = InMemoryBackend(max_bytes=4_000)
    manager = CacheManager(backend)
    for i in range(100):
        manager.set(f"k{i}", "x" * 100)
    stats = backend.stats()
    assert stats["bytes"] <= 4_000
    assert stats["evictions"]["lru"] > 0
    assert manager.metrics.snapshot()["evictions"] == stats["evictions"]["lru"]
    assert manager.get("k99") == "x" * 100
    assert manager.get("k0") is None


def test_memory_backend_tenants_are_isolated():
    backend = InMemoryBackend()
    a, b = backend.for_tenant("a"), backend.for_tenant("b")
    a.set("q", 1, tags=["t"])
    b.set("q", 2, tags=["t"])
    assert (a.get("q"), b.get("q"), backend.get("q")) == (1, 2, MISS)
    assert b.invalidate("t") == 1
    assert a.get("q") == 1
    assert a.stats()["entries"] == 1
    with pytest.raises(PermissionError):
        a.clear(all_tenants=True)
    assert backend.clear(all_tenants=True) == 1


def test_memory_backend_rejects_bad_input_and_stores_nothing():
    backend = InMemoryBackend(max_value_bytes=100)
    with pytest.raises(TypeError, match="object"):
        backend.set("k", object())
    with pytest.raises(ValueTooLarge):
        backend.set_many({"ok": 1, "big": bytes(range(256)) * 4})
    with pytest.raises(ValueError, match="ttl"):
        backend.set("k", 1, ttl=-5)
    assert backend.stats()["entries"] == 0


def test_returned_values_are_copies():
    backend = InMemoryBackend()
    backend.set("list", [1, 2])
    got = backend.get("list")
    got.append(3)
    assert backend.get("list") == [1, 2]


def test_backends_satisfy_the_protocol():
    assert isinstance(InMemoryBackend(), CacheBackend)
    with pytest.raises(TypeError, match="backend must be"):
        CacheManager(backend={})  # type: ignore[arg-type]


@pytest.mark.ray
def test_cluster_satisfies_the_protocol(cluster):
    assert isinstance(cluster, CacheBackend)
