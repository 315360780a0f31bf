"""Multi-node scenarios on one machine, run in a child process by
``tests/test_multinode.py`` (a pytest process holds one Ray instance, and its session
Ray is a single node).

``python -m tests.multinode_scenarios --out result.json [--redis-url URL]`` builds a
`ray.cluster_utils.Cluster` of 3 nodes (a head with a ``head`` resource for the
coordinator and the driver, and 2 workers), every socket on 127.0.0.1 and Ray's files
under a private ``RAY_TMPDIR``, then runs:

* ``strict_spread`` (with Redis L2, when a URL is given): 3 shards in a
  ``STRICT_SPREAD`` placement group, so on 3 distinct nodes; a worker node holding a
  shard is killed under a read/write workload, and a replacement node joins (Ray
  reschedules the group's bundle there and restarts the shard in it);
* ``spread`` (memory only): 3 shards placed with ``SPREAD``; a worker node holding a
  shard is killed under the workload; Ray restarts the shard on a remaining node.

It writes one JSON object of figures per scenario to ``--out``; the test asserts on
them. The cluster is always shut down, and the parent kills the whole process group
if it runs past its timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

NUM_KEYS = 600
HEALTH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


def _log(msg: str) -> None:
    print(f"[multinode {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Workload:
    """A writer thread and a reader thread over ``NUM_KEYS`` keys of one client; the
    writer rewrites the first half (hot) only, the other half (cold) keeps the value
    written before the node is lost."""

    def __init__(self, cache: Any, victim_keys: set[str]) -> None:
        self.cache = cache
        self.keys = [f"k{i}" for i in range(NUM_KEYS)]
        self.victim_keys = victim_keys
        self.acked: dict[str, tuple[int, float]] = {}
        self.errors: list[str] = []
        self.backwards: list[tuple[str, Any, Any]] = []
        self.ops = 0
        self.max_op_s = 0.0
        self.stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]

    def start(self) -> None:
        self.cache.set_many(dict.fromkeys(self.keys, 0))
        now = time.monotonic()
        self.acked = dict.fromkeys(self.keys, (0, now))
        for thread in self._threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=180)

    def _timed(self, fn: Any, *args: Any) -> Any:
        t0 = time.monotonic()
        out = fn(*args)
        self.max_op_s = max(self.max_op_s, time.monotonic() - t0)
        self.ops += 1
        return out

    def _write(self) -> None:
        version = 0
        try:
            while not self.stop.is_set():
                version += 1
                for key in self.keys[version % 5 : NUM_KEYS // 2 : 5]:
                    self._timed(self.cache.set, key, version)
                    self.acked[key] = (version, time.monotonic())
                    if self.stop.is_set():
                        return
        except Exception as exc:
            self.errors.append(f"writer: {type(exc).__name__}: {exc}")

    def _read(self) -> None:
        from omnicache_cluster import MISS

        rng = random.Random(7)
        seen: dict[str, int] = {}
        try:
            while not self.stop.is_set():
                key = rng.choice(self.keys)
                value = self._timed(self.cache.get, key)
                if value is MISS or value < seen.get(key, 0):
                    if key not in self.victim_keys or self.cache_has_l2:
                        self.backwards.append(
                            (key, seen.get(key), None if value is MISS else value)
                        )
                    seen.pop(key, None)
                else:
                    seen[key] = value
        except Exception as exc:
            self.errors.append(f"reader: {type(exc).__name__}: {exc}")

    cache_has_l2 = False


def _where(ray: Any, cache: Any) -> dict[str, str]:
    handles = {n: cache._state.handle_of(n) for n in cache._state.ring.members}
    return {n: ray.get(h.where.remote(), timeout=60)["node_id"] for n, h in handles.items()}


def _wait_back(ray: Any, handle: Any, dead_node: str, timeout_s: float = 150) -> str:
    """Wait until the shard answers from a node other than ``dead_node``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            node = ray.get(handle.where.remote(), timeout=2)["node_id"]
            if node != dead_node:
                return str(node)
        except Exception as exc:  # dead, restarting, or not rescheduled yet
            _log(f"waiting for the restart: {type(exc).__name__}")
        time.sleep(0.2)
    raise TimeoutError("the shard of the dead node was not restarted elsewhere")


