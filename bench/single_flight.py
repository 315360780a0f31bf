"""Single-flight cost: coordinator lease throughput and the added latency on the miss path.

Run from the repository root::

    python bench/single_flight.py [--json PATH] [--seconds S] [--workers P] [--inflight C]

Measures, in one run on a local cluster (2 shards + the coordinator):

1. coordinator lease throughput: ``P`` worker processes (Ray tasks), each keeping
   ``C`` async acquire -> release cycles in flight on distinct keys;
2. ``get_or_compute`` misses/s end to end (lookup + lease, trivial compute, store +
   release) with the same concurrency: leases hosted by the key's shard (the default),
   and for a tenant with a compute quota (leases and admission by the coordinator);
3. single-caller latency (p50/p99) of a miss done by hand (``get`` + ``set``), of a
   ``get_or_compute`` miss (the same plus acquire and release), and of a
   ``get_or_compute`` hit (no coordinator on the hit path).

A miss is followed by an LLM call (~0.2-30 s) in real use, so the question is whether
the coordinator sustains the miss rate the cluster must serve (1,000 misses/s target).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _lease_loop(coord: Any, prefix: str, inflight: int, seconds: float) -> int:
    done = 0
    stop = time.monotonic() + seconds

    async def one(slot: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            key = f"{prefix}:{slot}:{i}"
            kind, token = await coord.acquire.remote(key, "bench", 10.0, 30.0)
            assert kind == "lead", kind
            await coord.release.remote(key, token, "done", b"v")
            done += 1
            i += 1

    await asyncio.gather(*(one(s) for s in range(inflight)))
    return done


async def _miss_loop(client: Any, prefix: str, inflight: int, seconds: float) -> int:
    done = 0
    stop = time.monotonic() + seconds

    async def one(slot: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            await client.aget_or_compute(f"{prefix}:{slot}:{i}", lambda: b"x" * 64)
            done += 1
            i += 1

    await asyncio.gather(*(one(s) for s in range(inflight)))
    return done


def _parallel(ray: Any, fn: Any, args: list[Any], workers: int) -> tuple[float, int]:
    task = ray.remote(num_cpus=0.1)(fn)
    started = time.perf_counter()
    counts = ray.get([task.remote(*args, f"w{i}") for i in range(workers)])
    return time.perf_counter() - started, sum(counts)


def _lease_worker(namespace: str, inflight: int, seconds: float, prefix: str) -> int:
    import ray

    from omnicache_cluster.actors.remote import COORDINATOR_NAME

    coord = ray.get_actor(COORDINATOR_NAME, namespace=namespace)
    return asyncio.run(_lease_loop(coord, prefix, inflight, seconds))


def _miss_worker(client: Any, inflight: int, seconds: float, prefix: str) -> int:
    return asyncio.run(_miss_loop(client, prefix, inflight, seconds))


def _latency(fn: Any, n: int) -> dict[str, float]:
    samples = []
    for i in range(n):
        t = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - t) / 1000)
    return {
        "p50_us": statistics.median(samples),
        "p99_us": _pct(samples, 0.99),
        "mean_us": statistics.fmean(samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "single_flight.json"))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--n", type=int, default=1000, help="samples per latency row")
    args = parser.parse_args(argv)

    import ray

    from omnicache_cluster import MISS, CacheCluster, TenantQuota

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    # A tenant with a compute quota takes its leases from the coordinator; the others
    # from the shard that owns the key.
    quota = {"metered": TenantQuota(max_concurrent_computes=10_000)}
    cluster = CacheCluster.start(num_shards=2, namespace="bench-single-flight", tenant_quotas=quota)
    try:
        # Warm the worker processes so process start-up is not timed.
        _parallel(ray, _lease_worker, [cluster.namespace, 1, 0.2], args.workers)
        wall, leases = _parallel(
            ray, _lease_worker, [cluster.namespace, args.inflight, args.seconds], args.workers
        )
        lease_rate = leases / wall
        wall, misses = _parallel(
            ray, _miss_worker, [cluster, args.inflight, args.seconds], args.workers
        )
        miss_rate = misses / wall
        wall, metered = _parallel(
            ray,
            _miss_worker,
            [cluster.for_tenant("metered"), args.inflight, args.seconds],
            args.workers,
        )
        metered_rate = metered / wall
        metered_client = cluster.for_tenant("metered")

        def by_hand(i: int) -> None:
            if cluster.get(f"hand-{i}") is MISS:
                cluster.set(f"hand-{i}", b"x" * 64)

        rows = {
            "miss by hand (get + set)": _latency(by_hand, args.n),
            "get_or_compute miss": _latency(
                lambda i: cluster.get_or_compute(f"goc-{i}", lambda: b"x" * 64), args.n
            ),
            "get_or_compute miss (quota'd tenant)": _latency(
                lambda i: metered_client.get_or_compute(f"q-{i}", lambda: b"x" * 64), args.n
            ),
            "get_or_compute hit": _latency(
                lambda i: cluster.get_or_compute(f"goc-{i}", lambda: b"y"), args.n
            ),
            "get hit": _latency(lambda i: cluster.get(f"goc-{i}"), args.n),
        }
    finally:
        cluster.shutdown(stop_ray=True)

    added = rows["get_or_compute miss"]["p50_us"] - rows["miss by hand (get + set)"]["p50_us"]
    print(f"{'operation':38} {'p50 µs':>10} {'p99 µs':>10} {'mean µs':>10}")
    for name, r in rows.items():
        print(f"{name:38} {r['p50_us']:10.1f} {r['p99_us']:10.1f} {r['mean_us']:10.1f}")
    print()
    conc = f"{args.workers} workers x {args.inflight} in flight"
    print(f"coordinator lease acquire+release: {lease_rate:,.0f} cycles/s ({conc})")
    print(f"get_or_compute misses end to end:  {miss_rate:,.0f} misses/s ({conc})")
    print(f"  same, quota'd tenant (coordinator): {metered_rate:,.0f} misses/s")
    print(f"added p50 latency of single-flight on a miss: {added:,.0f} µs")
    print(
        f"headroom over 1,000 misses/s: leases {lease_rate / 1000:.1f}x, "
        f"end to end {miss_rate / 1000:.1f}x"
    )
    result = {
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "ray": ray.__version__,
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": vars(args),
        "lease_cycles_per_s": lease_rate,
        "get_or_compute_misses_per_s": miss_rate,
        "get_or_compute_misses_per_s_quota_tenant": metered_rate,
        "added_miss_latency_p50_us": added,
        "latency": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
