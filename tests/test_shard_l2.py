"""A shard's L2 without Ray: the plain `ShardActor` class over a real redis-server (or a
real SQLite file): write-through, write-behind, read-through, restarts, faults."""

from __future__ import annotations

import asyncio

import pytest

from omnicache_cluster.actors.shard import ShardActor, ShardConfig
from omnicache_cluster.backends.base import Record, encode_record
from omnicache_cluster.backends.redis import AsyncRedisStore, RedisStore
from omnicache_cluster.config import L2Config
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.scope import KeyScope
from omnicache_cluster.testing import RedisServer
from tests.conftest import unique

SER = Serializer()
NAME = "omnicache-shard-0"


def make_shard(l2: L2Config, *, max_bytes: int = 1 << 20) -> ShardActor:
    config = ShardConfig(name=NAME, namespace="ns", coordinator="none", max_bytes=max_bytes, l2=l2)
    return ShardActor(config, 1, (NAME,))  # one shard: it owns every slot


def item(key, value, ttl=None, tags=()):
    return (key, SER.dumps(value), ttl, tuple(tags))


@pytest.fixture
def scope():
    return KeyScope("ns", "acme")


@pytest.fixture
def redis_l2(redis_server):
    return L2Config(kind="redis", url=redis_server, key_prefix=unique("shard") + ":")


def l2_values(config: L2Config, keys):
    store = RedisStore(config.url, key_prefix=config.key_prefix)
    try:
        return [None if r is None else SER.loads(r.value) for r in store.get_many(keys)]
    finally:
        store.close()


async def test_write_through_is_in_l2_when_acknowledged_and_survives_a_restart(redis_l2, scope):
    shard = make_shard(redis_l2)
    keys = [scope.key(f"q{i}") for i in range(5)]
    tags = scope.tags(["model:a"])
    await shard.set_many([item(k, i, ttl=60, tags=tags) for i, k in enumerate(keys)])
    assert l2_values(redis_l2, keys) == list(range(5))
    stats = await shard.stats()
    assert (stats["l2_mode"], stats["l2_dirty"], stats["l2_errors"]) == ("write_through", 0, 0)
    await shard.flush_l2()

    restarted = make_shard(redis_l2)  # Ray re-runs the constructor with the same config
    _, values, _ = await restarted.get_many(keys)
    assert [SER.loads(v) for v in values] == list(range(5))
    stats = await restarted.stats()
    assert (stats["entries"], stats["l2_hits"]) == (5, 5)  # L1 filled from L2
    assert await restarted.invalidate_tags(tags) == 5  # tags were kept in L2
    assert l2_values(redis_l2, keys) == [None] * 5
    assert await restarted.get(keys[0]) is None


async def test_ttl_is_kept_in_l2_and_expired_entries_are_not_read_back(redis_l2, scope):
    shard = make_shard(redis_l2)
    await shard.set_many([item(scope.key("short"), 1, ttl=0.2), item(scope.key("long"), 2, 60)])
    await asyncio.sleep(0.3)
    restarted = make_shard(redis_l2)
    assert await restarted.get(scope.key("short")) is None
    assert SER.loads(await restarted.get(scope.key("long"))) == 2
    [(_, entry)] = [(k, restarted._store.get_entry(k)) for k in [scope.key("long")]]
    assert entry.expires_at is not None  # the L1 copy carries the original expiry


async def test_write_behind_acknowledges_at_once_and_flushes_in_batches(redis_l2, scope):
    config = L2Config(
        kind="redis",
        url=redis_l2.url,
        key_prefix=redis_l2.key_prefix,
        write_mode="write_behind",
        flush_interval_s=0.2,
    )
    shard = make_shard(config)
    keys = [scope.key(f"wb{i}") for i in range(10)]
    await shard.set_many([item(k, i) for i, k in enumerate(keys)])
    assert (await shard.stats())["l2_dirty"] == 10
    assert l2_values(config, keys) == [None] * 10
    assert SER.loads(await shard.get(keys[3])) == 3  # served while dirty
    await asyncio.sleep(0.4)
    stats = await shard.stats()
    assert (stats["l2_dirty"], stats["l2_flushed"]) == (0, 10)
    assert l2_values(config, keys) == list(range(10))


async def test_write_behind_queue_is_bounded_and_flushed_on_shutdown(redis_l2, scope):
    config = L2Config(
        kind="redis",
        url=redis_l2.url,
        key_prefix=redis_l2.key_prefix,
        write_mode="write_behind",
        flush_interval_s=60,  # never on its own in this test
        queue_max=8,
    )
    shard = make_shard(config)
    for i in range(20):  # the writer waits for a flush whenever 8 are dirty
        await shard.set_many([item(scope.key(f"b{i}"), i)])
        assert (await shard.stats())["l2_dirty"] <= 8
    assert (await shard.stats())["l2_flushed"] >= 16
    assert await shard.flush_l2() == 0  # what a graceful shutdown does
    assert l2_values(config, [scope.key(f"b{i}") for i in range(20)]) == list(range(20))


