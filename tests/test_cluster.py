"""The cluster through real Ray actors: sharing between processes, batches, routing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from omnicache_cluster import MISS, CacheCluster, CacheKeyBuilder, ConfigError, ValueTooLarge

pytestmark = pytest.mark.ray


def test_set_in_driver_read_in_task_actor_and_second_driver(cluster, ray_session, python_env):
    ray = ray_session
    cluster.set("greeting", {"text": "hello", "n": 1})
    cluster.set("vec", np.arange(4, dtype=np.float32))

    @ray.remote(num_cpus=0.1)
    def read_in_task(client):
        return client.get("greeting"), client.get("vec").tolist()

    @ray.remote(num_cpus=0.1)
    class Reader:
        def __init__(self, client):
            self.client = client

        def read(self):
            return self.client.get("greeting")

        def write(self, key, value):
            self.client.set(key, value)

    assert ray.get(read_in_task.remote(cluster)) == ({"text": "hello", "n": 1}, [0, 1, 2, 3])
    reader = Reader.remote(cluster)
    assert ray.get(reader.read.remote()) == {"text": "hello", "n": 1}
    ray.get(reader.write.remote("from-actor", [1, 2, 3]))
    assert cluster.get("from-actor") == [1, 2, 3]

    script = f"""
import json, os
from omnicache_cluster import CacheCluster
import ray
ray.init(address={ray.get_runtime_context().gcs_address!r})
c = CacheCluster.connect(namespace={cluster.namespace!r})
c = c.with_key_namespace({cluster.key_namespace!r})
print(json.dumps(c.get("greeting")))
c.set("from-driver-2", "written by the second driver")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], env=python_env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"text": "hello", "n": 1}
    assert cluster.get("from-driver-2") == "written by the second driver"


def test_batch_calls_return_what_single_calls_return(cluster):
    values = {f"k{i}": v for i, v in enumerate([None, 0, "", [], {"a": (1, 2)}, b"x", 3.5] * 20)}
    cluster.set_many(values)
    keys = [*values, "absent-1", "absent-2"]
    singles = [cluster.get(k) for k in keys]
    assert cluster.get_many(keys) == singles
    assert singles[:-2] == list(values.values())
    assert singles[-2:] == [MISS, MISS]
    assert [cluster.exists(k) for k in keys] == [True] * len(values) + [False, False]
    assert cluster.delete_many(keys[:50]) == 50
    assert cluster.get_many(keys[:50]) == [MISS] * 50
    assert not cluster.delete(keys[0])
    assert cluster.delete(keys[60])


async def test_async_twins_match_sync(cluster):
    items = {f"a{i}": {"i": i} for i in range(50)}
    await cluster.aset_many(items, tags=["batch"])
    await cluster.aset("single", None)
    got = await cluster.aget_many([*items, "nope"])
    assert got == [*items.values(), MISS]
    assert await cluster.aget("single") is None
    assert await cluster.aget("nope") is MISS
    assert await cluster.aexists("single")
    assert await cluster.ainvalidate("batch") == 50
    assert await cluster.aget("a1") is MISS
    assert await cluster.adelete("single")
    assert await cluster.aclear() == 0


def test_many_concurrent_async_calls_share_one_loop(cluster):
    async def run():
        await asyncio.gather(*(cluster.aset(f"c{i}", i) for i in range(200)))
        return await asyncio.gather(*(cluster.aget(f"c{i}") for i in range(200)))

    assert asyncio.run(run()) == list(range(200))


def test_multi_key_calls_make_one_call_per_shard(cluster):
    keys = [f"m{i}" for i in range(300)]
    cluster.set_many({k: k for k in keys})
    before = {s["shard"]: s["hits"] + s["misses"] for s in cluster.stats()["shards"]}
    assert cluster.get_many(keys) == keys
    after = {s["shard"]: s["hits"] + s["misses"] for s in cluster.stats()["shards"]}
    ring_owned = dict.fromkeys(before, 0)
    for k in keys:
        ring_owned[cluster._state.ring.owner(cluster.key(k))] += 1
    assert {n: after[n] - before[n] for n in after} == ring_owned
    assert all(n > 0 for n in ring_owned.values())


def test_ttl_expires_entries(cluster):
    cluster.set("short", "v", ttl=0.3)
    cluster.set("long", "v", ttl=60)
    assert cluster.get("short") == "v"
    time.sleep(0.5)
    assert cluster.get("short") is MISS
    assert cluster.get("long") == "v"


