"""Exact-path latency: the cache cluster's single-key and batched reads against their floors.

Run from the repository root::

    python bench/exact_path.py [--json PATH] [--n N] [--shards S] [--no-redis]

In one run it measures, one sequential client, one op at a time (``perf_counter_ns``
around each op; ops/s = 1 / mean):

- a plain Python dict ``get`` (the in-process floor);
- a bare Ray actor round trip, sync (``def get``) and async (``async def get``; the
  cache's ShardActor is an async actor) -- the floors the cluster ``get`` is held to;
- the batch floor: ``--shards`` bare async actors, each asked for its share of 100 keys
  concurrently (the cluster's fan-out shape), and one actor asked for all 100. Note
  that 100 values of 1 KiB make a reply of just over 100 KiB, Ray's inline-return
  limit (``max_direct_call_object_size``): such a reply goes through the object store,
  which costs about 0.8 ms more on a 2-core machine;
- the cluster's ``get`` (hit), ``set`` and ``get_many`` of 100 keys;
- the cost of the in-actor metrics: the same ``get`` and ``set`` on a second cluster
  started with ``metrics=False`` (the first exports to Ray's metrics every 2 s);
- redis-py ``GET`` (hit), ``MGET`` of 100 and a pipeline of 100 ``GET`` against a local
  ``redis-server`` (127.0.0.1 only, started by ``bench/_servers.py``);
- the cost of durability: the cluster's ``set`` with a Redis L2 (the same server) in
  write-through mode (acknowledged once Redis has it) and in write-behind mode
  (acknowledged at once, flushed in batches), next to the memory-only ``set``; their
  ops/s ratios are in the ratios table.

Every system stores the same 1 KiB random (incompressible) bytes value. The systems are
measured in ``--rounds`` interleaved rounds so that drift on a busy machine does not
fall on one of them only. Results go to ``bench/results/exact_path.json`` by default.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Everything stays on loopback; Ray reads these when it is imported (so before any
# import of ray or of the package, which are all done lazily in main()).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/exact_path.py` puts only bench/ on the path
    sys.path.insert(0, str(ROOT))

NAMESPACE = "bench-exact"
NAMESPACE_OFF = "bench-exact-nometrics"
VALUE_BYTES = 1024
NUM_KEYS = 1000
BATCH = 100
TARGET_ASYNC_RATIO = 1.3
TARGET_BATCH_RATIO = 1 / 20
FANOUT_FLOOR = "ray actors (async) {s}x{k} keys — floor"
METRICS_OFF = "cluster {op}, metrics off"
NAME_W = 40
L2_SETS = {
    "write_through": "cluster set, L2 write-through",
    "write_behind": "cluster set, L2 write-behind",
}


@dataclass
class Bench:
    """One measured operation: ``op(i)`` runs op number ``i``; ``keys`` keys per op."""

    name: str
    op: Callable[[int], Any]
    keys: int = 1
    n: int = 0
    samples: list[int] = field(default_factory=list)

    def run(self, count: int, start: int) -> None:
        op, pc = self.op, time.perf_counter_ns
        out = [0] * count
        for j in range(count):
            i = start + j
            t0 = pc()
            op(i)
            out[j] = pc() - t0
        self.samples.extend(out)


def _percentile(sorted_ns: list[int], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default).
    if not sorted_ns:
        return float("nan")
    pos = (len(sorted_ns) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_ns) - 1)
    return sorted_ns[lo] + (sorted_ns[hi] - sorted_ns[lo]) * (pos - lo)


def summarize(bench: Bench) -> dict[str, Any]:
    """Return p50/p99/mean (µs), ops/s and, for batches, per-key figures."""
    s = sorted(bench.samples)
    mean_ns = sum(s) / len(s)
    row: dict[str, Any] = {
        "n": len(s),
        "keys_per_op": bench.keys,
        "p50_us": _percentile(s, 0.50) / 1e3,
        "p99_us": _percentile(s, 0.99) / 1e3,
        "mean_us": mean_ns / 1e3,
        "min_us": s[0] / 1e3,
        "max_us": s[-1] / 1e3,
        "ops_per_s": 1e9 / mean_ns,
    }
    if bench.keys > 1:
        row["per_key_p50_us"] = row["p50_us"] / bench.keys
        row["per_key_mean_us"] = row["mean_us"] / bench.keys
        row["keys_per_s"] = row["ops_per_s"] * bench.keys
    return row


def timer_overhead_ns(count: int = 20000) -> float:
    """Median cost of an empty timed op through `Bench.run` (closure call + timer)."""
    b = Bench("empty", lambda i: None)
    b.run(count, 0)
    return _percentile(sorted(b.samples), 0.5)


def machine_info() -> dict[str, Any]:
    """nproc, Python, Ray and client library versions, CPU model."""
    import ray
    import redis

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "sched_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "ray": ray.__version__,
        "redis_py": redis.__version__,
    }
    try:
        import hiredis

        info["hiredis"] = getattr(hiredis, "__version__", "installed")
    except ImportError:
        info["hiredis"] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "exact_path.json",
        help="where to write the results (default: %(default)s)",
    )
    p.add_argument(
        "--n", type=int, default=3000, help="timed single-key ops per system (default: %(default)s)"
    )
    p.add_argument(
        "--batch-n",
        type=int,
        default=None,
        help="timed 100-key batch ops per system (default: n // 5)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=300,
        help="untimed ops per system before timing (default: %(default)s)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds the timed ops are split into (default: %(default)s)",
    )
    p.add_argument("--shards", type=int, default=2, help="cluster shards (default: %(default)s)")
    p.add_argument(
        "--no-redis",
        action="store_true",
        help="skip redis (e.g. when no redis-server binary is available)",
    )
    args = p.parse_args(argv)
    if args.n < 10 or args.shards < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("need --n >= 10, --shards >= 1, --rounds >= 1, --warmup >= 0")
    if args.batch_n is None:
        args.batch_n = max(10, args.n // 5)
    return args


def _check(label: str, got: Any, want: Any) -> None:
    if got != want:
        raise RuntimeError(
            f"{label}: wrong value read back ({type(got).__name__}, "
            f"{len(got) if isinstance(got, bytes | list) else got!r})"
        )


def build_benches(
    value: bytes, shards: int, redis_port: int | None, cleanup: list[Callable[[], None]]
) -> tuple[list[Bench], list[Bench]]:
    """Start and fill every system; return (single-key benches, batch benches)."""
    import ray

    from omnicache_cluster import CacheCluster

    keys = [f"k{i}" for i in range(NUM_KEYS)]
    windows = [keys[s : s + BATCH] for s in range(0, NUM_KEYS, BATCH)]
    singles: list[Bench] = []
    batches: list[Bench] = []

    # -- plain dict ----------------------------------------------------------------
    # One bytes object per key (as in the cluster's shards), so that no pickle memo
    # shrinks a batch reply.
    d = {k: bytes(bytearray(value)) for k in keys}
    d_get = d.get
    singles.append(Bench("dict get", lambda i: d_get(keys[i % NUM_KEYS])))

    # -- the cluster (starts Ray, bound to 127.0.0.1) -------------------------------
    t0 = time.perf_counter()
    cluster = CacheCluster.start(
        num_shards=shards,
        namespace=NAMESPACE,
        ray_init={"num_cpus": 2, "include_dashboard": False},
    )
    cleanup.append(cluster.shutdown)
    print(f"cluster up ({shards} shards) in {time.perf_counter() - t0:.1f}s", flush=True)
    # The same cluster without in-actor metrics: the on/off cost, measured in one run.
    quiet = CacheCluster.start(num_shards=shards, namespace=NAMESPACE_OFF, metrics=False)
    cleanup.append(lambda: quiet.shutdown(stop_ray=False))

    # -- bare Ray actors: the floors ------------------------------------------------
    @ray.remote(num_cpus=0)
    class SyncDict:
        def __init__(self) -> None:
            self.d: dict[str, bytes] = {}

        def load(self, items: dict[str, bytes]) -> int:
            self.d.update(items)
            return len(self.d)

        def get(self, k: str) -> bytes | None:
            return self.d.get(k)

    @ray.remote(num_cpus=0)
    class AsyncDict:
        def __init__(self) -> None:
            self.d: dict[str, bytes] = {}

        async def load(self, items: dict[str, bytes]) -> int:
            self.d.update(items)
            return len(self.d)

        async def get(self, k: str) -> bytes | None:
            return self.d.get(k)

        async def get_many(self, ks: list[str]) -> list[bytes | None]:
            d = self.d
            return [d.get(k) for k in ks]

    sync_actor = SyncDict.remote()
    async_actors = [AsyncDict.remote() for _ in range(max(1, shards))]
    async_actor = async_actors[0]
    for actor in (sync_actor, *async_actors):
        cleanup.append(lambda a=actor: ray.kill(a, no_restart=True))
    ray.get([a.load.remote(d) for a in (sync_actor, *async_actors)])
    _check("sync actor", ray.get(sync_actor.get.remote(keys[0])), value)
    _check("async actor", ray.get(async_actor.get.remote(keys[0])), value)

    singles.append(
        Bench(
            "ray actor (sync) — floor", lambda i: ray.get(sync_actor.get.remote(keys[i % NUM_KEYS]))
        )
    )
    singles.append(
        Bench(
            "ray actor (async) — floor",
            lambda i: ray.get(async_actor.get.remote(keys[i % NUM_KEYS])),
        )
    )
    # Diagnostic: the cluster's fast path passes a timeout to ray.get.
    singles.append(
        Bench(
            "ray actor (async) + get timeout",
            lambda i: ray.get(async_actor.get.remote(keys[i % NUM_KEYS]), timeout=10.0),
        )
    )
    # The batch floor in the cluster's shape: one concurrent call per shard, each with
    # its share of the keys (contiguous chunks; the ring splits about as evenly).
    step = -(-BATCH // len(async_actors))
    chunked = [[w[j : j + step] for j in range(0, BATCH, step)] for w in windows]

    def fanout(i: int) -> list[Any]:
        parts = chunked[i % len(chunked)]
        return ray.get([a.get_many.remote(p) for a, p in zip(async_actors, parts, strict=False)])

    batches.append(Bench(FANOUT_FLOOR.format(s=len(async_actors), k=step), fanout, keys=BATCH))
    batches.append(
        Bench(
            f"ray actor (async) get_many({BATCH}) 1 call",
            lambda i: ray.get(async_actor.get_many.remote(windows[i % len(windows)])),
            keys=BATCH,
        )
    )

    # -- the cluster ops ---------------------------------------------------------------
    for s in range(0, NUM_KEYS, 250):
        cluster.set_many(dict.fromkeys(keys[s : s + 250], value))
    _check("cluster get", cluster.get(keys[0]), value)
    _check("cluster get_many", cluster.get_many(windows[0]), [value] * BATCH)
    c_get, c_set, c_get_many = cluster.get, cluster.set, cluster.get_many
    set_keys = [f"set-k{i}" for i in range(NUM_KEYS)]
    singles.append(Bench("cluster get (hit)", lambda i: c_get(keys[i % NUM_KEYS])))
    singles.append(Bench("cluster set", lambda i: c_set(set_keys[i % NUM_KEYS], value)))
    batches.append(
        Bench(
            f"cluster get_many({BATCH})",
            lambda i: c_get_many(windows[i % len(windows)]),
            keys=BATCH,
        )
    )
    for s in range(0, NUM_KEYS, 250):
        quiet.set_many(dict.fromkeys(keys[s : s + 250], value))
    _check("cluster get (metrics off)", quiet.get(keys[0]), value)
    q_get, q_set = quiet.get, quiet.set
    singles.append(Bench(METRICS_OFF.format(op="get (hit)"), lambda i: q_get(keys[i % NUM_KEYS])))
    singles.append(
        Bench(METRICS_OFF.format(op="set"), lambda i: q_set(set_keys[i % NUM_KEYS], value))
    )

    # -- redis ---------------------------------------------------------------------------
    if redis_port is not None:
        import redis

        r = redis.Redis(host="127.0.0.1", port=redis_port)
        cleanup.append(r.close)
        r.mset(d)
        _check("redis GET", r.get(keys[0]), value)
        r_get, r_mget = r.get, r.mget

        def pipelined(i: int) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for k in windows[i % len(windows)]:
                pipe.get(k)
            return pipe.execute()

        _check("redis MGET", r_mget(windows[0]), [value] * BATCH)
        _check("redis pipeline", pipelined(0), [value] * BATCH)
        singles.append(Bench("redis-py GET (hit)", lambda i: r_get(keys[i % NUM_KEYS])))
        batches.append(
            Bench(
                f"redis-py MGET({BATCH})", lambda i: r_mget(windows[i % len(windows)]), keys=BATCH
            )
        )
        batches.append(Bench(f"redis-py pipeline GET x{BATCH}", pipelined, keys=BATCH))
        singles.extend(durable_set_benches(value, shards, redis_port, set_keys, cleanup))
    return singles, batches


def durable_set_benches(
    value: bytes,
    shards: int,
    redis_port: int,
    set_keys: list[str],
    cleanup: list[Callable[[], None]],
) -> list[Bench]:
    """One cluster per L2 write mode on the benchmark's redis-server; their ``set``."""
    from omnicache_cluster import CacheCluster, L2Config

    out = []
    for mode, name in L2_SETS.items():
        cluster = CacheCluster.start(
            num_shards=shards,
            namespace=f"{NAMESPACE}-{mode.replace('_', '-')}",
            l2=L2Config(
                url=f"redis://127.0.0.1:{redis_port}/0",
                key_prefix=f"bench-{mode}:",
                write_mode=mode,  # type: ignore[arg-type]
            ),
        )
        cleanup.append(cluster.shutdown)
        cluster.set(set_keys[0], value)
        _check(name, cluster.get(set_keys[0]), value)
        c_set = cluster.set
        out.append(Bench(name, lambda i, c_set=c_set: c_set(set_keys[i % NUM_KEYS], value)))
    return out


