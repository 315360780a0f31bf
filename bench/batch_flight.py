"""Batch single-flight: what ``get_or_compute_many`` saves, and what its leases cost.

Run from the repository root::

    python bench/batch_flight.py [--json PATH] [--workers P] [--rounds R] [--batch B]

In one run on a local 2-shard cluster:

1. **Overlapping batches.** ``P`` worker processes (Ray tasks, started together) run
   ``R`` rounds; in each round every worker embeds a batch of ``B`` texts drawn from a
   pool shared by all workers (fresh texts each round, so they overlap across workers,
   not across rounds), through a fake embedding API of 20 ms + 2 ms per text. Systems:
   the cache done by hand (``get_many``, the API on the misses, ``set_many``: what
   ``EmbeddingCache`` did before) and ``get_or_compute_many``. Reported: texts sent to
   the API (the bill), the API's busy seconds, and the median round time.
2. **Cost when nothing overlaps.** One caller, batches of ``B`` new keys, a trivial
   compute: the latency of the hand-made miss path and of ``get_or_compute_many`` (two
   more calls per shard: leases, then store-and-release).

Writes ``bench/results/batch_flight.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
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

API_BASE_S, API_PER_TEXT_S = 0.020, 0.002
HAND, FLIGHT = "get_many + API + set_many (by hand)", "get_or_compute_many"


def fake_api(texts: list[Any]) -> list[bytes]:
    """A stand-in for a batch embedding API: latency and one 384-float vector per text."""
    time.sleep(API_BASE_S + API_PER_TEXT_S * len(texts))
    return [bytes(1536) for _ in texts]


def run_round(cluster: Any, system: str, texts: list[str]) -> tuple[int, float]:
    """One batch; return (texts sent to the API, seconds)."""
    sent: list[int] = []

    def api(batch: list[Any]) -> list[bytes]:
        sent.append(len(batch))
        return fake_api(batch)

    from omnicache_cluster import MISS

    t0 = time.perf_counter()
    if system == FLIGHT:
        cluster.get_or_compute_many(texts, api)
    else:
        found = cluster.get_many(texts)
        missing = list(dict.fromkeys(t for t, v in zip(texts, found, strict=True) if v is MISS))
        if missing:
            cluster.set_many(dict(zip(missing, api(missing), strict=True)))
    return sum(sent), time.perf_counter() - t0


def worker(cluster: Any, system: str, rounds: list[list[str]], start_at: float) -> list[Any]:
    time.sleep(max(0.0, start_at - time.time()))
    out = []
    for n, texts in enumerate(rounds):
        # Rounds start together across workers (a shared clock), so batches overlap.
        time.sleep(max(0.0, start_at + n * 1.0 - time.time()))
        out.append(run_round(cluster, system, texts))
    return out


def overlapping(cluster: Any, args: argparse.Namespace) -> dict[str, Any]:
    import ray

    task = ray.remote(num_cpus=0)(worker)
    rng = random.Random(args.seed)
    results: dict[str, Any] = {}
    for system in (HAND, FLIGHT):
        view = cluster.with_key_namespace(f"bf-overlap-{time.time_ns()}")
        pools = [[f"r{r} text {i}" for i in range(args.pool)] for r in range(args.rounds)]
        plans = [[rng.sample(pools[r], args.batch) for r in range(args.rounds)]
                 for _ in range(args.workers)]  # fmt: skip
        distinct = sum(len({t for p in plans for t in p[r]}) for r in range(args.rounds))
        start_at = time.time() + 2.0
        replies = ray.get([task.remote(view, system, p, start_at) for p in plans])
        sent = sum(s for rep in replies for s, _ in rep)
        secs = [t for rep in replies for _, t in rep]
        calls = args.workers * args.rounds
        api_busy = sent * API_PER_TEXT_S + calls * API_BASE_S  # upper bound: every call
        results[system] = {
            "texts_asked": args.workers * args.rounds * args.batch,
            "texts_distinct": distinct,
            "texts_sent_to_api": sent,
            "api_seconds_at_most": round(api_busy, 3),
            "batch_p50_ms": round(statistics.median(secs) * 1e3, 1),
            "batch_max_ms": round(max(secs) * 1e3, 1),
        }
    return results


def no_overlap(cluster: Any, args: argparse.Namespace) -> dict[str, Any]:
    from omnicache_cluster import MISS

    view = cluster.with_key_namespace(f"bf-cost-{time.time_ns()}")
    out: dict[str, Any] = {}
    for n, system in enumerate((HAND, FLIGHT)):
        lat = []
        for r in range(args.cost_rounds):
            keys = [f"system {n} round {r} key {i}" for i in range(args.batch)]
            t0 = time.perf_counter()
            if system == FLIGHT:
                view.get_or_compute_many(keys, lambda ks: [b"v"] * len(ks))
            else:
                found = view.get_many(keys)
                missing = [k for k, v in zip(keys, found, strict=True) if v is MISS]
                view.set_many(dict.fromkeys(missing, b"v"))
            lat.append(time.perf_counter() - t0)
        out[system] = {
            "p50_ms": round(statistics.median(lat) * 1e3, 2),
            "p90_ms": round(sorted(lat)[int(0.9 * len(lat))] * 1e3, 2),
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/batch_flight.json")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pool", type=int, default=64, help="texts per round shared by workers")
    ap.add_argument("--cost-rounds", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0 < args.batch <= args.pool:
        ap.error("need 0 < --batch <= --pool")

    from omnicache_cluster import CacheCluster

    cluster = CacheCluster.start(
        num_shards=2, namespace=f"bench-bf-{os.getpid()}", ray_init={"num_cpus": 2}
    )
    try:
        report = {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "api": {"base_s": API_BASE_S, "per_text_s": API_PER_TEXT_S},
            "overlapping": overlapping(cluster, args),
            "no_overlap_cost": no_overlap(cluster, args),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "loadavg_end": os.getloadavg(),
            },
        }
    finally:
        cluster.shutdown()
    print(
        f"\n1. overlapping batches: {args.workers} workers x {args.rounds} rounds x "
        f"{args.batch} texts from {args.pool} per round; API {API_BASE_S * 1e3:.0f} ms + "
        f"{API_PER_TEXT_S * 1e3:.0f} ms/text"
    )
    head = f"{'system':40} {'asked':>6} {'distinct':>8} {'sent to API':>11} {'batch p50 ms':>12}"
    print(head + "\n" + "-" * len(head))
    for name, r in report["overlapping"].items():
        print(
            f"{name:40} {r['texts_asked']:>6} {r['texts_distinct']:>8} "
            f"{r['texts_sent_to_api']:>11} {r['batch_p50_ms']:>12}"
        )
    print(f"\n2. no overlap: one caller, {args.batch} new keys per batch, trivial compute")
    for name, r in report["no_overlap_cost"].items():
        print(f"{name:40} p50 {r['p50_ms']:>7} ms   p90 {r['p90_ms']:>7} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