def test_tags_invalidate_across_shards(cluster):
    cluster.set_many({f"t{i}": i for i in range(40)}, tags=["model:gpt-4o", "env:prod"])
    cluster.set_many({f"u{i}": i for i in range(10)}, tags=["model:other"])
    assert cluster.invalidate("model:gpt-4o") == 40
    assert cluster.get_many([f"t{i}" for i in range(40)]) == [MISS] * 40
    assert cluster.get("u3") == 3
    assert cluster.invalidate("env:prod") == 0


def test_tenants_are_isolated(cluster):
    a, b = cluster.for_tenant("acme"), cluster.for_tenant("globex")
    a.set("q", "acme answer", tags=["t"])
    b.set("q", "globex answer", tags=["t"])
    assert (a.get("q"), b.get("q"), cluster.get("q")) == ("acme answer", "globex answer", MISS)
    assert b.invalidate("t") == 1
    assert a.get("q") == "acme answer"
    b.set("q2", 1)
    assert b.clear() == 1
    assert a.get("q") == "acme answer"
    assert a.stats()["entries"] == 1
    assert a.stats()["tenant"] == "acme"
    key_of_a = CacheKeyBuilder(cluster.key_namespace, "acme").build("default", "x")
    with pytest.raises(ValueError, match="tenant"):
        b.get(key_of_a)
    with pytest.raises(PermissionError):
        b.clear(all_tenants=True)


def test_stale_ring_client_gets_moved_refreshes_and_succeeds(fresh_cluster, ray_session):
    ray = ray_session
    cluster = fresh_cluster(num_shards=2)

    @ray.remote(num_cpus=0.1)
    class Worker:
        def __init__(self, client):
            self.client = client

        def epoch(self):
            return self.client.ring_epoch

        def write_read(self, keys):
            self.client.set_many({k: k.upper() for k in keys})
            return self.client.get_many(keys), [self.client.get(k) for k in keys]

    worker = Worker.remote(cluster)
    keys = [f"key-{i}" for i in range(200)]
    ray.get(worker.write_read.remote(keys[:5]))
    assert ray.get(worker.epoch.remote()) == 1

    new = cluster.add_shard()
    assert cluster.ring_epoch == 2
    moved = [k for k in keys if cluster._state.ring.owner(cluster.key(k)) == new]
    assert moved, "the new shard owns none of the keys"
    # The worker still routes with epoch 1: moved keys go to their old owner, which
    # answers *moved*; the worker refreshes the ring and retries at the new owner.
    many, single = ray.get(worker.write_read.remote(keys))
    assert many == single == [k.upper() for k in keys]
    assert ray.get(worker.epoch.remote()) == 2
    shard_stats = {s["shard"]: s for s in cluster.stats()["shards"]}
    assert shard_stats[new]["entries"] == len(moved)

    cluster.remove_shard(new)
    assert cluster.ring_epoch == 3
    assert ray.get(worker.write_read.remote(keys))[0] == [k.upper() for k in keys]


def test_killed_shard_comes_back_and_client_retries(fresh_cluster, ray_session):
    ray = ray_session
    cluster = fresh_cluster(num_shards=2)
    keys = [f"k{i}" for i in range(100)]
    cluster.set_many({k: k for k in keys})
    ring = cluster._state.ring
    victim = ring.members[0]
    handle = cluster._state.handle_of(victim)
    ray.kill(handle, no_restart=False)
    # Calls made while the shard dies and restarts are retried, not raised.
    for i in range(20):
        cluster.set_many({f"during-{i}-{j}": j for j in range(10)})
        assert cluster.get_many([f"during-{i}-{j}" for j in range(10)]) != []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if ray.get(handle.stats.remote(), timeout=5)["uptime_s"] < 60:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        time.sleep(0.2)
    # Without L2 the victim's entries are gone; the other shard's are intact.
    got = cluster.get_many(keys)
    lost = [k for k, v in zip(keys, got, strict=True) if v is MISS]
    assert lost, "the killed shard still had its entries"
    assert all(ring.owner(cluster.key(k)) == victim for k in lost)
    kept = [k for k, v in zip(keys, got, strict=True) if v is not MISS]
    assert all(cluster.get(k) == k and ring.owner(cluster.key(k)) != victim for k in kept)
    cluster.set("after-restart", 1)
    assert cluster.get("after-restart") == 1


def test_unencodable_value_raises_type_error_and_stores_nothing(cluster):
    class Opaque:
        pass

    with pytest.raises(TypeError, match="Opaque"):
        cluster.set("bad", Opaque())
    with pytest.raises(TypeError, match="Opaque"):
        cluster.set_many({"good": 1, "bad": [Opaque()]})
    assert cluster.get_many(["bad", "good"]) == [MISS, MISS]


