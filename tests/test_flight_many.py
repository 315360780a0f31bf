"""get_or_compute_many: overlapping batches compute each key once, cluster-wide.

Real cluster (shared Ray session, real shard actors); the batch function is the only
thing the test provides.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from omnicache_cluster import MISS
from omnicache_cluster._flight import FAULTS

pytestmark = pytest.mark.ray


class Recorder:
    """A slow batch function that records every key it computed."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, keys: list[str]) -> list[str]:
        with self.lock:
            self.calls.append(list(keys))
        time.sleep(self.delay)
        if self.fail:
            raise KeyError("provider down")
        return [f"v:{k}" for k in keys]

    def computed(self) -> Counter[str]:
        return Counter(k for call in self.calls for k in call)


def test_misses_are_computed_in_one_call_and_then_served(cluster):
    fn = Recorder()
    cluster.set("b", "cached b")
    assert cluster.get_or_compute_many(["a", "b", "c", "a"], fn) == [
        "v:a",
        "cached b",
        "v:c",
        "v:a",
    ]
    assert fn.calls == [["a", "c"]]  # one call, the misses only, each once
    assert cluster.get_or_compute_many(["c", "a"], fn) == ["v:c", "v:a"]
    assert len(fn.calls) == 1
    assert cluster.get_or_compute_many([], fn) == []


def test_overlapping_batches_in_threads_compute_each_key_once(cluster):
    fn = Recorder(delay=0.3)
    batches = [[f"k{i}" for i in range(s, s + 6)] for s in (0, 3, 5)]
    barrier = threading.Barrier(len(batches))
    results: dict[int, list[str]] = {}

    def run(n: int) -> None:
        barrier.wait()
        results[n] = cluster.get_or_compute_many(batches[n], fn)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for n, batch in enumerate(batches):
        assert results[n] == [f"v:{k}" for k in batch]
    computed = fn.computed()
    assert set(computed) == {f"k{i}" for i in range(11)}
    assert max(computed.values()) == 1, computed  # nobody computed a key twice


def _embed_task(cluster, batch, delay):
    import time as _time

    done = []

    def fn(keys):
        done.extend(keys)
        _time.sleep(delay)
        return [f"v:{k}" for k in keys]

    return cluster.get_or_compute_many(batch, fn), done


def test_overlapping_batches_across_processes_compute_each_key_once(cluster, ray_session):
    task = ray_session.remote(_embed_task)
    batches = [[f"p{i}" for i in range(s, s + 8)] for s in (0, 4)]
    replies = ray_session.get([task.remote(cluster, b, 0.5) for b in batches], timeout=60)
    for (values, _), batch in zip(replies, batches, strict=True):
        assert values == [f"v:{k}" for k in batch]
    computed = Counter(k for _, done in replies for k in done)
    assert sorted(computed) == sorted({k for b in batches for k in b})
    assert max(computed.values()) == 1, computed


def test_a_leaders_error_reaches_its_waiters_and_frees_the_keys(cluster):
    failing, fine = Recorder(delay=0.4, fail=True), Recorder()
    errors: list[BaseException] = []

    def lead() -> None:
        try:
            cluster.get_or_compute_many(["e1", "e2"], failing)
        except KeyError as exc:
            errors.append(exc)

    leader = threading.Thread(target=lead)
    leader.start()
    time.sleep(0.15)  # the leader holds e1 and e2 now
    with pytest.raises(KeyError, match="provider down"):
        cluster.get_or_compute_many(["e2", "e3"], fine)
    leader.join(10)
    assert len(errors) == 1
    assert fine.calls == [["e3"]]  # its own key, computed before it waited
    # Nothing is left leased: the next caller computes at once.
    t0 = time.monotonic()
    assert cluster.get_or_compute_many(["e1", "e2"], fine) == ["v:e1", "v:e2"]
    assert time.monotonic() - t0 < 2.0


def test_a_wrong_number_of_values_is_an_error_and_frees_the_keys(cluster):
    with pytest.raises(ValueError, match="returned 1 values for 2 keys"):
        cluster.get_or_compute_many(["w1", "w2"], lambda keys: ["only one"])
    t0 = time.monotonic()
    assert cluster.get_or_compute_many(["w1", "w2"], Recorder()) == ["v:w1", "v:w2"]
    assert time.monotonic() - t0 < 2.0


def test_a_leader_that_gives_up_is_taken_over(cluster):
    import ray

    skey = cluster.key("gone")
    owner = cluster._state.current_ring(cluster.options).owner(skey)
    handle = cluster._state.handle_of(owner)
    # A caller leased the key and died: nobody will release it.
    _epoch, outcomes, _moved = ray.get(handle.get_or_lease_many.remote([(skey, 0.6, 0.0)]))
    assert outcomes[0][0] == "lead"
    fn = Recorder()
    t0 = time.monotonic()
    assert cluster.get_or_compute_many(["gone", "here"], fn, lease_ttl=5) == ["v:gone", "v:here"]
    assert 0.4 < time.monotonic() - t0 < 5
    assert fn.calls == [["here"], ["gone"]]  # its own key first, then the abandoned one


