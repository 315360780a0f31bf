"""Near-cache (L0) consistency across processes, and automatic batching."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from omnicache_cluster import MISS
from omnicache_cluster._near import near_of
from omnicache_cluster.core.nearcache import ChangeLog, NearCache, NearCacheOptions

pytestmark = pytest.mark.ray

BOUND = 1.0


def _near(cluster, **kw):
    return cluster.with_options(near_cache=NearCacheOptions(staleness_s=BOUND, **kw))


@pytest.fixture
def other_process(ray_session):
    """A Ray actor: a second process with its own near-cache of the same cluster."""
    ray = ray_session

    @ray.remote(num_cpus=0.1)
    class Reader:
        def __init__(self, client):
            self.client = client

        def get(self, key):
            return self.client.get(key)

        def near_stats(self):
            near = near_of(self.client)
            if near is None:  # not created before the first near get
                return {"hits": 0, "entries": 0}
            return {"hits": near.hits, "entries": len(near)}

        def until(self, key, expected, timeout):
            started = time.monotonic()
            while time.monotonic() - started < timeout:
                if self.client.get(key) == expected:
                    return time.monotonic() - started
                time.sleep(0.01)
            return None

    return Reader


def _warm(ray, reader, key, value):
    """Read until the other process serves ``key`` from its near-cache."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        hits = ray.get(reader.near_stats.remote())["hits"]
        assert ray.get(reader.get.remote(key)) == value
        if ray.get(reader.near_stats.remote())["hits"] > hits:
            return
        time.sleep(0.05)
    raise AssertionError("the other process never served from its near-cache")


def test_change_reaches_another_process_within_the_bound(cluster, ray_session, other_process):
    ray = ray_session
    near = _near(cluster)
    reader = other_process.remote(near)
    near.set("k", "v1", tags=["t"])
    _warm(ray, reader, "k", "v1")

    near.set("k", "v2")  # set
    assert ray.get(reader.until.remote("k", "v2", 5)) <= BOUND + 0.2
    _warm(ray, reader, "k", "v2")
    near.delete("k")  # delete
    assert ray.get(reader.until.remote("k", MISS, 5)) <= BOUND + 0.2

    near.set("k", "v3", tags=["t"])
    _warm(ray, reader, "k", "v3")
    assert near.invalidate("t") == 1  # tag invalidation
    assert ray.get(reader.until.remote("k", MISS, 5)) <= BOUND + 0.2

    near.set("k", "v4")
    _warm(ray, reader, "k", "v4")
    near.clear()  # flush
    assert ray.get(reader.until.remote("k", MISS, 5)) <= BOUND + 0.2


def test_change_log_reports_each_slots_last_change():
    log = ChangeLog(capacity=10, incarnation="x")
    for slot in (5, 3, 5, 9):
        log.record(slot)
    assert log.since(0) == ("x", 4, [(3, 2), (5, 3), (9, 4)])
    assert log.since(2) == ("x", 4, [(5, 3), (9, 4)])
    assert log.since(4) == ("x", 4, [])
    assert log.since(5)[2] is None  # ahead of the log: a different shard process


def test_a_later_shard_process_numbers_above_an_earlier_one():
    old = ChangeLog(incarnation="a", start=1_000)
    for slot in (1, 2, 3):
        old.record(slot)
    assert old.seq == 1_003
    assert old.since(1_001) == ("a", 1_003, [(2, 1_002), (3, 1_003)])
    new = ChangeLog(incarnation="b", start=2_000)
    for slot in range(5):
        new.record(slot)
    # Asking the new process for the changes after the old number: a gap, never a
    # list that would be read against numbers of another process.
    assert new.since(old.seq)[2] is None


