"""Recovery with a durable L2, through real Ray actors and a real redis-server / disk:
killed shards, a whole-cluster restart, a coordinator restart, Redis stopped in the
middle of a workload, and corrupt bytes in Redis."""

from __future__ import annotations

import json
import os
import pickle
import threading
import time

import pytest
import redis

from omnicache_cluster import MISS, CacheCluster, L2Config, OmnicacheSettings, TenantQuota
from omnicache_cluster.backends.base import Record, encode_record
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.testing import RedisServer
from tests.conftest import unique

pytestmark = pytest.mark.ray

WRITES = 2000
DISTINCT_KEYS = 500


def _wait_restarted(ray, handle, killed_at: float, timeout_s: float = 60) -> None:
    """Wait until the killed actor answers again, as a new incarnation."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stats = ray.get(handle.stats.remote(), timeout=5)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            time.sleep(0.1)
            continue
        if stats["uptime_s"] <= time.time() - killed_at + 1:
            return
        time.sleep(0.1)
    raise AssertionError("the killed shard did not come back")


def _kill_test(ray, cluster: CacheCluster) -> dict[str, int]:
    @ray.remote(num_cpus=0.1, max_concurrency=2)
    class Writer:
        """Sets keys one at a time from a thread; `progress` answers meanwhile."""

        def __init__(self, client):
            self.client = client
            self.done = 0

        def run(self, writes, distinct):
            acked = {}
            for i in range(writes):
                key = f"key-{i % distinct}"
                self.client.set(key, {"write": i})  # returns once acknowledged
                acked[key] = i
                self.done = i + 1
            return acked

        def progress(self):
            return self.done

    writer = Writer.remote(cluster)
    result = writer.run.remote(WRITES, DISTINCT_KEYS)
    members = cluster._state.ring.members
    kills = 0
    for n, name in enumerate(members):
        # Kill each shard in turn, while the writer is mid-way through its sets.
        while ray.get(writer.progress.remote()) < (n + 1) * WRITES // (len(members) + 1):
            time.sleep(0.01)
        handle = cluster._state.handle_of(name)
        killed_at = time.time()
        ray.kill(handle, no_restart=False)
        kills += 1
        _wait_restarted(ray, handle, killed_at)
    acked = ray.get(result, timeout=300)
    assert ray.get(writer.progress.remote()) == WRITES  # every kill came before the end
    keys = sorted(acked)
    got = cluster.get_many(keys)
    lost = sum(g != {"write": acked[k]} for k, g in zip(keys, got, strict=True))
    stats = cluster.stats()
    figures = {
        "writes_acknowledged": WRITES,
        "distinct_keys": len(keys),
        "kills": kills,
        "lost": lost,
        "l2_hits_after_restart": sum(s.get("l2_hits", 0) for s in stats["shards"]),
        "l2_errors": stats.get("l2_errors", 0),
    }
    print("kill test:", json.dumps(figures))
    ray.kill(writer)
    return figures


def test_killed_shards_lose_no_acknowledged_write_with_redis_l2(
    ray_session, redis_server, fresh_cluster
):
    l2 = L2Config(kind="redis", url=redis_server, key_prefix=unique("kill") + ":")
    cluster = fresh_cluster(num_shards=4, l2=l2)
    figures = _kill_test(ray_session, cluster)
    assert figures["kills"] == 4
    assert figures["lost"] == 0
    assert figures["l2_hits_after_restart"] > 0  # restarted shards read through


def test_killed_shards_lose_no_acknowledged_write_with_disk_l2(
    ray_session, tmp_path, fresh_cluster
):
    cluster = fresh_cluster(num_shards=4, l2=L2Config(kind="disk", path=str(tmp_path)))
    figures = _kill_test(ray_session, cluster)
    assert figures["kills"] == 4
    assert figures["lost"] == 0
    assert figures["l2_hits_after_restart"] > 0


@pytest.mark.parametrize("kind", ["redis", "disk"])
def test_a_restarted_cluster_finds_its_entries_tags_and_ttls(
    ray_session, redis_server, tmp_path, kind
):
    namespace = unique("restart")
    prefix = unique("restart") + ":"
    settings = OmnicacheSettings(
        backend=kind,
        redis_url=redis_server,
        redis_key_prefix=prefix,
        disk_path=str(tmp_path),
        namespace=namespace,
        ray_namespace=namespace,
        num_shards=2,
    )
    first = CacheCluster.start(settings=settings)
    first.set_many({f"k{i}": i for i in range(40)}, tags=["batch"])
    first.set_many({f"t{i}": i for i in range(10)}, ttl=600)
    first.set("short", "gone soon", ttl=0.3)
    first.for_tenant("acme").set_many({f"a{i}": i for i in range(5)}, tags=["batch"])
    written_at = time.time()
    first.shutdown(stop_ray=False)
    time.sleep(0.4)

    # Started again on the same L2, with another shard count (so another ring).
    second = CacheCluster.start(settings=OmnicacheSettings(**{**vars(settings), "num_shards": 3}))
    try:
        assert second.get_many([f"k{i}" for i in range(40)]) == list(range(40))
        assert second.get_many([f"t{i}" for i in range(10)]) == list(range(10))
        assert second.get("short") is MISS  # expired while the cluster was down
        # The TTL came back with the entry: not renewed by the restart.
        skey = second.key("t3")
        owner = second._state.handle_of(second._state.ring.owner(skey))
        entry = ray_session.get(owner.describe.remote(skey))
        assert written_at + 599 < entry["expires_at"] <= written_at + 601
        acme = second.for_tenant("acme")
        assert acme.get_many([f"a{i}" for i in range(5)]) == list(range(5))
        assert second.invalidate("batch") == 40  # tags are in L2; acme's are acme's
        assert second.get("k0") is MISS
        assert acme.clear() == 5  # a tenant flush reaches L2
        assert acme.get("a0") is MISS
        assert second.get("t0") == 0
    finally:
        second.shutdown(stop_ray=False)
    third = CacheCluster.start(settings=settings)  # what was removed stays removed
    try:
        assert third.get_many(["k1", "t1"]) == [MISS, 1]
        assert third.for_tenant("acme").get("a1") is MISS
    finally:
        third.shutdown(stop_ray=False)


def test_the_coordinator_recovers_the_ring_after_its_restart(ray_session, fresh_cluster):
    ray = ray_session
    cluster = fresh_cluster(num_shards=2)
    cluster.add_shard()
    quota = TenantQuota(max_bytes=50_000, computes_per_minute=30, policy="raise")
    cluster.set_tenant_quota("acme", quota)  # a runtime change, not in the constructor
    coordinator = cluster._state.coordinator_handle()
    killed_at = time.monotonic()
    ray.kill(coordinator, no_restart=False)
    deadline = killed_at + 60
    while True:  # ask until the new incarnation (younger than the kill) answers
        try:
            info = ray.get(coordinator.info.remote(), timeout=5)
            if info["uptime_s"] < time.monotonic() - killed_at + 0.5:
                epoch, members = info["epoch"], info["members"]
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.monotonic() < deadline, "the coordinator did not come back"
        time.sleep(0.1)
    assert epoch == 2  # not the epoch 1 its constructor was given
    assert len(members) == 3
    assert cluster.tenant_quota("acme") == quota  # recovered from the shards' copies
    cluster.set("after", 1)
    assert cluster.get("after") == 1


def test_redis_stopped_mid_workload_fails_open_and_writes_resume(ray_session, fresh_cluster):
    server = RedisServer().start()
    prefix = "down:"
    try:
        l2 = L2Config(
            kind="redis",
            url=server.url,
            key_prefix=prefix,
            retry_interval_s=0.3,
            socket_timeout_s=0.3,
            connect_timeout_s=0.3,
            log_interval_s=60,
        )
        cluster = fresh_cluster(num_shards=2, l2=l2)
        failures: list[BaseException] = []
        ops = {"n": 0}
        stop = threading.Event()

        def workload():
            try:
                i = 0
                while not stop.is_set() or i < 300:
                    cluster.set(f"w{i}", i)
                    assert cluster.get(f"w{i}") == i
                    computed = cluster.get_or_compute(f"c{i}", lambda i=i: {"computed": i})
                    assert computed == {"computed": i}
                    i += 1
                    ops["n"] = i
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=workload)
        thread.start()
        while ops["n"] < 50:
            time.sleep(0.01)
        server.stop()  # Redis is gone in the middle of the workload
        down_at = ops["n"]
        time.sleep(1.5)
        assert ops["n"] > down_at + 10  # the workload kept going while Redis was down
        server.start()
        time.sleep(1.0)
        stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert failures == []
        stats = cluster.stats()
        assert stats["l2_errors"] > 0
        cluster.set("fresh-after-restart", "in redis")
        raw = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 10
        while not raw.exists(f"{prefix}k:{cluster.key('fresh-after-restart')}"):
            assert time.monotonic() < deadline, "writes did not reach Redis after it came back"
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while cluster.stats()["l2_dirty"]:  # and what was written while it was down, too
            assert time.monotonic() < deadline, "dirty entries were not flushed"
            time.sleep(0.1)
        assert raw.exists(f"{prefix}k:{cluster.key(f'w{down_at + 5}')}")
        raw.close()
    finally:
        server.stop()


class _Boom:
    """Unpickling this creates a directory: proof that nobody unpickled it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_corrupt_bytes_in_redis_read_back_as_a_miss(
    ray_session, redis_server, fresh_cluster, tmp_path
):
    from omnicache_cluster._flight import FAULTS

    prefix = unique("corrupt") + ":"
    cluster = fresh_cluster(num_shards=2, l2=L2Config(url=redis_server, key_prefix=prefix))
    marker = str(tmp_path / "unpickled")
    envelope = Serializer().dumps("a real value")
    written = {
        "garbage": os.urandom(64),
        "truncated envelope": encode_record(Record(envelope[:3])),
        "truncated record": encode_record(Record(envelope))[:-5],
        "unsigned pickle": pickle.dumps(_Boom(marker)),
        "unsigned pickle envelope": encode_record(
            Record(b"OC\x01\x03\x00" + pickle.dumps(_Boom(marker)))
        ),
    }
    raw = redis.Redis.from_url(redis_server)
    for name, data in written.items():
        raw.set(f"{prefix}k:{cluster.key(name)}", data)
    decode_faults = FAULTS["decode"]
    assert cluster.get_many(list(written)) == [MISS] * len(written)
    assert [cluster.get(name) for name in written] == [MISS] * len(written)
    assert not os.path.exists(marker)
    assert cluster.stats()["l2_corrupt"] == 8  # four records, read twice, refused by shards
    assert FAULTS["decode"] == decode_faults + 2  # the pickle envelope, refused by the client
    # A caller of get_or_compute gets its computed value, and the entry is repaired.
    assert cluster.get_or_compute("garbage", lambda: "computed") == "computed"
    assert cluster.get("garbage") == "computed"
    raw.close()