async def test_async_overlapping_batches_compute_each_key_once(cluster):
    calls: list[list[str]] = []

    async def fn(keys):
        calls.append(list(keys))
        await asyncio.sleep(0.3)
        return [f"v:{k}" for k in keys]

    batches = [[f"a{i}" for i in range(s, s + 5)] for s in (0, 2, 4)]
    results = await asyncio.gather(*(cluster.aget_or_compute_many(b, fn) for b in batches))
    for values, batch in zip(results, batches, strict=True):
        assert values == [f"v:{k}" for k in batch]
    computed = Counter(k for c in calls for k in c)
    assert sorted(computed) == sorted({k for b in batches for k in b})
    assert max(computed.values()) == 1, computed
    assert await cluster.aget_or_compute_many(["a0", "a8"], fn) == ["v:a0", "v:a8"]
    assert len(calls) == 3


def test_cache_faults_fail_open(ray_session):
    from omnicache_cluster import CacheCluster

    nowhere = CacheCluster("no-such-cluster-here", options=None).with_options(
        retry_deadline_s=0.5, call_timeout_s=0.5
    )
    before = FAULTS["get"]
    fn = Recorder()
    assert nowhere.get_or_compute_many(["x", "y"], fn) == ["v:x", "v:y"]
    assert fn.calls == [["x", "y"]]
    assert FAULTS["get"] > before


def test_arguments_are_checked(cluster):
    with pytest.raises(ValueError, match="wait_timeout"):
        cluster.get_or_compute_many(["a"], Recorder(), wait_timeout=0)
    with pytest.raises(TypeError):
        cluster.get_or_compute_many([object()], Recorder())
    assert cluster.get_many(["a"]) == [MISS]


def test_embedding_cache_batches_overlap_without_paying_twice(cluster):
    import numpy as np

    from omnicache_cluster.layers import EmbeddingCache

    embedded: list[str] = []
    lock = threading.Lock()

    def embed(texts):
        with lock:
            embedded.extend(texts)
        time.sleep(0.3)
        return [np.full(4, len(t), dtype=np.float32) for t in texts]

    layers = [EmbeddingCache(cluster) for _ in range(2)]
    batches = [["alpha", "beta", "gamma", "beta"], ["gamma", "delta", "alpha"]]
    barrier = threading.Barrier(2)
    out: dict[int, list] = {}

    def run(n: int) -> None:
        barrier.wait()
        out[n] = layers[n].get_or_compute_many(batches[n], embed, "m1")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for n, batch in enumerate(batches):
        assert [v.tolist() for v in out[n]] == [[float(len(t))] * 4 for t in batch]
    assert sorted(embedded) == ["alpha", "beta", "delta", "gamma"]
    assert sum(layer.stats()["computes"] for layer in layers) == 4


async def test_embedding_cache_async_batches_with_an_async_embed_function(cluster):
    import numpy as np

    from omnicache_cluster.layers import EmbeddingCache

    embedded: list[str] = []

    async def embed(texts):
        embedded.extend(texts)
        await asyncio.sleep(0.2)
        return [np.full(2, len(t), dtype=np.float32) for t in texts]

    layer = EmbeddingCache(cluster)
    got = await asyncio.gather(
        layer.aget_or_compute_many(["a", "bb"], embed, "m2"),
        layer.aget_or_compute_many(["bb", "ccc"], embed, "m2"),
    )
    assert [[v.tolist() for v in g] for g in got] == [
        [[1.0, 1.0], [2.0, 2.0]],
        [[2.0, 2.0], [3.0, 3.0]],
    ]
    assert sorted(embedded) == ["a", "bb", "ccc"]
    with pytest.raises(ValueError, match="returned 1 vectors for 2 texts"):
        await layer.aget_or_compute_many(["x", "y"], lambda texts: [np.ones(2)], "m2")


def test_a_quota_tenant_computes_its_missing_keys_without_a_shared_flight(cluster):
    from omnicache_cluster import TenantQuota

    from .conftest import unique

    tenant = unique("metered")
    cluster.set_tenant_quota(tenant, TenantQuota(max_concurrent_computes=4))
    try:
        metered = cluster.for_tenant(tenant)
        import ray

        skey = metered.key("probe")
        owner = metered._state.current_ring(metered.options).owner(skey)
        reply = ray.get(
            metered._state.handle_of(owner).get_or_lease_many.remote([(skey, 5.0, 0.0)])
        )
        assert reply[1] == [("coordinate", None)]  # the coordinator admits its computes
        fn = Recorder()
        assert metered.get_or_compute_many(["q1", "q2"], fn) == ["v:q1", "v:q2"]
        assert fn.calls == [["q1", "q2"]]
        assert metered.get_or_compute_many(["q2", "q1"], fn) == ["v:q2", "v:q1"]  # stored
        assert len(fn.calls) == 1
        assert cluster.get_many(["q1"]) == [MISS]  # the tenant's own entries
    finally:
        cluster.set_tenant_quota(tenant, None)