def measure(benches: list[Bench], n: int, warmup: int, rounds: int) -> None:
    """Warm each bench up, then time ``n`` ops each, interleaved over ``rounds``."""
    for b in benches:
        b.run(warmup, 0)
        b.samples.clear()
    done = 0
    for r in range(rounds):
        count = n // rounds + (1 if r < n % rounds else 0)
        for b in benches:
            b.run(count, warmup + done)
        done += count
    for b in benches:
        b.n = len(b.samples)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    head = (
        f"{'operation':<{NAME_W}} {'n':>6} {'p50 µs':>10} {'p99 µs':>10} {'mean µs':>10} "
        f"{'ops/s':>10} {'µs/key p50':>11} {'keys/s':>11}"
    )
    print(head)
    print("-" * len(head))
    for name, row in results.items():
        per_key = f"{row['per_key_p50_us']:11.2f}" if "per_key_p50_us" in row else " " * 11
        keys_s = f"{row['keys_per_s']:11,.0f}" if "keys_per_s" in row else " " * 11
        print(
            f"{name:<{NAME_W}} {row['n']:>6} {row['p50_us']:10.2f} {row['p99_us']:10.2f} "
            f"{row['mean_us']:10.2f} {row['ops_per_s']:10,.0f} {per_key} {keys_s}"
        )


