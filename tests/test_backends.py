"""The backend contract, run against every local backend: memory, async memory, disk,
a real redis-server, and tiered (memory over Redis); each through its blocking
methods and through its async twins."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from omnicache_cluster import (
    MISS,
    AsyncInMemoryBackend,
    CacheKeyBuilder,
    DiskBackend,
    InMemoryBackend,
    RedisBackend,
    TieredBackend,
    ValueTooLarge,
)
from omnicache_cluster.protocols import CacheBackend
from tests.conftest import unique


class Driver:
    """Calls a backend's blocking methods (``sync``) or its async ones, always awaited,
    so one test body covers both."""

    def __init__(self, backend, mode):
        self.backend = backend
        self.mode = mode

    def view(self, *, tenant=None, key_namespace=None):
        b = self.backend
        if tenant is not None:
            b = b.for_tenant(tenant)
        if key_namespace is not None:
            b = b.with_key_namespace(key_namespace)
        return Driver(b, self.mode)

    def __getattr__(self, name):
        if self.mode == "sync":
            fn = getattr(self.backend, name)

            async def call(*args, **kwargs):
                return fn(*args, **kwargs)

            return call
        if isinstance(self.backend, AsyncInMemoryBackend):
            return getattr(self.backend, name)
        return getattr(self.backend, "a" + name)


MAX_VALUE = 64 * 1024  # every contract backend refuses larger encoded values


def _memory():
    return InMemoryBackend(max_value_bytes=MAX_VALUE)


def _async_memory():
    return AsyncInMemoryBackend(max_value_bytes=MAX_VALUE)


def _disk(tmp_path):
    return DiskBackend(tmp_path / "disk", max_value_bytes=MAX_VALUE)


def _redis(url, **kwargs):
    return RedisBackend(url, key_prefix=unique("contract") + ":", **kwargs)


def _tiered(url):
    return TieredBackend(InMemoryBackend(), _redis(url), l1_ttl=60, max_value_bytes=MAX_VALUE)


VARIANTS = [
    ("memory", "sync"),
    ("memory", "async"),
    ("async_memory", "async"),
    ("disk", "sync"),
    ("disk", "async"),
    ("redis", "sync"),
    ("redis", "async"),
    ("tiered", "sync"),
    ("tiered", "async"),
]


@pytest.fixture(params=VARIANTS, ids=[f"{k}-{m}" for k, m in VARIANTS])
async def api(request, tmp_path):
    kind, mode = request.param
    if kind in ("redis", "tiered"):
        url = request.getfixturevalue("redis_server")
        backend = _redis(url, max_value_bytes=MAX_VALUE) if kind == "redis" else _tiered(url)
    elif kind == "disk":
        backend = _disk(tmp_path)
    else:
        backend = _memory() if kind == "memory" else _async_memory()
    driver = Driver(backend, mode)
    yield driver
    await driver.clear(all_tenants=True)
    await driver.close()


class TestBackendContract:
    async def test_values_round_trip_and_a_miss_is_miss(self, api):
        values = {
            "none": None,
            "zero": 0,
            "empty": "",
            "list": [1, "two", 3.5],
            "nested": {"a": (1, 2), "b": {"c": b"bytes"}},
            "set": {1, 2, 3},
        }
        for key, value in values.items():
            await api.set(key, value)
        for key, value in values.items():
            assert await api.get(key) == value
        assert await api.get("absent") is MISS
        assert await api.get("absent", "fallback") == "fallback"
        arr = np.arange(6, dtype=np.float32).reshape(2, 3)
        await api.set("array", arr)
        got = await api.get("array")
        assert got.dtype == arr.dtype
        assert np.array_equal(got, arr)

    async def test_batches_keep_order_and_misses(self, api):
        items = {f"k{i}": i for i in range(50)}
        await api.set_many(items)
        got = await api.get_many([*items, "nope", "k3"])
        assert got == [*items.values(), MISS, 3]
        assert await api.get_many([]) == []

    async def test_delete_and_exists(self, api):
        await api.set_many({"a": 1, "b": 2, "c": 3})
        assert await api.exists("a")
        assert not await api.exists("zzz")
        assert await api.delete("a")
        assert not await api.delete("a")
        assert await api.get("a") is MISS
        assert await api.delete_many(["b", "c", "d"]) == 2
        assert not await api.exists("b")

    async def test_overwrite_replaces_value_and_tags(self, api):
        await api.set("k", "v1", tags=["old"])
        await api.set("k", "v2", tags=["new"])
        assert await api.get("k") == "v2"
        assert await api.invalidate("old") == 0
        assert await api.get("k") == "v2"
        assert await api.invalidate("new") == 1
        assert await api.get("k") is MISS

    async def test_ttl_expires_entries(self, api):
        await api.set("short", "s", ttl=0.3)
        await api.set("long", "l", ttl=60)
        await api.set("forever", "f")
        assert await api.get("short") == "s"
        await asyncio.sleep(0.45)
        assert await api.get_many(["short", "long", "forever"]) == [MISS, "l", "f"]
        assert not await api.exists("short")

    async def test_tags_invalidate_only_tagged_entries(self, api):
        await api.set_many({f"t{i}": i for i in range(20)}, tags=["model:a", "env:prod"])
        await api.set_many({f"u{i}": i for i in range(5)}, tags=["model:b"])
        await api.set("plain", 1)
        assert await api.invalidate("model:a") == 20
        assert await api.get_many([f"t{i}" for i in range(20)]) == [MISS] * 20
        assert await api.invalidate("env:prod") == 0
        assert await api.get_many(["u0", "plain"]) == [0, 1]
        assert await api.invalidate("never-used") == 0

    async def test_tenants_and_namespaces_are_isolated(self, api):
        a, b = api.view(tenant="acme"), api.view(tenant="globex")
        other_ns = api.view(key_namespace="elsewhere")
        await a.set("q", "acme", tags=["t"])
        await b.set("q", "globex", tags=["t"])
        await other_ns.set("q", "other namespace")
        assert (await a.get("q"), await b.get("q"), await api.get("q")) == ("acme", "globex", MISS)
        assert await other_ns.get("q") == "other namespace"
        assert await b.invalidate("t") == 1
        assert await a.get("q") == "acme"
        await b.set("q2", 2)
        assert await b.clear() == 1
        assert await a.get("q") == "acme"
        key_of_a = CacheKeyBuilder(a.backend.key_namespace, "acme").build("default", "x")
        with pytest.raises(ValueError, match="tenant"):
            await b.get(key_of_a)
        with pytest.raises(PermissionError):
            await a.clear(all_tenants=True)
        assert await api.clear(all_tenants=True) >= 2
        assert await a.get("q") is MISS

    async def test_bad_input_raises_and_stores_nothing(self, api):
        class Opaque:
            pass

        with pytest.raises(TypeError, match="Opaque"):
            await api.set_many({"good": 1, "bad": Opaque()})
        with pytest.raises(ValueError, match="ttl"):
            await api.set("k", 1, ttl=-1)
        with pytest.raises(TypeError, match="tags"):
            await api.set("k", 1, tags="one-str")
        with pytest.raises(ValueTooLarge):
            await api.set_many({"ok": 1, "big": np.random.default_rng(0).bytes(MAX_VALUE + 1)})
        assert await api.get_many(["good", "bad", "k", "ok", "big"]) == [MISS] * 5

    async def test_stats_count_hits_misses_and_sets(self, api):
        t = api.view(tenant="stats")
        await t.set_many({"a": 1, "b": 2})
        await t.get_many(["a", "b", "c"])
        stats = await t.stats()
        assert (stats["hits"], stats["misses"], stats["sets"]) == (2, 1, 2)
        assert stats["tenant"] == "stats"
        assert stats["hit_rate"] == pytest.approx(2 / 3)

    async def test_returned_values_are_copies(self, api):
        await api.set("list", [1, 2])
        got = await api.get("list")
        got.append(3)
        assert await api.get("list") == [1, 2]


def _blocking(kind: str, tmp_path, request):
    """One of the blocking backends, on a real redis-server where it needs one."""
    if kind in ("redis", "tiered"):
        url = request.getfixturevalue("redis_server")
        return _redis(url) if kind == "redis" else _tiered(url)
    return _memory() if kind == "memory" else _disk(tmp_path)


@pytest.mark.parametrize("kind", ["memory", "disk", "redis", "tiered"])
def test_blocking_backends_satisfy_the_protocol(kind, tmp_path, request):
    backend = _blocking(kind, tmp_path, request)
    assert isinstance(backend, CacheBackend)
    backend.close()


@pytest.mark.parametrize("kind", ["memory", "disk", "redis", "tiered"])
def test_blocking_backends_compute_once_per_key(kind, tmp_path, request):
    """The layers call get_or_compute on any backend: one compute per missing key."""
    import threading
    import time

    backend = _blocking(kind, tmp_path, request)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.3)
        return {"answer": 42}

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(backend.get_or_compute("q", slow)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [{"answer": 42}] * 8
    assert len(calls) == 1
    assert backend.get("q") == {"answer": 42}
    backend.close()


@pytest.mark.parametrize("kind", ["memory", "disk", "redis", "tiered"])
def test_blocking_backends_compute_overlapping_batches_once_per_key(kind, tmp_path, request):
    """get_or_compute_many (the embedding layer's batch path) on every local backend."""
    import threading
    import time

    backend = _blocking(kind, tmp_path, request)
    computed = []

    def embed(keys):
        computed.extend(keys)
        time.sleep(0.3)
        return [f"v:{k}" for k in keys]

    batches = [["a", "b", "c"], ["c", "d", "a"]]
    results = {}
    barrier = threading.Barrier(2)

    def run(n):
        barrier.wait()
        results[n] = backend.get_or_compute_many(batches[n], embed)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {n: [f"v:{k}" for k in b] for n, b in enumerate(batches)}
    assert sorted(computed) == ["a", "b", "c", "d"]
    assert backend.get_many(["d", "b"]) == ["v:d", "v:b"]
    backend.close()


def test_async_memory_backend_shares_its_store_with_its_sync_view():
    async def run():
        b = AsyncInMemoryBackend(max_size=100)
        await b.set("k", "v", ttl=60)
        acme = b.for_tenant("acme")
        await acme.set("k", "acme")
        return await b.get("k"), await acme.get("k"), b.sync.get("k"), acme.tenant

    assert asyncio.run(run()) == ("v", "acme", "v", "acme")


def test_tiered_l1_copy_lives_at_most_l1_ttl(redis_server):
    prefix = unique("tier") + ":"
    l2_writer = RedisBackend(redis_server, key_prefix=prefix)
    tiered = TieredBackend(InMemoryBackend(), RedisBackend(redis_server, key_prefix=prefix), 0.3)
    l2_writer.set("k", "v1")
    assert tiered.get("k") == "v1"  # read through, now in L1
    l2_writer.set("k", "v2")  # another process changes L2
    assert tiered.get("k") == "v1"  # L1 still serves its copy ...
    time.sleep(0.4)
    assert tiered.get("k") == "v2"  # ... for at most l1_ttl
    tiered.close()
    l2_writer.close()


def test_tiered_fails_open_when_l2_is_unreachable():
    from omnicache_cluster.testing import free_port

    dead = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2)
    tiered = TieredBackend(InMemoryBackend(), dead, l1_ttl=60)
    tiered.set("k", "v", tags=["t"])
    assert tiered.get("k") == "v"
    assert tiered.get("absent") is MISS
    assert tiered.invalidate("t") == 1
    stats = tiered.stats()
    assert stats["l2_errors"] >= 3
    tiered.close()