def test_a_first_poll_keeps_own_writes_whose_slots_did_not_change():
    clock = [100.0]
    near = NearCache(NearCacheOptions(staleness_s=5.0), clock=lambda: clock[0])
    near.put("mine", b"v1", "s0", slot=1, seq=50)  # written here, acknowledged as 50
    near.put("later", b"v2", "s0", slot=2, seq=60)  # written here; slot 2 changes at 61
    near.put("read", b"v3", "s0", slot=3, generation=near.generation("s0"))  # number unknown
    near.put("other", b"v4", "s1", slot=1, seq=10)
    assert near.first_since("s0") == 50
    assert near.first_since("nobody") == 0
    near.apply_poll("s0", issued_at=100.0, incarnation="x", seq=61, changes=[(2, 61)])
    assert near.get("mine") == b"v1"
    assert near.get("later") is None  # changed after the write
    assert near.get("read") is None  # read before any poll: dropped
    near.apply_poll("s0", 100.0, "x", 61, None)  # a gap: everything of the shard goes
    assert near.get("mine") is None


def test_own_writes_survive_the_next_poll(cluster):
    near = _near(cluster)
    state = cluster._state
    near.set("own", "v")
    cache = near_of(near)
    shard = state.ring.owner(near.key("own"))
    written = cache._data[near.key("own")].seq  # the shard's number of the write
    deadline = time.monotonic() + 5
    # Wait for a poll that reports the write (it may have come in already).
    while (cache.last_seq(shard) or ("", -1))[1] < written:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hits = cache.hits
    assert near.get("own") == "v"
    assert cache.hits == hits + 1


def test_clients_with_other_options_keep_their_own_bounds(cluster):
    slow = cluster.with_options(near_cache=NearCacheOptions(staleness_s=60.0))
    fast = _near(cluster)
    slow.set("k", "old")
    assert slow.get("k") == "old"
    fast.set("k", "new")  # drops the key from the other near-cache of this process
    assert slow.get("k") == "new"
    assert near_of(slow) is not near_of(fast)
    assert near_of(slow).options.staleness_s == 60.0
    assert near_of(fast).options.staleness_s == BOUND
    plain = cluster.with_options(near_cache=None)
    plain.set("k", "plain")  # a client without a near-cache: read-your-writes too
    assert slow.get("k") == "plain"
    assert fast.get("k") == "plain"
    plain.delete("k")
    assert slow.get("k") is MISS


def test_writer_reads_its_own_writes_at_once(cluster):
    near = _near(cluster)
    for i in range(20):
        near.set("mine", i, tags=["own"])
        assert near.get("mine") == i
    near.delete("mine")
    assert near.get("mine") is MISS
    near.set("mine", "again", tags=["own"])
    assert near.get("mine") == "again"
    near.invalidate("own")
    assert near.get("mine") is MISS


async def test_async_writer_reads_its_own_writes(cluster):
    near = _near(cluster)
    await near.aset("a", 1, tags=["x"])
    assert await near.aget("a") == 1
    await near.ainvalidate("x")
    assert await near.aget("a") is MISS


def test_near_hits_do_not_leave_the_process(cluster):
    near = _near(cluster)
    near.set("hot", "value")
    state = cluster._state
    deadline = time.monotonic() + 5
    while near_of(near).last_seq(state.ring.owner(near.key("hot"))) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    before = sum(s["requests"] for s in cluster.stats()["shards"])
    for _ in range(200):
        assert near.get("hot") == "value"
    after = sum(s["requests"] for s in cluster.stats()["shards"])
    # Only the stats calls themselves (and a few polls) reach the shards.
    assert after - before < 20