def compute_ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ratios the project tracks, with their targets where it has one."""
    get = results["cluster get (hit)"]
    many = results[f"cluster get_many({BATCH})"]
    ratios: dict[str, dict[str, Any]] = {
        "cluster get p50 / ray actor (sync) p50": {
            "value": get["p50_us"] / results["ray actor (sync) — floor"]["p50_us"]
        },
        "cluster get p50 / ray actor (async) p50": {
            "value": get["p50_us"] / results["ray actor (async) — floor"]["p50_us"],
            "target_max": TARGET_ASYNC_RATIO,
        },
        f"cluster get_many({BATCH}) per-key p50 / cluster get p50": {
            "value": many["per_key_p50_us"] / get["p50_us"],
            "target_max": TARGET_BATCH_RATIO,
            "mean_based": many["per_key_mean_us"] / get["mean_us"],
        },
        f"cluster get_many({BATCH}) p50 / its fan-out floor p50": {
            "value": many["p50_us"]
            / next(row["p50_us"] for name, row in results.items() if name.endswith("keys — floor"))
        },
    }
    for op in ("get (hit)", "set"):
        on, off = results[f"cluster {op}"], results[METRICS_OFF.format(op=op)]
        ratios[f"cluster {op} p50, metrics on / off"] = {
            "value": on["p50_us"] / off["p50_us"],
            "mean_based": on["mean_us"] / off["mean_us"],
            "p99_based": on["p99_us"] / off["p99_us"],
        }
    if "redis-py GET (hit)" in results:
        ratios["cluster get p50 / redis-py GET p50"] = {
            "value": get["p50_us"] / results["redis-py GET (hit)"]["p50_us"]
        }
        ratios[f"cluster get_many({BATCH}) per-key p50 / redis-py MGET({BATCH}) per-key p50"] = {
            "value": many["per_key_p50_us"] / results[f"redis-py MGET({BATCH})"]["per_key_p50_us"]
        }
    memory_set = results["cluster set"]["ops_per_s"]
    for mode, name in L2_SETS.items():
        if name in results:
            ratios[f"cluster set ops/s, L2 {mode.replace('_', '-')} / memory-only"] = {
                "value": results[name]["ops_per_s"] / memory_set
            }
    for r in ratios.values():
        if "target_max" in r:
            r["meets_target"] = r["value"] <= r["target_max"]
    return ratios


def print_ratios(ratios: dict[str, dict[str, Any]]) -> None:
    print("\nratios")
    for name, r in ratios.items():
        line = f"  {name:<76} {r['value']:8.3f}"
        if "target_max" in r:
            verdict = "ok" if r["meets_target"] else "MISSES TARGET"
            line += f"   (target <= {r['target_max']:.3g}: {verdict})"
        print(line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench._servers import (
        redis_server_binary,
        redis_server_problem,
        start_redis_server,
        stop,
    )
    from omnicache_cluster import ActorMetricsConfig

    started = time.perf_counter()
    redis_proc = None
    redis_port: int | None = None
    redis_binary = redis_server_binary()
    problem = redis_server_problem(redis_binary)
    if args.no_redis:
        print(f"redis: skipped (--no-redis given; {problem or f'binary: {redis_binary}'})")
    elif problem:
        print(f"redis: {problem}; run with --no-redis to skip redis", file=sys.stderr)
        return 2

    value = os.urandom(VALUE_BYTES)  # incompressible: the cluster's lz4 keeps it raw
    cleanup: list[Callable[[], None]] = []
    try:
        if not args.no_redis:
            redis_proc, redis_port = start_redis_server()
            print(f"redis-server on 127.0.0.1:{redis_port} ({redis_binary})", flush=True)
        singles, batches = build_benches(value, args.shards, redis_port, cleanup)
        t0 = time.perf_counter()
        measure(singles, args.n, args.warmup, args.rounds)
        measure(batches, args.batch_n, max(10, args.warmup // 5), args.rounds)
        print(f"measured in {time.perf_counter() - t0:.1f}s\n", flush=True)

        results = {b.name: summarize(b) for b in singles + batches}
        ratios = compute_ratios(results)
        overhead = timer_overhead_ns()
        machine = machine_info()
        print_table(results)
        print(f"(timer + closure overhead per op, included above: {overhead:.0f} ns)")
        print_ratios(ratios)

        report = {
            "benchmark": "exact_path",
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "config": {
                "n": args.n,
                "batch_n": args.batch_n,
                "warmup": args.warmup,
                "rounds": args.rounds,
                "shards": args.shards,
                "namespace": NAMESPACE,
                "value_bytes": VALUE_BYTES,
                "value": "os.urandom (incompressible)",
                "distinct_keys": NUM_KEYS,
                "batch_keys": BATCH,
                "redis": redis_port is not None,
                "ray_init": {"num_cpus": 2, "include_dashboard": False},
                "metrics": {
                    "on": NAMESPACE,
                    "off": NAMESPACE_OFF,
                    "interval_s": ActorMetricsConfig().interval_s,
                },
            },
            "timer_overhead_ns": overhead,
            "results": results,
            "ratios": ratios,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"\nwrote {args.json}")
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception as exc:
                print(f"cleanup {getattr(fn, '__qualname__', fn)}: {exc!r}", file=sys.stderr)
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        stop(redis_proc)
        print(f"total {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
