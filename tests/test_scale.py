"""Live resharding through real Ray actors: ``scale`` while writers and readers run,
a client holding an old ring, and what happens to keys touched mid-import.

Multi-node behaviour (shards on distinct nodes, a node lost under load) is in
``tests/test_multinode.py``.
"""

from __future__ import annotations

import threading
import time

import pytest

from omnicache_cluster import MISS, ClientOptions, L2Config
from omnicache_cluster.actors._migration import MigrationOptions
from tests.conftest import unique

pytestmark = pytest.mark.ray

KEYS_PER_WRITER = 1000


def _remote_helpers(ray):
    @ray.remote(num_cpus=0)
    class Flag:
        def __init__(self):
            self.up = False

        def set(self):
            self.up = True

        def is_set(self):
            return self.up

    @ray.remote(num_cpus=0.1)
    def writer(client, wid, flag):
        """Set this writer's keys to increasing versions until told to stop; return
        the last acknowledged version of each key."""
        acked = {}
        version = 0
        while True:
            version += 1
            for i in range(0, KEYS_PER_WRITER, 7):
                key = f"w{wid}-{(i + version) % KEYS_PER_WRITER}"
                client.set(key, version)  # returns once acknowledged
                acked[key] = version
            if ray.get(flag.is_set.remote()):
                return acked

    @ray.remote(num_cpus=0.1)
    def reader(client, seed, flag):
        """Read keys until told to stop; return the reads and every key whose value
        went backwards (or missed) after an earlier read."""
        import random

        rng = random.Random(seed)
        keys = [f"w{w}-{i}" for w in range(2) for i in range(KEYS_PER_WRITER)]
        seen: dict[str, int] = {}
        backwards = []
        reads = 0
        while not ray.get(flag.is_set.remote()):
            batch = rng.sample(keys, 20)
            values = client.get_many(batch[:10]) + [client.get(k) for k in batch[10:]]
            for key, value in zip(batch, values, strict=True):
                reads += 1
                if value is MISS or value < seen.get(key, 0):
                    backwards.append((key, seen.get(key), value if value is not MISS else None))
                else:
                    seen[key] = value
        return reads, backwards

    return Flag, writer, reader


@pytest.mark.parametrize("tier", ["memory", "redis"])
def test_scale_2_4_3_under_load_loses_no_write_and_never_goes_back(
    ray_session, fresh_cluster, redis_server, tier
):
    ray = ray_session
    l2 = None
    if tier == "redis":
        l2 = L2Config(kind="redis", url=redis_server, key_prefix=unique("scale") + ":")
    cluster = fresh_cluster(
        num_shards=2, l2=l2, options=ClientOptions(call_timeout_s=5, retry_deadline_s=60)
    )
    keys = [f"w{w}-{i}" for w in range(2) for i in range(KEYS_PER_WRITER)]
    cluster.set_many(dict.fromkeys(keys, 0))  # every key acknowledged before the readers
    Flag, writer, reader = _remote_helpers(ray)
    flag = Flag.remote()
    writers = [writer.remote(cluster, w, flag) for w in range(2)]
    readers = [reader.remote(cluster, seed, flag) for seed in range(2)]
    time.sleep(1.0)  # traffic first
    reports = [cluster.scale(4)]
    time.sleep(0.5)
    reports.append(cluster.scale(3))
    time.sleep(0.5)
    ray.get(flag.set.remote())
    acked: dict[str, int] = {}
    for part in ray.get(writers, timeout=120):
        acked.update(part)
    read_results = ray.get(readers, timeout=120)

    # Every acknowledged key reads its last acknowledged value.
    final = dict(zip(keys, cluster.get_many(keys), strict=True))
    expected = {k: acked.get(k, 0) for k in keys}
    wrong = {k: (final[k], v) for k, v in expected.items() if final[k] != v}
    assert wrong == {}, f"{len(wrong)} keys lost or stale, e.g. {list(wrong.items())[:5]}"
    assert len(acked) >= 200  # the writers did write while the steps ran
    # No reader ever saw a value go backwards (or vanish).
    assert all(reads > 100 for reads, _ in read_results)
    assert [b for _, backwards in read_results for b in backwards] == []
    # Each step moved about the ideal share of the keys: 1/2 for 2 -> 4, 1/4 for 4 -> 3.
    assert [r["ideal_share"] for r in reports] == [0.5, 0.25]
    for report in reports:
        assert report["complete"], report
        assert abs(report["moved_share"] - report["ideal_share"]) <= 0.05, report
    assert reports[0]["added"] == ["omnicache-shard-2", "omnicache-shard-3"]
    assert reports[1]["removed"] == ["omnicache-shard-3"]
    assert cluster.ring_epoch == 3
    stats = cluster.stats()
    assert len(stats["shards"]) == 3
    assert stats["entries"] == len(keys)  # the sources dropped what they handed over


