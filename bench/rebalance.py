"""Live resharding cost: how long scaling 4 -> 8 shards takes with N entries, and the
latency of gets before it and while it runs.

Run from the repository root::

    python bench/rebalance.py [--entries 1000000] [--from-shards 4] [--to-shards 8]
                              [--probe-s 10] [--batch 1000] [--parallel 1]
                              [--pause-ms 0] [--json PATH]

One run on a local single-node Ray bound to 127.0.0.1: start ``--from-shards`` shards
(memory only, no L2), load ``--entries`` small entries (int values, ~10-byte
envelopes), then a probe thread issues single ``get``s of random loaded keys for
``--probe-s`` seconds ("before"), keeps going while ``scale(--to-shards)`` streams
the moved slots ("during"), and for ``--probe-s`` more after the step ("after", a
control at the new shard count). Reports the step's time, what it moved, the
p50/p99/max of the probe's gets in each window, and checks
afterwards that every loaded key still reads its value (``lost`` must be 0).
The cluster and Ray are shut down at the end, also on error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import threading
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
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _summary(latencies_s: list[float]) -> dict[str, float]:
    us = [v * 1e6 for v in latencies_s]
    return {
        "gets": len(us),
        "p50_us": round(_pct(us, 0.50), 1),
        "p99_us": round(_pct(us, 0.99), 1),
        "max_us": round(max(us), 1) if us else float("nan"),
    }


class Probe:
    """Single gets of random keys from one thread, timestamped."""

    def __init__(self, cluster: Any, keys: int) -> None:
        self.cluster = cluster
        self.keys = keys
        self.samples: list[tuple[float, float, int]] = []  # (start, latency, key index)
        self.wrong = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(1)
        while not self.stop.is_set():
            i = rng.randrange(self.keys)
            t0 = time.monotonic()
            value = self.cluster.get(f"bench:{i}")
            self.samples.append((t0, time.monotonic() - t0, i))
            if value != i:
                self.wrong += 1

    def window(self, start: float, end: float, keys: set[int] | None = None) -> list[float]:
        return [
            lat for t0, lat, i in self.samples if start <= t0 < end and (keys is None or i in keys)
        ]


def _load(cluster: Any, entries: int, chunk: int = 20_000) -> float:
    t0 = time.monotonic()
    for start in range(0, entries, chunk):
        stop = min(entries, start + chunk)
        cluster.set_many({f"bench:{i}": i for i in range(start, stop)})
    return time.monotonic() - t0


def _verify(cluster: Any, entries: int, chunk: int = 20_000) -> int:
    lost = 0
    for start in range(0, entries, chunk):
        stop = min(entries, start + chunk)
        got = cluster.get_many([f"bench:{i}" for i in range(start, stop)])
        lost += sum(v != i for i, v in zip(range(start, stop), got, strict=True))
    return lost


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from omnicache_cluster import CacheCluster
    from omnicache_cluster.actors._migration import MigrationOptions

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
    )
    cluster = None
    try:
        cluster = CacheCluster.start(
            num_shards=args.from_shards,
            namespace="bench-rebalance",
            max_bytes_per_shard=4 << 30,
            metrics=False,
        )
        load_s = _load(cluster, args.entries)
        print(f"loaded {args.entries} entries in {load_s:.1f}s", file=sys.stderr)
        old_ring = cluster._state.ring
        probe = Probe(cluster, args.entries)
        probe.thread.start()
        time.sleep(args.probe_s)
        options = MigrationOptions(
            batch_entries=args.batch, pause_s=args.pause_ms / 1000, parallel_pulls=args.parallel
        )
        scale_start = time.monotonic()
        report = cluster.scale(args.to_shards, options=options)
        scale_end = time.monotonic()
        time.sleep(args.probe_s)  # a control: the same gets on the new shard count, at rest
        probe.stop.set()
        probe.thread.join()
        print(f"scaled in {scale_end - scale_start:.1f}s", file=sys.stderr)
        moving = scale_start + report["phases_ms"]["create_ms"] / 1000
        new_ring = cluster._state.ring
        moved = {
            i
            for _, _, i in probe.samples
            if old_ring.owner(cluster.key(f"bench:{i}"))
            != new_ring.owner(cluster.key(f"bench:{i}"))
        }
        lost = _verify(cluster, args.entries)
        entries_after = cluster.stats()["entries"]
        return {
            "machine": {
                "nproc": os.cpu_count(),
                "python": platform.python_version(),
                "ray": ray.__version__,
            },
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "load_s": round(load_s, 2),
            "scale_s": round(scale_end - scale_start, 2),
            "entries_moved": report["entries_moved"],
            "moved_share": round(report["moved_share"], 4),
            "ideal_share": report["ideal_share"],
            "fetched_on_miss": report["fetched_on_miss"],
            "flip_ms": round(report["flip_ms"], 1),
            "entries_per_s": round(report["entries_moved"] / (scale_end - scale_start)),
            "complete": report["complete"],
            "phases_ms": report["phases_ms"],
            "gets_before": _summary(probe.window(scale_start - args.probe_s, scale_start)),
            "gets_during": _summary(probe.window(scale_start, scale_end)),
            # The step without starting the new shards' processes (the flip and the
            # stream): what a get sees while entries move.
            "gets_during_move": _summary(probe.window(moving, scale_end)),
            "gets_during_move_of_moving_keys": _summary(probe.window(moving, scale_end, moved)),
            "gets_after": _summary(probe.window(scale_end, scale_end + args.probe_s)),
            "probe_wrong_values": probe.wrong,
            "lost": lost,
            "entries_after": entries_after,
        }
    finally:
        if cluster is not None:
            cluster.shutdown(stop_ray=False)
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--from-shards", type=int, default=4)
    parser.add_argument("--to-shards", type=int, default=8)
    parser.add_argument("--probe-s", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1000, help="entries per streamed batch")
    parser.add_argument("--pause-ms", type=float, default=0.0, help="pause between batches")
    parser.add_argument("--parallel", type=int, default=1, help="batches in flight per target")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "rebalance.json"))
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if result["lost"] == 0 and result["probe_wrong_values"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
