"""Cluster-wide single-flight, tenants and quotas, through real Ray tasks and actors."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from omnicache_cluster import (
    MISS,
    CacheKeyBuilder,
    QuotaExceeded,
    TenantQuota,
    Timeout,
)
from omnicache_cluster._flight import FAULTS
from omnicache_cluster.testing import wait_shard_gone

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def helpers(ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self):
            self.calls = {}

        def hit(self, key="k"):
            self.calls[key] = self.calls.get(key, 0) + 1
            return self.calls[key]

        def get(self):
            return dict(self.calls)

    @ray.remote(num_cpus=0)
    class Gate:
        """Holds tasks until all are ready, so the callers really are concurrent."""

        def __init__(self):
            self.ready = 0
            self.event = asyncio.Event()

        async def arrive_and_wait(self):
            self.ready += 1
            await self.event.wait()

        def count(self):
            return self.ready

        def open(self):
            self.event.set()

    return Counter, Gate


def _run_callers(ray, cluster, counter, gate, keys_for_thread, threads=25, tasks=8):
    @ray.remote(num_cpus=0.1)
    def caller(client, counter, gate, task_index):
        def compute_for(key):
            def fn():
                counter.hit.remote(key)
                time.sleep(1.0)
                return f"value of {key}"

            return fn

        ray.get(gate.arrive_and_wait.remote())
        with ThreadPoolExecutor(threads) as pool:
            futures = [
                pool.submit(client.get_or_compute, k, compute_for(k), lease_ttl=5)
                for k in (keys_for_thread(task_index, t) for t in range(threads))
            ]
            return [f.result() for f in futures]

    refs = [caller.remote(cluster, counter, gate, i) for i in range(tasks)]
    deadline = time.monotonic() + 120
    while ray.get(gate.count.remote()) < tasks:
        assert time.monotonic() < deadline, "tasks did not start"
        time.sleep(0.05)
    gate.open.remote()
    return ray.get(refs, timeout=120)


def test_200_concurrent_callers_in_8_tasks_compute_once(cluster, ray_session, helpers):
    ray = ray_session
    Counter, Gate = helpers
    counter, gate = Counter.remote(), Gate.remote()
    results = _run_callers(ray, cluster, counter, gate, lambda i, t: "the-prompt")
    flat = [v for per_task in results for v in per_task]
    assert len(flat) == 200
    assert set(flat) == {"value of the-prompt"}
    assert ray.get(counter.get.remote()) == {"the-prompt": 1}


def test_20_distinct_keys_compute_20_times(cluster, ray_session, helpers):
    ray = ray_session
    Counter, Gate = helpers
    counter, gate = Counter.remote(), Gate.remote()
    results = _run_callers(ray, cluster, counter, gate, lambda i, t: f"prompt-{(i * 25 + t) % 20}")
    for i, per_task in enumerate(results):
        assert per_task == [f"value of prompt-{(i * 25 + t) % 20}" for t in range(25)]
    calls = ray.get(counter.get.remote())
    assert calls == {f"prompt-{k}": 1 for k in range(20)}


def test_leader_exception_reaches_every_waiter_and_is_not_cached(cluster):
    calls = []

    def failing():
        calls.append(1)
        time.sleep(0.5)
        raise KeyError("upstream said no")

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(cluster.get_or_compute, "bad", failing) for _ in range(10)]
        errors = [f.exception(timeout=30) for f in futures]
    assert len(calls) == 1
    assert all(isinstance(e, KeyError) and "upstream said no" in str(e) for e in errors)
    assert cluster.get("bad") is MISS
    assert cluster.get_or_compute("bad", lambda: "recovered") == "recovered"
    assert cluster.get("bad") == "recovered"


def test_killed_leader_passes_the_lease_on(cluster, ray_session, helpers):
    ray = ray_session
    Counter, _ = helpers
    counter = Counter.remote()

    @ray.remote(num_cpus=0.1, max_restarts=0)
    class Leader:
        def lead(self, client, counter):
            def slow():
                counter.hit.remote("k")
                time.sleep(120)
                return "never"

            return client.get_or_compute("killed", slow, lease_ttl=2.0)

    leader = Leader.remote()
    leader.lead.remote(cluster, counter)
    deadline = time.monotonic() + 60
    while ray.get(counter.get.remote()).get("k", 0) < 1:
        assert time.monotonic() < deadline, "the leader never started"
        time.sleep(0.05)

    result = {}

    def waiter():
        def fast():
            ray.get(counter.hit.remote("k"))
            return "computed by the waiter"

        result["value"] = cluster.get_or_compute("killed", fast, lease_ttl=2.0, wait_timeout=30)
        result["at"] = time.monotonic()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)
    assert "value" not in result  # it waits for the leader
    killed_at = time.monotonic()
    ray.kill(leader, no_restart=True)
    thread.join(30)
    assert not thread.is_alive(), "the waiter hung"
    assert result["value"] == "computed by the waiter"
    assert result["at"] - killed_at <= 2.0 + 1.0 + 0.5  # lease TTL + 1 s (+ scheduling)
    assert ray.get(counter.get.remote()) == {"k": 2}


def test_compute_longer_than_three_leases_runs_once(cluster):
    calls = []

    def slow():
        calls.append(1)
        time.sleep(3.5)
        return "slow value"

    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(cluster.get_or_compute, "slow", slow, lease_ttl=1.0) for _ in range(6)
        ]
        values = [f.result(timeout=60) for f in futures]
    assert values == ["slow value"] * 6
    assert len(calls) == 1


def test_waiter_timeout_raises_timeout(cluster):
    started = threading.Event()

    def slow():
        started.set()
        time.sleep(3)
        return 1

    with ThreadPoolExecutor(1) as pool:
        leader = pool.submit(cluster.get_or_compute, "t", slow)
        started.wait(10)
        with pytest.raises(Timeout, match="waited"):
            cluster.get_or_compute("t", lambda: 2, wait_timeout=0.3)
        assert leader.result(timeout=30) == 1


async def test_async_get_or_compute_dedupes_and_hits(cluster):
    calls = []

    async def acompute():
        calls.append(1)
        await asyncio.sleep(0.5)
        return {"answer": 42}

    results = await asyncio.gather(*(cluster.aget_or_compute("ak", acompute) for _ in range(30)))
    assert results == [{"answer": 42}] * 30
    assert len(calls) == 1
    assert await cluster.aget_or_compute("ak", acompute) == {"answer": 42}
    assert len(calls) == 1
    # A sync function works too, and a cached None is a hit.
    assert await cluster.aget_or_compute("none", lambda: None) is None
    assert await cluster.aget_or_compute("none", lambda: "recomputed") is None


def test_get_or_compute_fails_open_when_the_cache_is_down(fresh_cluster, ray_session):
    ray = ray_session
    quota = TenantQuota(max_concurrent_computes=4)
    cluster = fresh_cluster(num_shards=1, tenant_quotas={"metered": quota})
    cluster = cluster.with_options(retry_deadline_s=3.0)
    metered = cluster.for_tenant("metered")
    cluster.set("warm", "cached")
    assert metered.get_or_compute("m1", lambda: "via the coordinator") == "via the coordinator"

    # A quota'd tenant takes its lease from the coordinator: kill it, and computes go on.
    ray.kill(cluster._state.coordinator_handle(), no_restart=True)
    before = FAULTS["lease"]
    assert metered.get_or_compute("m1", lambda: "recomputed") == "via the coordinator"  # a hit
    assert metered.get_or_compute("m2", lambda: "computed anyway") == "computed anyway"
    assert FAULTS["lease"] >= before + 1
    after_coordinator = FAULTS["lease"]
    assert metered.get("m2") == "computed anyway"  # stored all the same

    # The key's shard is gone for good: the user function still runs, nothing raises.
    (shard,) = cluster._state.ring.members
    ray.kill(cluster._state.handle_of(shard), no_restart=True)
    wait_shard_gone(cluster, shard)
    gets_before = FAULTS["get"]
    assert cluster.get_or_compute("warm", lambda: "shard down") == "shard down"
    # The lookup before the lease (over the direct port) is what finds the shard gone;
    # via Ray calls only, the lease call would.
    assert FAULTS["get"] > gets_before or FAULTS["lease"] > after_coordinator
    assert FAULTS["set"] > 0
    ray_only = cluster.with_options(fast_path=False)
    assert ray_only.get_or_compute("warm", lambda: "shard down") == "shard down"
    assert FAULTS["lease"] > after_coordinator


def test_tenant_isolation_through_every_public_method(cluster):
    a, b = cluster.for_tenant("tenant-a"), cluster.for_tenant("tenant-b")
    a.set("secret", "a's value", tags=["shared-tag"])
    a.set_many({"s1": 1, "s2": 2}, tags=["shared-tag"])
    assert b.get("secret") is MISS
    assert b.get_many(["secret", "s1", "s2"]) == [MISS] * 3
    assert not b.exists("secret")
    assert not b.delete("secret")
    assert b.delete_many(["s1", "s2"]) == 0
    assert b.invalidate("shared-tag") == 0
    assert b.clear() == 0
    assert b.get_or_compute("secret", lambda: "b's own") == "b's own"
    assert b.stats()["entries"] == 1
    assert a.stats()["entries"] == 3
    assert a.get_many(["secret", "s1", "s2"]) == ["a's value", 1, 2]
    foreign = CacheKeyBuilder(cluster.key_namespace, "tenant-a").build("default", "secret")
    for call in (b.get, b.exists, b.delete):
        with pytest.raises(ValueError, match="tenant"):
            call(foreign)
    with pytest.raises(PermissionError):
        b.clear(all_tenants=True)
    with pytest.raises(PermissionError):
        b.set_tenant_quota("tenant-a", None)
    with pytest.raises(PermissionError):
        b.tenant_quota("tenant-a")


def test_tenant_max_bytes_evicts_only_its_own_entries(fresh_cluster):
    budget = 20_000
    cluster = fresh_cluster(num_shards=2, tenant_quotas={"hog": TenantQuota(max_bytes=budget)})
    quiet, hog = cluster.for_tenant("quiet"), cluster.for_tenant("hog")
    quiet.set_many({f"q{i}": "x" * 100 for i in range(50)})
    entry = None
    for i in range(0, 600, 50):
        hog.set_many({f"h{j}": f"{j:0100d}" for j in range(i, i + 50)})
        entry = entry or hog.stats()["bytes"] // hog.stats()["entries"]
        assert hog.stats()["bytes"] <= budget + entry
    written = 600 * entry
    assert written >= 3 * budget
    stats = hog.stats()
    assert stats["evictions"] > 0
    assert hog.get(f"h{599}") == f"{599:0100d}"  # the newest survive
    assert quiet.get_many([f"q{i}" for i in range(50)]) == ["x" * 100] * 50
    assert quiet.stats()["evictions"] == 0


def test_quota_changes_at_runtime(fresh_cluster):
    cluster = fresh_cluster(num_shards=2)
    t = cluster.for_tenant("grow")
    t.set_many({f"k{i}": "v" * 200 for i in range(100)})
    full = t.stats()["bytes"]
    cluster.set_tenant_quota("grow", TenantQuota(max_bytes=full // 4))
    assert cluster.tenant_quota("grow") == TenantQuota(max_bytes=full // 4)
    assert t.stats()["bytes"] <= full // 4
    cluster.set_tenant_quota("grow", None)
    t.set_many({f"k{i}": "v" * 200 for i in range(100)})
    assert t.stats()["bytes"] == full
    assert cluster.tenant_quota("grow") is None


async def _burst(client, n, wait_timeout):
    computed = []

    def make(i):
        def fn():
            computed.append(i)
            return i

        return fn

    wait = wait_timeout
    calls = [client.aget_or_compute(f"miss-{i}", make(i), wait_timeout=wait) for i in range(n)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    return computed, results


async def test_computes_per_minute_raise_policy(fresh_cluster):
    quota = TenantQuota(computes_per_minute=10, policy="raise")
    cluster = fresh_cluster(num_shards=1, tenant_quotas={"metered": quota})
    computed, results = await _burst(cluster.for_tenant("metered"), 30, wait_timeout=10)
    assert len(computed) == 10
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 20
    assert all(isinstance(e, QuotaExceeded) for e in errors)
    assert errors[0].tenant == "metered"
    assert errors[0].limit == "computes_per_minute"
    stats = await cluster.for_tenant("metered").astats()
    assert (stats["computes"], stats["throttled"]) == (10, 20)


async def test_computes_per_minute_wait_policy(fresh_cluster):
    quota = TenantQuota(computes_per_minute=10, policy="wait")
    cluster = fresh_cluster(num_shards=1, tenant_quotas={"metered": quota})
    started = time.monotonic()
    computed, results = await _burst(cluster.for_tenant("metered"), 30, wait_timeout=2.0)
    assert len(computed) == 10  # the bucket refills one token every 6 s
    timeouts = [r for r in results if isinstance(r, Timeout)]
    assert len(timeouts) == 20
    assert time.monotonic() - started >= 2.0  # they waited, then gave up
    # Another tenant is not throttled meanwhile.
    free, _ = await _burst(cluster.for_tenant("free"), 30, wait_timeout=10)
    assert len(free) == 30