def test_a_client_with_an_old_ring_keeps_working_through_two_scale_steps(
    ray_session, fresh_cluster
):
    ray = ray_session
    cluster = fresh_cluster(num_shards=2)

    @ray.remote(num_cpus=0.1)
    class Worker:
        def __init__(self, client):
            self.client = client

        def epoch(self):
            return self.client.ring_epoch

        def write(self, items):
            self.client.set_many(items)

        def read(self, keys):
            return self.client.get_many(keys), [self.client.get(k) for k in keys]

    keys = [f"old-ring-{i}" for i in range(300)]
    worker = Worker.remote(cluster)
    ray.get(worker.write.remote({k: k for k in keys}))
    assert ray.get(worker.epoch.remote()) == 1
    steps = [cluster.scale(3), cluster.scale(4)]
    assert [s["epoch"] for s in steps] == [2, 3]
    assert ray.get(worker.epoch.remote()) == 1  # it has not talked to anyone since

    # Its first calls route by epoch 1: moved keys come back *moved*, it refreshes.
    many, single = ray.get(worker.read.remote(keys))
    assert many == single == keys
    assert ray.get(worker.epoch.remote()) == 3
    ray.get(worker.write.remote({k: k.upper() for k in keys}))
    assert cluster.get_many(keys) == [k.upper() for k in keys]
    owners = {cluster._state.ring.owner(cluster.key(k)) for k in keys}
    assert owners == {f"omnicache-shard-{i}" for i in range(4)}


def test_keys_touched_mid_import_keep_their_newest_state(ray_session, fresh_cluster):
    """A slow stream (5 entries per batch, a pause between batches) leaves time to
    read, overwrite, delete and invalidate keys of slots not pulled yet."""
    cluster = fresh_cluster(num_shards=1)
    keys = [f"mid-{i}" for i in range(600)]
    # Streamed oldest first: the doomed keys early, the plain ones late.
    cluster.set_many({k: i for i, k in enumerate(keys) if not i % 3}, tags=["doomed"])
    cluster.set_many({k: i for i, k in enumerate(keys) if i % 3}, tags=["plain"])
    report: dict = {}
    slow = MigrationOptions(batch_entries=5, pause_s=0.1)
    thread = threading.Thread(target=lambda: report.update(cluster.scale(2, options=slow)))
    thread.start()
    try:
        new = "omnicache-shard-1"
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the import never started"
            try:
                shard = ray_session.get_actor(new, namespace=cluster.namespace)
                if ray_session.get(shard.stats.remote(), timeout=5)["migration_importing"]:
                    break
            except (ValueError, ray_session.exceptions.GetTimeoutError):
                pass  # not created yet, or holding requests until its flip
            time.sleep(0.02)
        cluster._state.refresh_ring(cluster.options)
        ring = cluster._state.ring
        moving = [k for k in keys if ring.owner(cluster.key(k)) == new]
        plain = [k for k in moving if keys.index(k) % 3]
        read, written, deleted = plain[-60:-40], plain[-40:-20], plain[-20:]
        # Reads of keys not pulled yet are served by asking the old owner.
        assert cluster.get_many(read) == [keys.index(k) for k in read]
        assert [cluster.exists(k) for k in deleted] == [True] * len(deleted)
        cluster.set_many(dict.fromkeys(written, "new"))
        assert cluster.delete_many(deleted) == len(deleted)
        assert cluster.invalidate("doomed") >= len(keys) // 3  # a moving key may count twice
    finally:  # the step ends before the fixture stops the cluster
        thread.join(timeout=120)
    assert report["complete"], report
    assert report["fetched_on_miss"] >= len(read)
    final = dict(zip(keys, cluster.get_many(keys), strict=True))
    assert [final[k] for k in written] == ["new"] * len(written)
    assert [final[k] for k in deleted] == [MISS] * len(deleted)
    assert [k for k in keys if not keys.index(k) % 3 and final[k] is not MISS] == []
    untouched = [k for k in keys if keys.index(k) % 3 and k not in written + deleted]
    assert [final[k] for k in untouched] == [keys.index(k) for k in untouched]
    assert cluster.stats()["entries"] == len(untouched) + len(written)