# -- the same call on a local backend (one process) ---------------------------------------


def test_local_backend_overlapping_batches_compute_each_key_once():
    from omnicache_cluster import InMemoryBackend

    backend = InMemoryBackend()
    fn = Recorder(delay=0.3)
    batches = [["x1", "x2", "x3", "x2"], ["x3", "x4", "x1"]]
    barrier = threading.Barrier(2)
    out: dict[int, list[str]] = {}

    def run(n: int) -> None:
        barrier.wait()
        out[n] = backend.get_or_compute_many(batches[n], fn)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for n, batch in enumerate(batches):
        assert out[n] == [f"v:{k}" for k in batch]
    assert sorted(fn.computed().elements()) == ["x1", "x2", "x3", "x4"]
    assert backend.get_or_compute_many(["x4", "x1"], fn) == ["v:x4", "v:x1"]
    assert len(fn.calls) == 2


def test_local_backend_errors_reach_waiters_and_counts_are_checked():
    from omnicache_cluster import InMemoryBackend

    backend = InMemoryBackend()
    failing = Recorder(delay=0.3, fail=True)
    errors: list[BaseException] = []

    def lead() -> None:
        try:
            backend.get_or_compute_many(["f1", "f2"], failing)
        except KeyError as exc:
            errors.append(exc)

    leader = threading.Thread(target=lead)
    leader.start()
    time.sleep(0.1)
    fine = Recorder()
    with pytest.raises(KeyError, match="provider down"):
        backend.get_or_compute_many(["f2", "f3"], fine)
    leader.join(5)
    assert len(errors) == 1
    assert fine.calls == [["f3"]]
    with pytest.raises(ValueError, match="returned 1 values for 2 keys"):
        backend.get_or_compute_many(["g1", "g2"], lambda keys: ["one"])
    assert backend.get_or_compute_many(["g1", "f1"], fine) == ["v:g1", "v:f1"]


async def test_local_backend_async_batches():
    from omnicache_cluster import InMemoryBackend

    backend = InMemoryBackend()
    calls: list[list[str]] = []

    async def fn(keys):
        calls.append(list(keys))
        await asyncio.sleep(0.2)
        return [f"v:{k}" for k in keys]

    got = await asyncio.gather(
        backend.aget_or_compute_many(["a", "b"], fn), backend.aget_or_compute_many(["b", "c"], fn)
    )
    assert got == [["v:a", "v:b"], ["v:b", "v:c"]]
    assert sorted(k for c in calls for k in c) == ["a", "b", "c"]


def test_a_waited_error_lets_go_of_leases_taken_in_the_same_round(cluster):
    import ray

    # "g": a lease nobody will release (its holder died), ending in 0.6 s.
    skey = cluster.key("g")
    owner = cluster._state.current_ring(cluster.options).owner(skey)
    ray.get(cluster._state.handle_of(owner).get_or_lease_many.remote([(skey, 0.6, 0.0)]))
    failing = Recorder(delay=0.3, fail=True)

    def lead() -> None:
        with pytest.raises(KeyError):
            cluster.get_or_compute_many(["e"], failing)

    leader = threading.Thread(target=lead)
    leader.start()
    time.sleep(0.1)  # "e" is being computed, and will fail
    with pytest.raises(KeyError, match="provider down"):
        # Waiting, "e" answers the error and "g" a lease: the lease must be let go.
        cluster.get_or_compute_many(["e", "g"], Recorder(), lease_ttl=30)
    leader.join(5)
    t0 = time.monotonic()
    assert cluster.get_or_compute_many(["g"], Recorder()) == ["v:g"]
    assert time.monotonic() - t0 < 3


def test_a_waiter_outwaits_a_leader_slower_than_the_call_timeout(cluster):
    quick = cluster.with_options(call_timeout_s=0.5, retry_deadline_s=1.0)
    slow, waiting = Recorder(delay=2.0), Recorder()
    leader = threading.Thread(target=quick.get_or_compute_many, args=(["slow"], slow))
    leader.start()
    time.sleep(0.2)
    # The wait (2 s) is longer than a call may take (0.5 s) or retry (1 s): the lease
    # call that waits has room for wait_timeout, as the single-key one has.
    assert quick.get_or_compute_many(["slow"], waiting, wait_timeout=10) == ["v:slow"]
    leader.join(5)
    assert waiting.calls == []
    assert slow.calls == [["slow"]]


def test_a_batch_miss_takes_its_lease_and_ends_it_on_the_direct_port(cluster):
    def direct() -> int:
        return sum(s["direct_requests"] for s in cluster.stats()["shards"])

    before = direct()
    assert cluster.get_or_compute_many(["d1"], Recorder()) == ["v:d1"]
    # get_many, lease_many, set_and_release_many: none through a Ray call
    assert direct() - before == 3