def test_oversize_value_raises_before_anything_is_sent(cluster):
    small = cluster.with_options(max_value_bytes=1000)
    sets_before = cluster.stats()["sets"]
    with pytest.raises(ValueTooLarge) as info:
        small.set("big", np.random.default_rng(1).bytes(5000))  # incompressible
    assert info.value.limit == 1000
    with pytest.raises(ValueTooLarge):
        small.set_many({"ok": "y", "big": np.random.default_rng(2).bytes(5000)})
    assert cluster.stats()["sets"] == sets_before
    assert cluster.get_many(["big", "ok"]) == [MISS, MISS]


def test_value_over_shard_budget_is_refused_by_the_shard(fresh_cluster):
    cluster = fresh_cluster(num_shards=1, max_bytes_per_shard=10_000)
    with pytest.raises(ValueTooLarge):
        cluster.set("big", np.random.default_rng(0).bytes(20_000))
    assert cluster.get("big") is MISS
    cluster.set("small", "fits")
    assert cluster.get("small") == "fits"


@pytest.mark.parametrize("bad", ["", "x" * 129, "has:colon", "spa ce"])
def test_bad_namespace_or_tenant_raises_value_error(cluster, bad):
    with pytest.raises(ValueError, match="tenant"):
        cluster.for_tenant(bad)
    with pytest.raises(ValueError, match="namespace"):
        cluster.with_key_namespace(bad)
    with pytest.raises(ValueError, match="namespace"):
        CacheCluster.start(num_shards=1, namespace=bad)
    with pytest.raises(ValueError, match="layer"):
        cluster.set("k", 1, layer=bad)
    assert cluster.stats()["entries"] >= 0
    assert cluster.get("k") is MISS


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"ttl": 0}, ValueError),
        ({"ttl": -1}, ValueError),
        ({"ttl": float("nan")}, ValueError),
        ({"ttl": "10"}, TypeError),
        ({"ttl": True}, TypeError),
        ({"tags": "single-str"}, TypeError),
        ({"tags": [""]}, ValueError),
        ({"tags": [1]}, TypeError),
    ],
)
def test_bad_ttl_and_tags_are_refused(cluster, kwargs, exc):
    with pytest.raises(exc):
        cluster.set("k", 1, **kwargs)
    assert cluster.get("k") is MISS


def test_unencodable_key_raises_type_error(cluster):
    with pytest.raises(TypeError, match="object"):
        cluster.get(object())


async def test_sync_call_inside_event_loop_names_async_method(cluster):
    with pytest.raises(RuntimeError, match=r"await cluster\.aget"):
        cluster.get("k")
    with pytest.raises(RuntimeError, match=r"aset_many"):
        cluster.set_many({"k": 1})


def test_connect_and_start_errors(shared_cluster):
    with pytest.raises(ConfigError, match="no cache cluster"):
        CacheCluster.connect(namespace="nothing-runs-here")
    with pytest.raises(ConfigError, match="already runs"):
        CacheCluster.start(num_shards=1, namespace=shared_cluster.namespace)
    with pytest.raises(ValueError, match="num_shards"):
        CacheCluster.start(num_shards=0, namespace="zero-shards")


def test_stats_are_live(cluster):
    before = cluster.stats()
    cluster.set_many({f"s{i}": i for i in range(10)})
    cluster.get_many([f"s{i}" for i in range(12)])
    after = cluster.stats()
    assert after["sets"] - before["sets"] == 10
    assert after["hits"] - before["hits"] == 10
    assert after["misses"] - before["misses"] == 2
    assert after["epoch"] >= 1
    assert len(after["shards"]) == 2


def test_a_replaced_cluster_in_the_same_namespace_is_not_confused(ray_session):
    """Ray reuses worker processes: their cached ring and handles must not outlive the
    cluster they belonged to (epochs of the new cluster start at 1 again)."""
    ray = ray_session
    from tests.conftest import unique

    namespace = unique("replaced")

    @ray.remote(num_cpus=0.1)
    class Worker:
        def use(self, client, key, value):
            client.set(key, value)
            return client.get(key), client.ring_epoch

    worker = Worker.remote()
    first = CacheCluster.start(num_shards=2, namespace=namespace)
    assert ray.get(worker.use.remote(first, "k", 1)) == (1, 1)
    first.shutdown(stop_ray=False)
    second = CacheCluster.start(num_shards=1, namespace=namespace)
    try:
        assert ray.get(worker.use.remote(second, "k", 2)) == (2, 1)
        assert second.get("k") == 2
    finally:
        second.shutdown(stop_ray=False)