def test_the_scale_command_scales_a_running_cluster(ray_session, fresh_cluster, capsys):
    import json

    from omnicache_cluster.cli import main

    cluster = fresh_cluster(num_shards=1)
    cluster.set_many({f"cli-{i}": i for i in range(200)})
    assert main(["scale", "2", "--namespace", cluster.namespace, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["from_shards"], report["to_shards"], report["epoch"]) == (1, 2, 2)
    assert report["added"] == ["omnicache-shard-1"]
    assert 0 < report["entries_moved"] < 200
    assert main(["scale", "1", "--namespace", cluster.namespace]) == 0
    out = capsys.readouterr().out
    assert "2 -> 1 shards, ring epoch 3" in out
    assert "removed: omnicache-shard-1" in out
    assert cluster.get_many([f"cli-{i}" for i in range(200)]) == list(range(200))
    assert main(["scale", "0", "--namespace", cluster.namespace]) == 1
    assert "num_shards must be a positive int" in capsys.readouterr().err


def test_a_restarted_coordinator_recovers_the_ring_of_a_scaled_cluster(ray_session, fresh_cluster):
    ray = ray_session
    cluster = fresh_cluster(num_shards=2)
    cluster.set_many({f"r{i}": i for i in range(100)})
    assert cluster.scale(3)["epoch"] == 2
    coordinator = cluster._state.coordinator_handle()
    killed_at = time.time()
    ray.kill(coordinator, no_restart=False)
    deadline = time.monotonic() + 60
    while True:  # until the *new* incarnation answers (the old one may still reply)
        assert time.monotonic() < deadline, "the coordinator did not come back"
        try:
            info = ray.get(coordinator.info.remote(), timeout=5)
            if info["uptime_s"] < time.time() - killed_at:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # restarting
        time.sleep(0.1)
    # Its constructor knows 2 shards at epoch 1; the shards know better.
    assert info["epoch"] == 2
    assert info["members"] == [f"omnicache-shard-{i}" for i in range(3)]
    assert cluster.scale(2)["epoch"] == 3  # and it can drive the next step
    assert cluster.get_many([f"r{i}" for i in range(100)]) == list(range(100))


def test_near_caches_drop_the_slots_that_move_while_the_stream_still_runs(
    ray_session, fresh_cluster
):
    from omnicache_cluster import NearCacheOptions

    ray = ray_session
    cluster = fresh_cluster(num_shards=1)
    keys = [f"near-{i}" for i in range(200)]
    cluster.set_many(dict.fromkeys(keys, "old"))
    near = cluster.with_options(near_cache=NearCacheOptions(staleness_s=0.5))
    assert [near.get(k) for k in keys] == ["old"] * len(keys)  # now held near
    report: dict = {}
    slow = MigrationOptions(batch_entries=3, pause_s=0.15)  # ~5 s: the source keeps them
    thread = threading.Thread(target=lambda: report.update(cluster.scale(2, options=slow)))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while cluster._state.refresh_ring(cluster.options).epoch < 2:
            assert time.monotonic() < deadline, "the ring did not flip"
            time.sleep(0.05)
        moved = [
            k for k in keys if cluster._state.ring.owner(cluster.key(k)) != "omnicache-shard-0"
        ]

        @ray.remote(num_cpus=0.1)
        def write_elsewhere(client, items):  # another process: no read-your-writes here
            client.set_many(items)

        ray.get(write_elsewhere.remote(cluster, dict.fromkeys(moved, "new")))
        time.sleep(1.0)  # twice the staleness bound
        assert "omnicache-shard-1" in [
            s["shard"] for s in cluster.stats()["shards"] if s["migration_importing"]
        ]  # still streaming: the old owner has not dropped anything yet
        assert [near.get(k) for k in moved] == ["new"] * len(moved)
    finally:
        thread.join(timeout=120)
    assert report["complete"], report