async def test_a_delete_is_not_undone_by_an_older_pending_write(redis_l2, scope):
    config = L2Config(
        kind="redis",
        url=redis_l2.url,
        key_prefix=redis_l2.key_prefix,
        write_mode="write_behind",
        flush_interval_s=60,
    )
    shard = make_shard(config)
    key = scope.key("k")
    await shard.set_many([item(key, "old")])
    _, existed, _ = await shard.delete_many([key])
    assert existed == [True]
    assert await shard.flush_l2() == 0
    assert l2_values(config, [key]) == [None]
    assert await make_shard(config).get(key) is None


async def test_tenant_clear_and_delete_reach_l2(redis_l2, scope):
    shard = make_shard(redis_l2)
    other = KeyScope("ns", "globex")
    await shard.set_many([item(scope.key(f"a{i}"), i) for i in range(4)])
    await shard.set_many([item(other.key("g"), "g")])
    restarted = make_shard(redis_l2)  # empty L1: everything is in L2 only
    assert await restarted.clear(scope.prefix) == 4
    _, present, _ = await restarted.exists_many([scope.key("a0"), other.key("g")])
    assert present == [False, True]
    _, existed, _ = await make_shard(redis_l2).delete_many([other.key("g"), other.key("x")])
    assert existed == [True, False]


class GatedStore(AsyncRedisStore):
    """The real async Redis store, whose reads wait for a gate (to order a race)."""

    gate: asyncio.Event

    async def get_many(self, keys):
        records = await super().get_many(keys)
        await self.gate.wait()
        return records


async def test_a_read_racing_a_write_does_not_put_the_older_value_in_l1(redis_l2, scope):
    from omnicache_cluster.actors._l2 import ShardL2

    key = scope.key("raced")
    await make_shard(redis_l2).set_many([item(key, "old")])
    shard = make_shard(redis_l2)
    store = GatedStore(redis_l2.url, key_prefix=redis_l2.key_prefix)
    store.gate = asyncio.Event()
    shard._l2 = ShardL2(redis_l2, NAME, store=store)
    reader = asyncio.ensure_future(shard.get(key))  # misses L1, reads "old" from L2 ...
    await asyncio.sleep(0.05)
    await shard.set_many([item(key, "new")])  # ... while "new" is written
    store.gate.set()
    assert SER.loads(await reader) == "old"  # the read began before the write
    assert SER.loads(await shard.get(key)) == "new"  # and did not overwrite L1


async def test_redis_down_fails_open_and_writes_resume_when_it_is_back(scope):
    server = RedisServer().start()
    try:
        config = L2Config(
            kind="redis",
            url=server.url,
            key_prefix="down:",
            retry_interval_s=0.2,
            socket_timeout_s=0.3,
            connect_timeout_s=0.3,
        )
        shard = make_shard(config)
        await shard.set_many([item(scope.key("before"), 0)])
        server.stop()
        for i in range(5):  # acknowledged from L1; not one call raises
            await shard.set_many([item(scope.key(f"during{i}"), i)])
            assert SER.loads(await shard.get(scope.key(f"during{i}"))) == i
        assert await shard.get(scope.key("never-written")) is None
        stats = await shard.stats()
        assert stats["l2_errors"] >= 1
        assert stats["l2_degraded"] >= 1
        assert stats["l2_dirty"] >= 4
        server.start()
        await asyncio.sleep(0.3)  # past retry_interval_s
        await shard.set_many([item(scope.key("after"), "back")])
        for _ in range(50):
            if (await shard.stats())["l2_dirty"] == 0:
                break
            await asyncio.sleep(0.05)
        keys = [scope.key(k) for k in ("after", "during0", "during4")]
        assert l2_values(config, keys) == ["back", 0, 4]  # the degraded ones too
        assert (await shard.stats())["l2_up"]
    finally:
        server.stop()


async def test_corrupt_l2_records_are_a_miss_and_counted(redis_l2, scope):
    raw = RedisStore(redis_l2.url, key_prefix=redis_l2.key_prefix)
    shard = make_shard(redis_l2)
    bad = {
        scope.key("garbage"): b"garbage",
        scope.key("bad envelope"): encode_record(Record(b"XX\x01\x01\x00")),
    }
    client = raw._redis()
    for key, data in bad.items():
        client.set(f"{redis_l2.key_prefix}k:{key}", data)
    _, values, _ = await shard.get_many(list(bad))
    assert values == [None, None]
    stats = await shard.stats()
    assert (stats["l2_corrupt"], stats["entries"], stats["misses"]) == (2, 0, 2)
    raw.close()


async def test_disk_l2_write_through_survives_a_restart(tmp_path, scope):
    config = L2Config(kind="disk", path=str(tmp_path))
    shard = make_shard(config)
    await shard.set_many([item(scope.key(f"d{i}"), i, tags=scope.tags(["t"])) for i in range(5)])
    restarted = make_shard(config)
    _, values, _ = await restarted.get_many([scope.key(f"d{i}") for i in range(5)])
    assert [SER.loads(v) for v in values] == list(range(5))
    assert await make_shard(config).invalidate_tags(scope.tags(["t"])) == 5