def node_failure(cluster: Any, placement: str, redis_url: str | None) -> dict[str, Any]:
    """Kill the worker node of one shard under a workload; return the figures."""
    import ray

    from omnicache_cluster import MISS, CacheCluster, ClientOptions, L2Config

    l2 = None if redis_url is None else L2Config(url=redis_url, key_prefix=f"mn{os.getpid()}:")
    head = cluster.head_node.node_id
    for attempt in range(5):
        cache = CacheCluster.start(
            num_shards=3,
            namespace=f"mn-{placement}-{attempt}",
            placement=placement,
            coordinator_options={"resources": {"head": 0.01}},
            l2=l2,
            options=ClientOptions(call_timeout_s=2.0, retry_deadline_s=150.0),
            metrics=False,
        )
        where = _where(ray, cache)
        if any(node != head for node in where.values()) and len(set(where.values())) > 1:
            break
        # SPREAD is best effort: Ray may put every shard on one node. On the head node
        # no worker node holds one to kill; on a worker node, killing it leaves no shard
        # whose entries must keep being served. Start again.
        _log(f"{placement}: every shard on one node (attempt {attempt + 1}); again")
        cache.shutdown(stop_ray=False)
    try:
        dead_node = next(node for node in where.values() if node != head)
        worker = next(w for w in cluster.worker_nodes if w.node_id == dead_node)
        # Every shard of that node dies with it ("spread" may have put two there).
        victims = sorted(n for n, node in where.items() if node == dead_node)
        victim = victims[0]
        ring = cache._state.ring
        victim_keys = {
            k for k in (f"k{i}" for i in range(NUM_KEYS)) if ring.owner(cache.key(k)) in victims
        }
        load = Workload(cache, victim_keys)
        load.cache_has_l2 = l2 is not None
        load.start()
        time.sleep(2.0)
        ops_before = load.ops
        _log(f"{placement}: killing the node of {victims} after {ops_before} ops")
        killed_at = time.monotonic()
        cluster.remove_node(worker, allow_graceful=False)
        # Other shards keep serving while the dead one is away.
        others = [k for k in load.keys if k not in victim_keys][:50]
        t0 = time.monotonic()
        others_ok = cache.get_many(others) != [MISS] * len(others)
        others_s = time.monotonic() - t0
        if placement == "strict_spread":  # its bundle needs a node of its own
            _log("strict_spread: adding a replacement node")
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        new_node = _wait_back(ray, cache._state.handle_of(victim), dead_node)
        for other in victims[1:]:
            _wait_back(ray, cache._state.handle_of(other), dead_node)
        back_at = time.monotonic()
        _log(f"{placement}: {victim} back after {back_at - killed_at:.1f}s")
        time.sleep(2.0)
        load.finish()
        final = dict(zip(load.keys, cache.get_many(load.keys), strict=True))
        lost = [k for k in load.keys if final[k] != load.acked[k][0]]
        return {
            "placement": placement,
            "l2": l2 is not None,
            "nodes_of_shards": len(set(where.values())),
            "victims": victims,
            "restarted_on_other_node": new_node != dead_node,
            "restart_s": back_at - killed_at,
            "ops_before_kill": ops_before,
            "ops_after_restart": load.ops - ops_before,
            "errors": load.errors,
            "max_op_s": load.max_op_s,
            "others_ok_during_outage": others_ok,
            "others_read_s": others_s,
            "lost": lost,
            "lost_not_victims": [k for k in lost if k not in victim_keys],
            "lost_acked_after_restart": [k for k in lost if load.acked[k][1] > back_at],
            "cold_victim_keys_kept": [
                k for k in load.keys[NUM_KEYS // 2 :] if k in victim_keys and k not in lost
            ],
            "victim_keys": len(victim_keys),
            "backwards": load.backwards[:20],
            "final_misses": sum(v is MISS for v in final.values()),
        }
    finally:
        cache.shutdown(stop_ray=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--only", default=None, help="run only this placement's scenario")
    parser.add_argument("--keep-logs", action="store_true", help="keep Ray's temp dir")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="ocmn", dir="/tmp")  # short: Ray's socket paths
    os.environ["RAY_TMPDIR"] = tmp
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.cluster_utils import Cluster

    results: dict[str, Any] = {}
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "resources": {"head": 1},
                "node_ip_address": "127.0.0.1",
                "include_dashboard": False,
                "_system_config": HEALTH,
            },
        )
        for _ in range(2):
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        _log("3 nodes up")
        ray.init(
            address=cluster.address,
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        plans = [("strict_spread", args.redis_url), ("spread", None)]
        plans = [p for p in plans if args.only in (None, p[0])]
        for placement, url in plans:
            try:
                results[placement] = node_failure(cluster, placement, url)
            except Exception as exc:  # reported, and the next scenario still runs
                results[placement] = {"failed": f"{type(exc).__name__}: {exc}"}
                _log(f"{placement} failed: {exc!r}")
    finally:
        with open(args.out, "w") as out:
            json.dump(results, out)
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if args.keep_logs:
            _log(f"Ray's files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