def test_gap_drops_the_shards_entries():
    log = ChangeLog(capacity=4, incarnation="i1")
    near = NearCache(NearCacheOptions(staleness_s=60))
    near.apply_poll("s", time.monotonic(), *log.since(0))
    near.put("a", b"1", "s", 1, seq=0)
    near.put("b", b"2", "s", 2, seq=0)
    near.put("c", b"3", "other", 1, seq=0)
    log.record(1)
    near.apply_poll("s", time.monotonic(), *log.since(0))
    assert (near.get("a"), near.get("b")) == (None, b"2")  # only slot 1 dropped
    near.put("a", b"1 again", "s", 1, seq=log.seq)  # written after the change: kept
    near.apply_poll("s", time.monotonic(), *log.since(0))
    assert near.get("a") == b"1 again"
    seen = log.seq
    for slot in range(10):  # more changes than the log holds: a gap
        log.record(100 + slot)
    assert log.since(seen)[2] is None
    near.apply_poll("s", time.monotonic(), *log.since(seen))
    assert near.get("b") is None
    assert len(near) == 1  # the other shard's entry stays
    near.apply_poll("s", time.monotonic(), "i2", 0, [])  # a restarted shard
    assert near.generation("s")[0] >= 2


def test_value_read_during_a_poll_is_not_kept():
    near = NearCache(NearCacheOptions(staleness_s=60))
    near.apply_poll("s", time.monotonic(), "i", 0, [])
    generation = near.generation("s")
    near.apply_poll("s", time.monotonic(), "i", 1, [(7, 1)])  # a poll lands meanwhile
    assert not near.put("k", b"maybe stale", "s", 7, generation=generation)
    assert near.get("k") is None


def test_staleness_bound_without_polls():
    now = [0.0]
    near = NearCache(NearCacheOptions(staleness_s=1.0), clock=lambda: now[0])
    near.apply_poll("s", now[0], "i", 0, [])
    near.put("k", b"v", "s", 1)
    now[0] = 0.9
    assert near.get("k") == b"v"
    now[0] = 1.01  # no successful poll for a whole bound: not served
    assert near.get("k") is None


def test_memory_bound_holds():
    near = NearCache(NearCacheOptions(max_entries=50, max_bytes=4000, staleness_s=60))
    near.apply_poll("s", time.monotonic(), "i", 0, [])
    for i in range(500):
        near.put(f"key-{i}", bytes(100 + i % 50), "s", i % 16)
        assert len(near) <= 50
        assert near.bytes <= 4000
    assert near.get("key-499") is not None
    assert near.get("key-0") is None


def _count_requests(cluster):
    return sum(s["requests"] for s in cluster.stats()["shards"])


def test_1000_concurrent_agets_are_batched(cluster):
    keys = [f"b{i}" for i in range(1000)]
    cluster.set_many({k: {"i": i} for i, k in enumerate(keys)})
    sequential = [cluster.get(k) for k in keys]

    async def run():
        return await asyncio.gather(*(cluster.aget(k) for k in keys))

    before = _count_requests(cluster)
    got = asyncio.run(run())
    calls = _count_requests(cluster) - before - 2  # minus the stats calls
    assert got == sequential
    assert calls <= 10, calls  # one get_many per shard, not 1,000 gets


def test_concurrent_asets_are_batched(cluster):
    async def run():
        await asyncio.gather(*(cluster.aset(f"w{i}", i) for i in range(500)))

    before = _count_requests(cluster)
    asyncio.run(run())
    assert _count_requests(cluster) - before - 2 <= 10
    assert cluster.get_many([f"w{i}" for i in range(500)]) == list(range(500))


def test_threads_are_batched_by_group_commit(cluster):
    keys = [f"th{i}" for i in range(400)]
    cluster.set_many({k: k for k in keys})
    before = _count_requests(cluster)
    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(cluster.get, keys))
    calls = _count_requests(cluster) - before - 2
    assert got == keys
    assert calls < len(keys) / 2, calls


def test_batching_off_still_correct(cluster):
    plain = cluster.with_options(batching=False)

    async def run():
        await asyncio.gather(*(plain.aset(f"o{i}", i) for i in range(50)))
        return await asyncio.gather(*(plain.aget(f"o{i}") for i in range(50)))

    assert asyncio.run(run()) == list(range(50))
