"""Realistic workload (issue 8): many client processes, Zipf keys, 1-4 KB values, 90/10 mix.

Run from the repository root::

    python bench/workload.py [--json PATH] [--workers P] [--shards S] [--seconds T]
                             [--keys N] [--rounds R] [--quick] [--no-redis]
    python bench/workload.py --scaling [--scaling-shards 1,2,4,8] [--keys N] [--seconds T]

Default mode, in one run on one machine (everything on 127.0.0.1):

1. **Mixed workload.** ``P`` worker processes (Ray tasks with fractional ``num_cpus``,
   started together behind a barrier) each issue 90% reads / 10% writes over ``N``
   keys (100k) with Zipf(1.1) popularity (numpy, seeded, each worker's key sequence
   precomputed), values 1-4 KB of random (incompressible) bytes, sizes uniform. Every
   system is preloaded with all ``N`` keys first. Systems: redis-py + a local
   ``redis-server`` (one connection per worker; and pipelined, 32 commands per
   pipeline), this cluster's sync client without near-cache (``batching=False``) and
   with near-cache (``NearCacheOptions(staleness_s=1.0, ...)``), its async client with
   automatic batching (32 ``aget``/``aset`` in flight per worker), ``get_many`` of 100
   keys, and the floor: bare async Ray actors holding a dict (one per shard, keys routed
   by index), single-key and 100-key batches. Reported per system: aggregate ops/s
   (the whole window, and the median of 0.5 s windows over all rounds: the machine may
   be shared, so medians of short windows are the figures to quote) and the p50/p99
   latency of a ``get`` as its caller waits for it (for a pipeline or a batch: the
   round trip of the pipeline / batch the get was part of).
2. **LLM-cache trace.** Zipf(1.1) over ``N`` prompts; a request is a ``get`` and, on a
   miss, a ``set`` of the response; ``P`` workers each keep 32 requests in flight; every
   system starts cold and serves the same per-worker request lists (count-bounded, with
   a time cap). This cluster's async client with batching, and with near-cache +
   batching, against ``redis.asyncio`` (one client per worker). Reported: requests/s and
   hit rates.

``--scaling`` (for the 16-core device; tested here only at small scale): for shards = 1,
2, 4, 8 with workers = 2 x shards, aggregate calls/s of single-key ``get`` (sync client,
no near-cache, no batching) and keys/s of 100-key ``get_many``, next to the same number
of bare Ray dict actors driven by the same number of clients. Reference numbers measured
on that machine with Ray 2.60 (bare dict actors driven by client actors): single-key
5.7k / 11k / 16k / 14k calls/s; 100-key batches 0.32M / 0.56M / 0.89M / 0.92M keys/s.

Device command (16-core machine: Python 3.12 + numpy, no Ray). First, here, from the
repository root, once (fills the git-ignored ``./.whl/``, about 48 MB)::

    bash ../shared/tools/device-wheels.sh msgpack lz4

then run this with the device ``run`` tool, ``carry=[".whl"]``, ``timeout_s=540``::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
    gunzip -c .whl/redis-server.gz > /tmp/redis-server && chmod +x /tmp/redis-server
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
    export REDIS_SERVER=/tmp/redis-server
    timeout 500 python3 bench/workload.py --scaling --seconds 4 --json $OUT/workload_scaling.json

(about 3-4 minutes there: per shard count, start + preload of 100k keys, then four 4 s
phases in 2 interleaved rounds). With time left, the default mode at that scale:
``timeout 400 python3 bench/workload.py --workers 16 --shards 4 --seconds 3
--json $OUT/workload.json``.

Results go to ``bench/results/workload.json`` (default mode) or
``bench/results/workload_scaling.json`` (``--scaling``), with machine info and a
timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Everything stays on loopback; Ray reads these when it is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/workload.py` puts only bench/ on the path
    sys.path.insert(0, str(ROOT))

NAMESPACE = "bench-workload"
TRACE_KEY_NS = "trace"
ZIPF_S = 1.1
READ_FRACTION = 0.9
INFLIGHT = 32
PIPELINE = 32
BATCH = 100
WINDOW_S = 0.5
SEQ_LEN = 200_000  # ops precomputed per worker; the loop wraps around if it gets there
WRITE_VALUES = 2048  # distinct precomputed write values per worker
MAX_OPS = 5_000_000  # per worker per phase: the count bound next to the time bound
TRACE_CAP_S = 60.0  # time cap of one trace run
REF_SINGLE = {1: 5.7e3, 2: 11e3, 4: 16e3, 8: 14e3}
REF_BATCH = {1: 0.32e6, 2: 0.56e6, 4: 0.89e6, 8: 0.92e6}
TARGET_NEAR_VS_REDIS = 1 / 10
TARGET_GET_VS_BARE = 1.3
TARGET_TRACE_VS_REDIS = 3.0
PROMPT = "[{:06d}] You are a support agent. Summarise this customer ticket and propose a next step."

# Systems of the mixed workload: name -> (loop kind, how the get p50 is meant).
REDIS = "redis-py GET/SET"
REDIS_PIPE = f"redis-py pipelined x{PIPELINE}"
REDIS_MGET = f"redis-py MGET({BATCH})"
BARE = "bare ray actor (async) — floor"
BARE_BATCH = f"bare ray actor get_many({BATCH}) — floor"
CLUSTER = "cluster sync (batching=False)"
CLUSTER_RAY = "cluster sync via Ray calls (fast_path=False)"
CLUSTER_NEAR = "cluster sync + near-cache"
CLUSTER_ASYNC = f"cluster async batching, {INFLIGHT} in flight"
CLUSTER_BATCH = f"cluster get_many({BATCH})"
T_REDIS = f"trace: redis.asyncio, {INFLIGHT} in flight"
T_CLUSTER = f"trace: cluster async batching, {INFLIGHT} in flight"
T_CLUSTER_NEAR = f"trace: cluster batching + near, {INFLIGHT} in flight"
T_CLUSTER_NEAR_RAY = f"trace: same via Ray calls (fast_path=False), {INFLIGHT} in flight"
NAME_W = 44


# --------------------------------------------------------------------------------------
# The workload: per-worker precomputed sequences (runs in the worker processes)
# --------------------------------------------------------------------------------------


def zipf_probs(n: int, s: float) -> Any:
    """Bounded Zipf(s) over ranks 1..n."""
    import numpy as np

    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


class Mix:
    """One worker's precomputed sequence: key indices, write flags, write values.

    Rank r of the Zipf law is key ``perm[r]`` (a seeded permutation, the same in every
    process), so the hot keys spread over shards and actors.
    """

    def __init__(self, cfg: dict[str, Any], worker: int, salt: int, length: int) -> None:
        import numpy as np

        n = cfg["keys"]
        perm = np.random.default_rng(cfg["seed"]).permutation(n)
        rng = np.random.default_rng([cfg["seed"], salt, worker])
        ranks = rng.choice(n, size=length, p=zipf_probs(n, cfg["zipf_s"]))
        self.idx: list[int] = perm[ranks].tolist()
        self.write: list[bool] = (rng.random(length) >= cfg["read_fraction"]).tolist()
        sizes = rng.integers(cfg["vmin"], cfg["vmax"] + 1, size=WRITE_VALUES)
        self.values: list[bytes] = [rng.bytes(int(s)) for s in sizes]


def key_names(n: int) -> list[str]:
    return [f"key:{i:06d}" for i in range(n)]


def preload_values(cfg: dict[str, Any]) -> tuple[bytes, Any, Any]:
    """(pool, offsets, sizes): key i's preloaded value is pool[off[i] : off[i] + size[i]]."""
    import numpy as np

    rng = np.random.default_rng([cfg["seed"], 7])
    pool = rng.bytes((1 << 20) + cfg["vmax"])
    offs = rng.integers(0, 1 << 20, size=cfg["keys"])
    sizes = rng.integers(cfg["vmin"], cfg["vmax"] + 1, size=cfg["keys"])
    return pool, offs, sizes


class Recorder:
    """Op counts per time window and get latencies of one worker."""

    def __init__(self, start_ns: int, seconds: float, window_s: float) -> None:
        self.start = start_ns
        self.win = int(window_s * 1e9)
        self.counts = [0] * (int(seconds / window_s) + 2)
        self.lat: list[int] = []
        self.lat_hit: list[int] = []
        self.lat_miss: list[int] = []
        self.ops = 0
        self.gets = 0
        self.hits = 0
        self.misses = 0
        self.batches = 0  # cluster async: batch calls made (diagnostic, private counter)

    def done(self, t1: int, n: int = 1) -> None:
        w = (t1 - self.start) // self.win
        if 0 <= w < len(self.counts):
            self.counts[w] += n
        self.ops += n

    def result(self, elapsed: float, **extra: Any) -> dict[str, Any]:
        import numpy as np

        out = {
            "ops": self.ops,
            "gets": self.gets,
            "hits": self.hits,
            "misses": self.misses,
            "batches": self.batches,
            "counts": self.counts,
            "elapsed": elapsed,
            "lat": np.asarray(self.lat, dtype=np.int64),
            "lat_hit": np.asarray(self.lat_hit, dtype=np.int64),
            "lat_miss": np.asarray(self.lat_miss, dtype=np.int64),
        }
        out.update(extra)
        return out


def _sync_loop(
    mix: Mix,
    get: Callable[[int], Any],
    put: Callable[[int, bytes], Any],
    rec: Recorder,
    end_ns: int,
    probe: Callable[[], int] | None = None,
) -> None:
    """One op at a time; ``probe()`` (a near-hit counter) splits get latencies."""
    pc = time.perf_counter_ns
    idx, write, values = mix.idx, mix.write, mix.values
    n, nv = len(idx), len(values)
    lat, lat_hit, lat_miss = rec.lat, rec.lat_hit, rec.lat_miss
    j = 0
    while j < MAX_OPS:
        t0 = pc()
        if t0 >= end_ns:
            break
        k = j % n
        if write[k]:
            put(idx[k], values[j % nv])
            t1 = pc()
        elif probe is None:
            get(idx[k])
            t1 = pc()
            lat.append(t1 - t0)
        else:
            h0 = probe()
            get(idx[k])
            t1 = pc()
            lat.append(t1 - t0)
            (lat_hit if probe() != h0 else lat_miss).append(t1 - t0)
        rec.done(t1)
        j += 1
    rec.gets = len(lat)


def _chunk_loop(
    mix: Mix,
    run_chunk: Callable[[list[int], list[bool], list[bytes]], Any],
    size: int,
    rec: Recorder,
    end_ns: int,
    reads_only: bool,
) -> None:
    """Pipelines / batches of ``size`` ops; each get waits for its whole chunk."""
    pc = time.perf_counter_ns
    idx, write, values = mix.idx, mix.write, mix.values
    n, nv = len(idx), len(values)
    j = 0
    gets = 0
    while j < MAX_OPS:
        t0 = pc()
        if t0 >= end_ns:
            break
        ks = [idx[(j + i) % n] for i in range(size)]
        ws = [False] * size if reads_only else [write[(j + i) % n] for i in range(size)]
        vs = [values[(j + i) % nv] for i in range(size)]
        run_chunk(ks, ws, vs)
        t1 = pc()
        g = size - sum(ws)
        rec.lat.extend([t1 - t0] * (1 if reads_only else g))
        gets += g
        rec.done(t1, size)
        j += size
    rec.gets = gets


async def _async_loop(
    mix: Mix,
    aget: Callable[[int], Any],
    aput: Callable[[int, bytes], Any],
    rec: Recorder,
    end_ns: int,
    inflight: int,
) -> None:
    pc = time.perf_counter_ns
    idx, write, values = mix.idx, mix.write, mix.values
    n, nv = len(idx), len(values)
    nxt = 0
    lat = rec.lat

    async def one() -> None:
        nonlocal nxt
        while nxt < MAX_OPS:
            t0 = pc()
            if t0 >= end_ns:
                return
            j = nxt
            nxt += 1
            k = j % n
            if write[k]:
                await aput(idx[k], values[j % nv])
                t1 = pc()
            else:
                await aget(idx[k])
                t1 = pc()
                lat.append(t1 - t0)
            rec.done(t1)

    await asyncio.gather(*(one() for _ in range(inflight)))
    rec.gets = len(lat)


async def _trace_loop(
    mix: Mix,
    aget: Callable[[int], Any],
    aput: Callable[[int, bytes], Any],
    is_miss: Callable[[Any], bool],
    rec: Recorder,
    count: int,
    cap_ns: int,
    inflight: int,
) -> None:
    """``count`` requests (get; set on a miss), ``inflight`` at a time, until ``cap_ns``."""
    pc = time.perf_counter_ns
    idx, values = mix.idx, mix.values
    n, nv = len(idx), len(values)
    nxt = 0

    async def one() -> None:
        nonlocal nxt
        while nxt < count:
            t0 = pc()
            if t0 >= cap_ns:
                return
            j = nxt
            nxt += 1
            k = idx[j % n]
            if is_miss(await aget(k)):
                rec.misses += 1
                await aput(k, values[j % nv])
            else:
                rec.hits += 1
            t1 = pc()
            rec.lat.append(t1 - t0)
            rec.done(t1)

    await asyncio.gather(*(one() for _ in range(inflight)))
    rec.gets = rec.hits + rec.misses


def _close_near(client: Any) -> dict[str, int] | None:
    """Stop this process's near-cache poller (worker processes are reused by the next
    phase) and return its counters. There is no public API for either (see the report)."""
    from omnicache_cluster._near import near_of

    state = client._state
    near = near_of(client)
    out = None if near is None else {"hits": near.hits, "misses": near.misses}
    state.close()
    return out


def run_worker(spec: dict[str, Any], worker: int, barrier: Any) -> dict[str, Any]:
    """One worker process of one phase: set up, warm up, wait for all, run, report."""
    import ray

    cfg, system = spec["cfg"], spec["system"]
    trace = spec.get("trace", False)
    mix = Mix(cfg, worker, salt=2 if trace else 1, length=spec.get("seq_len", SEQ_LEN))
    names = [PROMPT.format(i) for i in range(cfg["keys"])] if trace else key_names(cfg["keys"])
    vmin, vmax = cfg["vmin"], cfg["vmax"]
    kind = spec["kind"]
    closers: list[Callable[[], Any]] = []
    extra: dict[str, Any] = {}

    def check(value: Any) -> None:
        if not (isinstance(value, bytes) and vmin <= len(value) <= vmax):
            raise RuntimeError(f"{system}: bad value read back: {type(value).__name__}")

    def wait_start() -> tuple[int, int]:
        start_wall = ray.get(barrier.wait.remote(), timeout=300)
        start_ns = time.perf_counter_ns() + int((start_wall - time.time()) * 1e9)
        while time.perf_counter_ns() < start_ns:
            time.sleep(0.001)
        return start_ns, start_ns + int(spec["seconds"] * 1e9)

    def warm(fn: Callable[[int], Any]) -> None:
        stop = time.perf_counter() + spec.get("warmup_s", 0.25)
        i = 0
        while time.perf_counter() < stop and i < 200_000:
            fn(mix.idx[-1 - i % len(mix.idx)])
            i += 1

    try:
        if kind == "sync":
            get, put, probe = _sync_ops(spec, names, closers)
            if not trace:
                check(get(mix.idx[0]))
            warm(get)
            if spec.get("near"):
                from omnicache_cluster._near import near_of

                near = near_of(spec["client"])  # the process's near-cache: hit counter
                probe = (lambda: near.hits) if near is not None else None
            start, end = wait_start()
            rec = Recorder(start, spec["seconds"], spec["window"])
            _sync_loop(mix, get, put, rec, end, probe)
        elif kind == "chunk":
            run_chunk, single = _chunk_ops(spec, names, closers)
            check(single(mix.idx[0]))
            warm(single)
            start, end = wait_start()
            rec = Recorder(start, spec["seconds"], spec["window"])
            _chunk_loop(mix, run_chunk, spec["chunk"], rec, end, spec.get("reads_only", False))
        elif kind == "async":
            rec = asyncio.run(_async_main(spec, mix, names, check, wait_start))
        else:
            raise ValueError(kind)
        elapsed = (time.perf_counter_ns() - rec.start) / 1e9
        if spec.get("near"):
            extra["near"] = _close_near(spec["client"])
        return rec.result(elapsed, **extra)
    finally:
        if spec.get("near"):  # also on failure: the process is reused by the next phase
            _close_near(spec["client"])
        for fn in reversed(closers):
            try:
                fn()
            except Exception as exc:
                logging.getLogger(__name__).warning("worker cleanup: %r", exc)


def _sync_ops(
    spec: dict[str, Any], names: list[str], closers: list[Callable[[], Any]]
) -> tuple[Callable[[int], Any], Callable[[int, bytes], Any], None]:
    system = spec["system"]
    if system == REDIS:
        import redis

        r = redis.Redis(host="127.0.0.1", port=spec["redis_port"])
        closers.append(r.close)
        r_get, r_set = r.get, r.set
        return (lambda i: r_get(names[i])), (lambda i, v: r_set(names[i], v)), None
    if system in (CLUSTER, CLUSTER_RAY, CLUSTER_NEAR):
        c = spec["client"]
        c_get, c_set = c.get, c.set
        return (lambda i: c_get(names[i])), (lambda i, v: c_set(names[i], v)), None
    if system == BARE:
        import ray

        actors = spec["actors"]
        s = len(actors)
        gets = [a.get.remote for a in actors]
        sets = [a.set.remote for a in actors]
        return (
            (lambda i: ray.get(gets[i % s](names[i]))),
            (lambda i, v: ray.get(sets[i % s](names[i], v))),
            None,
        )
    raise ValueError(system)


def _chunk_ops(
    spec: dict[str, Any], names: list[str], closers: list[Callable[[], Any]]
) -> tuple[Callable[[list[int], list[bool], list[bytes]], Any], Callable[[int], Any]]:
    system = spec["system"]
    if system == REDIS_PIPE:
        import redis

        r = redis.Redis(host="127.0.0.1", port=spec["redis_port"])
        closers.append(r.close)

        def pipelined(ks: list[int], ws: list[bool], vs: list[bytes]) -> Any:
            pipe = r.pipeline(transaction=False)
            for k, w, v in zip(ks, ws, vs, strict=True):
                if w:
                    pipe.set(names[k], v)
                else:
                    pipe.get(names[k])
            return pipe.execute()

        return pipelined, lambda i: r.get(names[i])
    if system == REDIS_MGET:
        import redis

        r = redis.Redis(host="127.0.0.1", port=spec["redis_port"])
        closers.append(r.close)
        return (lambda ks, _ws, _vs: r.mget([names[k] for k in ks])), (lambda i: r.get(names[i]))
    if system == CLUSTER_BATCH:
        c = spec["client"]
        return (lambda ks, _ws, _vs: c.get_many([names[k] for k in ks])), (
            lambda i: c.get(names[i])
        )
    if system == BARE_BATCH:
        import ray

        actors = spec["actors"]
        s = len(actors)

        def fanout(ks: list[int], _ws: list[bool], _vs: list[bytes]) -> Any:
            parts: list[list[str]] = [[] for _ in range(s)]
            for k in ks:
                parts[k % s].append(names[k])
            return ray.get([a.get_many.remote(p) for a, p in zip(actors, parts, strict=True) if p])

        return fanout, lambda i: ray.get(actors[i % s].get.remote(names[i]))
    raise ValueError(system)


async def _async_main(
    spec: dict[str, Any],
    mix: Mix,
    names: list[str],
    check: Callable[[Any], None],
    wait_start: Callable[[], tuple[int, int]],
) -> Recorder:
    system = spec["system"]
    trace = spec.get("trace", False)
    closers: list[Callable[[], Any]] = []
    if system == T_REDIS:
        import redis.asyncio as aredis

        r = aredis.Redis(host="127.0.0.1", port=spec["redis_port"], db=spec["redis_db"])
        closers.append(r.aclose)

        async def aget(i: int) -> Any:
            return await r.get(names[i])

        async def aput(i: int, v: bytes) -> Any:
            return await r.set(names[i], v)

        def is_miss(v: Any) -> bool:
            return v is None
    else:
        from omnicache_cluster import MISS

        c = spec["client"]

        async def aget(i: int) -> Any:
            return await c.aget(names[i])

        async def aput(i: int, v: bytes) -> Any:
            return await c.aset(names[i], v)

        def is_miss(v: Any) -> bool:
            return v is MISS

    try:
        if not trace:
            check(await aget(mix.idx[0]))
        # Warm up on keys outside the trace's sequence start (a cold trace stays cold
        # enough: these are a handful of keys).
        stop = time.perf_counter() + spec.get("warmup_s", 0.25)
        i = 0
        while time.perf_counter() < stop and i < 200:
            await aget(mix.idx[-1 - i])
            i += 1
        start, end = await asyncio.to_thread(wait_start)
        rec = Recorder(start, spec["seconds"], spec["window"])
        batcher = None
        if system != T_REDIS:
            from omnicache_cluster._batching import async_batcher

            batcher = async_batcher(spec["client"]._state)
            b0 = batcher.batches
        if trace:
            await _trace_loop(mix, aget, aput, is_miss, rec, spec["count"], end, INFLIGHT)
        else:
            await _async_loop(mix, aget, aput, rec, end, INFLIGHT)
        if batcher is not None:
            rec.batches = batcher.batches - b0
        return rec
    finally:
        for fn in reversed(closers):
            await fn()


# --------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------


def bare_actor_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class BareDict:
        """The floor: a plain async actor holding a dict."""

        def __init__(self) -> None:
            self.d: dict[str, bytes] = {}

        async def load(self, items: dict[str, bytes]) -> int:
            self.d.update(items)
            return len(self.d)

        async def get(self, k: str) -> bytes | None:
            return self.d.get(k)

        async def set(self, k: str, v: bytes) -> None:
            self.d[k] = v

        async def get_many(self, ks: list[str]) -> list[bytes | None]:
            d = self.d
            return [d.get(k) for k in ks]

    return BareDict


def barrier_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Barrier:
        """Releases all ``parties`` callers together, with a common start time."""

        def __init__(self, parties: int, delay_s: float) -> None:
            self.parties = parties
            self.delay_s = delay_s
            self.arrived = 0
            self.start = 0.0
            self.event: asyncio.Event | None = None

        async def wait(self) -> float:
            if self.event is None:
                self.event = asyncio.Event()
            self.arrived += 1
            if self.arrived >= self.parties:
                self.start = time.time() + self.delay_s
                self.event.set()
            await asyncio.wait_for(self.event.wait(), 240)
            return self.start

    return Barrier


class Phases:
    """Runs phases (``P`` worker tasks each) and keeps their raw results by system."""

    def __init__(self, workers: int, cpus: float, window: float) -> None:
        import ray

        self.ray = ray
        self.workers = workers
        self.window = window
        frac = max(0.0001, round(min(1.0, 0.9 * cpus / workers), 4))
        self.task = ray.remote(num_cpus=frac, max_retries=0)(run_worker)
        self.barrier_cls = barrier_class()
        self.raw: dict[str, list[list[dict[str, Any]]]] = {}

    def run(self, spec: dict[str, Any], workers: int | None = None) -> list[dict[str, Any]]:
        ray = self.ray
        p = workers or self.workers
        spec = {"window": self.window, **spec}
        barrier = self.barrier_cls.remote(p, 0.2)
        try:
            refs = [self.task.remote(spec, w, barrier) for w in range(p)]
            cap = spec.get("cap_s", spec["seconds"])
            out = ray.get(refs, timeout=cap + 300)
        finally:
            ray.kill(barrier, no_restart=True)
        self.raw.setdefault(spec["system"], []).append(out)
        return out


def _pct(values: Any, q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q * 100)) / 1e3 if len(values) else float("nan")


def summarize(rounds: list[list[dict[str, Any]]], seconds: float, window: float) -> dict[str, Any]:
    """Aggregate ops/s (per round and median of windows) and get latency percentiles."""
    import numpy as np

    totals, windows = [], []
    full = int(seconds / window + 1e-9)
    for out in rounds:
        totals.append(sum(r["ops"] for r in out) / max(r["elapsed"] for r in out))
        summed = np.sum([r["counts"][:full] for r in out], axis=0)
        windows.extend((summed / window).tolist())
    lat = np.concatenate([r["lat"] for out in rounds for r in out])
    row: dict[str, Any] = {
        "rounds": len(rounds),
        "ops": int(sum(r["ops"] for out in rounds for r in out)),
        "gets": int(sum(r["gets"] for out in rounds for r in out)),
        "ops_per_s": statistics.median(totals),
        "ops_per_s_rounds": totals,
        "ops_per_s_window_median": statistics.median(windows) if windows else float("nan"),
        "windows": len(windows),
        "get_p50_us": _pct(lat, 0.50),
        "get_p99_us": _pct(lat, 0.99),
    }
    batches = sum(r["batches"] for out in rounds for r in out)
    if batches:
        row["ops_per_batch_call"] = row["ops"] / batches
    hit = np.concatenate([r["lat_hit"] for out in rounds for r in out])
    miss = np.concatenate([r["lat_miss"] for out in rounds for r in out])
    if len(hit) or len(miss):
        row["near_hit_p50_us"] = _pct(hit, 0.50)
        row["near_hit_p99_us"] = _pct(hit, 0.99)
        row["near_miss_p50_us"] = _pct(miss, 0.50)
        row["near_hit_rate"] = len(hit) / (len(hit) + len(miss))
    return row


def summarize_trace(rounds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    import numpy as np

    rates, hit_rates = [], []
    capped = False
    near_hits = near_lookups = 0
    for out in rounds:
        ops = sum(r["ops"] for r in out)
        rates.append(ops / max(r["elapsed"] for r in out))
        hits = sum(r["hits"] for r in out)
        hit_rates.append(hits / max(1, hits + sum(r["misses"] for r in out)))
        for r in out:
            if r.get("near"):
                near_hits += r["near"]["hits"]
                near_lookups += r["near"]["hits"] + r["near"]["misses"]
        capped = capped or any(r["capped"] for r in out)
    lat = np.concatenate([r["lat"] for out in rounds for r in out])
    row = {
        "rounds": len(rounds),
        "requests": int(sum(r["ops"] for out in rounds for r in out)),
        "requests_per_s": statistics.median(rates),
        "requests_per_s_rounds": rates,
        "hit_rate": statistics.median(hit_rates),
        "request_p50_us": _pct(lat, 0.50),
        "request_p99_us": _pct(lat, 0.99),
        "hit_time_capped": capped,
    }
    if near_lookups:
        row["near_hit_rate"] = near_hits / near_lookups
    batches = sum(r["batches"] for out in rounds for r in out)
    if batches:  # a request is 1-2 ops (get, set on a miss)
        ops = sum(r["hits"] + 2 * r["misses"] for out in rounds for r in out)
        row["ops_per_batch_call"] = ops / batches
    return row


def machine_info() -> dict[str, Any]:
    import ray

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "sched_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ray": ray.__version__,
    }
    for mod in ("redis", "hiredis", "numpy"):
        try:
            info[mod] = getattr(__import__(mod), "__version__", "installed")
        except ImportError:
            info[mod] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def preload(
    cfg: dict[str, Any],
    cluster: Any = None,
    actors: list[Any] | None = None,
    redis_client: Any = None,
    chunk: int = 500,
) -> dict[str, float]:
    """Store every key in each given system; return seconds per system."""
    import ray

    pool, offs, sizes = preload_values(cfg)
    names = key_names(cfg["keys"])
    took: dict[str, float] = {}

    def chunks() -> Any:
        for s in range(0, cfg["keys"], chunk):
            yield {
                names[i]: pool[int(offs[i]) : int(offs[i]) + int(sizes[i])]
                for i in range(s, min(cfg["keys"], s + chunk))
            }

    if redis_client is not None:
        t = time.perf_counter()
        for items in chunks():
            redis_client.mset(items)
        took["redis"] = time.perf_counter() - t
    if cluster is not None:
        t = time.perf_counter()
        for items in chunks():
            cluster.set_many(items)
        took["cluster"] = time.perf_counter() - t
    if actors:
        t = time.perf_counter()
        s = len(actors)
        for items in chunks():
            parts: list[dict[str, bytes]] = [{} for _ in range(s)]
            for k, v in items.items():
                parts[int(k[4:]) % s][k] = v
            ray.get([a.load.remote(p) for a, p in zip(actors, parts, strict=True) if p])
        took["bare"] = time.perf_counter() - t
    return took


def print_rows(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    head = (
        f"{'system':<{NAME_W}} {'ops/s':>10} {'ops/s med':>10} {'keys/op':>7} "
        f"{'get p50 µs':>11} {'get p99 µs':>11}  notes"
    )
    print(head)
    print("-" * (len(head) + 20))
    for name, r in rows.items():
        notes = ""
        if "near_hit_p50_us" in r:
            notes = (
                f"near hit {r['near_hit_rate']:.0%}: p50 {r['near_hit_p50_us']:.1f} µs / "
                f"p99 {r['near_hit_p99_us']:.1f}; miss p50 {r['near_miss_p50_us']:.0f} µs"
            )
        if r.get("keys_per_op", 1) > 1:
            notes = f"p50 = one batch; {r['ops_per_s_window_median']:,.0f} keys/s (median)"
        if "ops_per_batch_call" in r:
            notes = f"{r['ops_per_batch_call']:.1f} ops per batch call"
        print(
            f"{name:<{NAME_W}} {r['ops_per_s']:10,.0f} {r['ops_per_s_window_median']:10,.0f} "
            f"{r.get('keys_per_op', 1):7} {r['get_p50_us']:11.1f} {r['get_p99_us']:11.1f}  {notes}"
        )


def ratio(value: float, target: float | None, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if target is not None:
        out["target_" + kind] = target
        out["meets_target"] = value <= target if kind == "max" else value >= target
    return out


def print_ratios(ratios: dict[str, dict[str, Any]]) -> None:
    print("\nratios")
    for name, r in ratios.items():
        line = f"  {name:<70} {r['value']:9.3f}"
        for kind, op in (("max", "<="), ("min", ">=")):
            if "target_" + kind in r:
                verdict = "ok" if r["meets_target"] else "MISSES TARGET"
                line += f"   (target {op} {r['target_' + kind]:.3g}: {verdict})"
        print(line)


def selected(args: argparse.Namespace, system: str) -> bool:
    """Whether ``--only`` (substrings of system names) lets ``system`` run."""
    return not args.only or any(part in system for part in args.only)


def compute_ratios(
    rows: dict[str, dict[str, Any]], trows: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The ratios issue 8 asks for (with targets), for the systems that ran."""
    ratios: dict[str, dict[str, Any]] = {}
    near_row = rows.get(CLUSTER_NEAR, {})
    if REDIS in rows and "near_hit_p50_us" in near_row:
        ratios["near-cache hit p50 / redis GET p50"] = ratio(
            near_row["near_hit_p50_us"] / rows[REDIS]["get_p50_us"], TARGET_NEAR_VS_REDIS, "max"
        )
    if CLUSTER in rows and BARE in rows:
        ratios["cluster single-key get p50 / bare actor get p50"] = ratio(
            rows[CLUSTER]["get_p50_us"] / rows[BARE]["get_p50_us"], TARGET_GET_VS_BARE, "max"
        )
        ratios["cluster single-key ops/s / bare actor ops/s"] = ratio(
            rows[CLUSTER]["ops_per_s_window_median"] / rows[BARE]["ops_per_s_window_median"],
            None,
            "min",
        )
    if CLUSTER_RAY in rows and BARE in rows:
        ratios["cluster single-key get p50 via Ray calls / bare actor get p50"] = ratio(
            rows[CLUSTER_RAY]["get_p50_us"] / rows[BARE]["get_p50_us"], None, "max"
        )
    if CLUSTER_BATCH in rows and BARE_BATCH in rows:
        ratios[f"cluster get_many({BATCH}) keys/s / bare actor batches keys/s"] = ratio(
            rows[CLUSTER_BATCH]["ops_per_s_window_median"]
            / rows[BARE_BATCH]["ops_per_s_window_median"],
            None,
            "min",
        )
    if REDIS in rows:
        for name in (CLUSTER, CLUSTER_RAY, CLUSTER_NEAR, CLUSTER_ASYNC):
            if name in rows:
                ratios[f"mixed: {name} ops/s / redis-py ops/s"] = ratio(
                    rows[name]["ops_per_s_window_median"] / rows[REDIS]["ops_per_s_window_median"],
                    None,
                    "min",
                )
    if T_REDIS in trows:
        red = trows[T_REDIS]["requests_per_s"]
        for name in (T_CLUSTER, T_CLUSTER_NEAR, T_CLUSTER_NEAR_RAY):
            if name in trows:
                ratios[f"{name} req/s / redis.asyncio req/s"] = ratio(
                    trows[name]["requests_per_s"] / red, TARGET_TRACE_VS_REDIS, "min"
                )
    return ratios


def run_default(args: argparse.Namespace, cfg: dict[str, Any], report: dict[str, Any]) -> None:
    import ray

    from bench._servers import start_redis_server, stop
    from omnicache_cluster import CacheCluster, NearCacheOptions

    cpus = float(os.cpu_count() or 2)
    redis_proc = None
    cluster = None
    actors: list[Any] = []
    try:
        ray.init(
            num_cpus=int(cpus),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
        )
        redis_port = None
        rclient = None
        if not args.no_redis:
            import redis

            redis_proc, redis_port = start_redis_server()
            rclient = redis.Redis(host="127.0.0.1", port=redis_port)
            print(f"redis-server on 127.0.0.1:{redis_port}", flush=True)
        t = time.perf_counter()
        per_shard = max(256 << 20, 3 * cfg["keys"] * cfg["vmax"] // args.shards)
        cluster = CacheCluster.start(
            num_shards=args.shards, namespace=NAMESPACE, max_bytes_per_shard=per_shard
        )
        bare = bare_actor_class()
        actors = [bare.remote() for _ in range(args.shards)]
        print(
            f"cluster ({args.shards} shards) + {args.shards} bare actors up in "
            f"{time.perf_counter() - t:.1f}s",
            flush=True,
        )
        took = preload(cfg, cluster, actors, rclient)
        report["preload_s"] = took
        print(
            "preloaded {:,} keys: {}".format(
                cfg["keys"], ", ".join(f"{k} {v:.1f}s" for k, v in took.items())
            ),
            flush=True,
        )

        near_opts = NearCacheOptions(
            staleness_s=1.0, max_entries=args.near_entries, max_bytes=args.near_entries * 4200
        )
        sync_client = cluster.with_options(batching=False)
        near_client = cluster.with_options(batching=False, near_cache=near_opts)
        async_client = cluster.with_options(batching=True)
        ray_client = cluster.with_options(batching=False, fast_path=False)
        base = {"cfg": cfg, "seconds": args.seconds, "redis_port": redis_port}
        specs: list[dict[str, Any]] = []
        if redis_port is not None:
            specs += [
                {"system": REDIS, "kind": "sync"},
                {"system": REDIS_PIPE, "kind": "chunk", "chunk": PIPELINE},
            ]
        specs += [
            {"system": BARE, "kind": "sync", "actors": actors},
            {
                "system": BARE_BATCH,
                "kind": "chunk",
                "chunk": BATCH,
                "reads_only": True,
                "actors": actors,
            },
            {"system": CLUSTER, "kind": "sync", "client": sync_client},
            {"system": CLUSTER_RAY, "kind": "sync", "client": ray_client},
            {
                "system": CLUSTER_BATCH,
                "kind": "chunk",
                "chunk": BATCH,
                "reads_only": True,
                "client": sync_client,
            },
            {"system": CLUSTER_ASYNC, "kind": "async", "client": async_client},
            # A longer warm-up: the near-cache is measured warm, as in a long-lived process.
            {
                "system": CLUSTER_NEAR,
                "kind": "sync",
                "client": near_client,
                "near": True,
                "warmup_s": args.near_warmup,
            },
        ]
        specs = [sp for sp in specs if selected(args, sp["system"])]
        phases = Phases(args.workers, cpus, WINDOW_S)
        # Warm the worker processes (start-up, imports) before anything is timed.
        phases.run(
            {**base, "system": CLUSTER, "kind": "sync", "client": sync_client, "seconds": 0.5}
        )
        phases.raw.clear()
        t = time.perf_counter()
        for rnd in range(args.rounds):
            for spec in specs:
                phases.run({**base, **spec})
            print(
                f"mixed workload round {rnd + 1}/{args.rounds} done "
                f"({time.perf_counter() - t:.0f}s)",
                flush=True,
            )
        rows: dict[str, dict[str, Any]] = {}
        for spec in specs:
            row = summarize(phases.raw[spec["system"]], args.seconds, WINDOW_S)
            row["keys_per_op"] = spec["chunk"] if spec.get("reads_only") else 1
            rows[spec["system"]] = row
        report["mixed"] = rows

        # -- the LLM-cache trace ------------------------------------------------------
        trace_client = async_client.with_key_namespace(TRACE_KEY_NS)
        trace_near = cluster.with_options(batching=True, near_cache=near_opts)
        trace_near = trace_near.with_key_namespace(TRACE_KEY_NS)
        tbase = {
            "cfg": cfg,
            "seconds": TRACE_CAP_S,
            "cap_s": TRACE_CAP_S,
            "trace": True,
            "count": args.trace_count,
            "kind": "async",
            "redis_port": redis_port,
            "redis_db": 1,
            "seq_len": args.trace_count,
        }
        tspecs: list[dict[str, Any]] = []
        if redis_port is not None:
            tspecs.append({"system": T_REDIS})
        tspecs += [
            {"system": T_CLUSTER, "client": trace_client},
            {"system": T_CLUSTER_NEAR, "client": trace_near, "near": True},
            {
                "system": T_CLUSTER_NEAR_RAY,
                "client": trace_near.with_options(fast_path=False),
                "near": True,
            },
        ]
        tspecs = [sp for sp in tspecs if selected(args, sp["system"])]
        t = time.perf_counter()
        for rnd in range(args.rounds):
            for spec in tspecs:  # every system starts cold
                if rclient is not None:
                    rclient.execute_command("SELECT", 1)
                    rclient.flushdb()
                    rclient.execute_command("SELECT", 0)
                trace_client.clear()
                out = phases.run({**tbase, **spec})
                for r in out:
                    r["capped"] = r["ops"] < args.trace_count
            print(
                f"trace round {rnd + 1}/{args.rounds} done ({time.perf_counter() - t:.0f}s)",
                flush=True,
            )
        trows = {s["system"]: summarize_trace(phases.raw[s["system"]]) for s in tspecs}
        report["trace"] = trows

        # -- print ----------------------------------------------------------------------
        print_rows(
            f"1. mixed workload: {args.workers} workers, {cfg['keys']:,} keys Zipf({ZIPF_S}), "
            f"{READ_FRACTION:.0%} reads, values {cfg['vmin']}-{cfg['vmax']} B, "
            f"{args.rounds} x {args.seconds:g}s per system ('ops/s med': median of "
            f"{WINDOW_S:g}s windows)",
            rows,
        )
        print(
            f"\n2. LLM-cache trace: {args.workers} workers x {INFLIGHT} in flight, "
            f"{args.trace_count:,} requests per worker, cold start, {args.rounds} rounds"
        )
        print(f"{'system':<{NAME_W}} {'req/s':>10} {'hit rate':>9} {'p50 µs':>9} {'p99 µs':>9}")
        for name, r in trows.items():
            near = (
                f"  near hits {r['near_hit_rate']:.0%} of lookups" if "near_hit_rate" in r else ""
            )
            cap = "  (time cap hit)" if r["hit_time_capped"] else ""
            if "ops_per_batch_call" in r:
                cap += f"  {r['ops_per_batch_call']:.1f} ops per batch call"
            print(
                f"{name:<{NAME_W}} {r['requests_per_s']:10,.0f} {r['hit_rate']:9.1%} "
                f"{r['request_p50_us']:9.0f} {r['request_p99_us']:9.0f}{near}{cap}"
            )

        ratios = compute_ratios(rows, trows)
        print_ratios(ratios)
        report["ratios"] = ratios
    finally:
        if cluster is not None:
            try:
                cluster.shutdown()
            except Exception as exc:
                print(f"cluster shutdown: {exc!r}", file=sys.stderr)
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception as exc:
                print(f"kill actor: {exc!r}", file=sys.stderr)
        if ray.is_initialized():
            ray.shutdown()
        stop(redis_proc)


def run_scaling(args: argparse.Namespace, cfg: dict[str, Any], report: dict[str, Any]) -> None:
    import ray

    from bench._servers import start_redis_server, stop
    from omnicache_cluster import CacheCluster

    cpus = float(os.cpu_count() or 2)
    shard_counts = [int(s) for s in args.scaling_shards.split(",")]
    rows: list[dict[str, Any]] = []
    redis_proc = redis_port = rclient = None
    if not args.no_redis:
        import redis

        # One redis-server (single-threaded) as the anchor, preloaded once.
        redis_proc, redis_port = start_redis_server()
        rclient = redis.Redis(host="127.0.0.1", port=redis_port)
        preload(cfg, redis_client=rclient)
        print(f"redis-server on 127.0.0.1:{redis_port}, preloaded", flush=True)
    ray.init(
        num_cpus=int(cpus),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
    )
    try:
        bare = bare_actor_class()
        for s in shard_counts:
            workers = 2 * s
            cluster = None
            actors: list[Any] = []
            try:
                t = time.perf_counter()
                per_shard = max(256 << 20, 3 * cfg["keys"] * cfg["vmax"] // s)
                cluster = CacheCluster.start(
                    num_shards=s, namespace=f"{NAMESPACE}-s{s}", max_bytes_per_shard=per_shard
                )
                actors = [bare.remote() for _ in range(s)]
                took = preload(cfg, cluster, actors)
                print(f"{s} shards: up + preloaded in {time.perf_counter() - t:.1f}s", flush=True)
                client = cluster.with_options(batching=False)
                base = {"cfg": cfg, "seconds": args.seconds, "reads_only": True}
                base["cfg"] = {**cfg, "read_fraction": 1.0}  # dict lookups only
                base["redis_port"] = redis_port
                specs = [
                    {"system": CLUSTER, "kind": "sync", "client": client},
                    {"system": BARE, "kind": "sync", "actors": actors},
                    {"system": CLUSTER_BATCH, "kind": "chunk", "chunk": BATCH, "client": client},
                    {"system": BARE_BATCH, "kind": "chunk", "chunk": BATCH, "actors": actors},
                ]
                if redis_port is not None:
                    specs += [
                        {"system": REDIS, "kind": "sync"},
                        {"system": REDIS_MGET, "kind": "chunk", "chunk": BATCH},
                    ]
                phases = Phases(workers, cpus, WINDOW_S)
                phases.run({**base, **specs[0], "seconds": 0.2})  # warm the processes
                phases.raw.clear()
                for _ in range(args.rounds):
                    for spec in specs:
                        phases.run({**base, **spec})
                res = {
                    sp["system"]: summarize(phases.raw[sp["system"]], args.seconds, WINDOW_S)
                    for sp in specs
                }
                row = {
                    "shards": s,
                    "workers": workers,
                    "preload_s": took,
                    "cluster_get_calls_per_s": res[CLUSTER]["ops_per_s_window_median"],
                    "bare_get_calls_per_s": res[BARE]["ops_per_s_window_median"],
                    "cluster_get_p50_us": res[CLUSTER]["get_p50_us"],
                    "bare_get_p50_us": res[BARE]["get_p50_us"],
                    "cluster_get_many_keys_per_s": res[CLUSTER_BATCH]["ops_per_s_window_median"],
                    "bare_get_many_keys_per_s": res[BARE_BATCH]["ops_per_s_window_median"],
                    "redis_get_calls_per_s": res.get(REDIS, {}).get("ops_per_s_window_median"),
                    "redis_mget_keys_per_s": res.get(REDIS_MGET, {}).get("ops_per_s_window_median"),
                    "ref_bare_get_calls_per_s": REF_SINGLE.get(s),
                    "ref_bare_get_many_keys_per_s": REF_BATCH.get(s),
                    "detail": res,
                }
                rows.append(row)
                print(
                    f"  get {row['cluster_get_calls_per_s']:,.0f} vs bare "
                    f"{row['bare_get_calls_per_s']:,.0f} calls/s; get_many "
                    f"{row['cluster_get_many_keys_per_s']:,.0f} vs bare "
                    f"{row['bare_get_many_keys_per_s']:,.0f} keys/s",
                    flush=True,
                )
            finally:
                if cluster is not None:
                    cluster.shutdown()
                for a in actors:
                    ray.kill(a, no_restart=True)
    finally:
        ray.shutdown()
        stop(redis_proc)
    report["scaling"] = rows
    print(
        f"\nscaling: {cfg['keys']:,} keys Zipf({ZIPF_S}), reads only, values "
        f"{cfg['vmin']}-{cfg['vmax']} B, workers = 2 x shards, median of {WINDOW_S:g}s "
        f"windows over {args.rounds} x {args.seconds:g}s; ref = bare actors measured on the "
        "16-core machine"
    )
    head = (
        f"{'shards':>6} {'workers':>7} | {'cluster get/s':>13} {'bare get/s':>11} "
        f"{'ratio':>6} {'ref bare':>9} {'redis GET/s':>11} | {'cluster keys/s':>14} "
        f"{'bare keys/s':>12} {'ratio':>6} {'ref bare':>9} {'redis MGET':>11}"
    )
    print(head)
    print("-" * len(head))

    def ref(v: float | None) -> str:
        return f"{v:9,.0f}" if v else f"{'-':>9}"

    def num(v: float | None, width: int) -> str:
        return f"{v:{width},.0f}" if v else f"{'-':>{width}}"

    for r in rows:
        print(
            f"{r['shards']:6} {r['workers']:7} | {r['cluster_get_calls_per_s']:13,.0f} "
            f"{r['bare_get_calls_per_s']:11,.0f} "
            f"{r['cluster_get_calls_per_s'] / r['bare_get_calls_per_s']:6.2f} "
            f"{ref(r['ref_bare_get_calls_per_s'])} {num(r['redis_get_calls_per_s'], 11)} | "
            f"{r['cluster_get_many_keys_per_s']:14,.0f} "
            f"{r['bare_get_many_keys_per_s']:12,.0f} "
            f"{r['cluster_get_many_keys_per_s'] / r['bare_get_many_keys_per_s']:6.2f} "
            f"{ref(r['ref_bare_get_many_keys_per_s'])} {num(r['redis_mget_keys_per_s'], 11)}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default: bench/results/workload.json, "
        "or workload_scaling.json with --scaling)",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--shards", type=int, default=2, help="cluster shards (default: 2)")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="timed seconds per system per round (default: 4; --quick 1.5)",
    )
    p.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default: 2; --quick 1)"
    )
    p.add_argument("--keys", type=int, default=100_000, help="distinct keys (default: 100000)")
    p.add_argument(
        "--trace-count",
        type=int,
        default=None,
        help="trace requests per worker (default: 20000; --quick 4000)",
    )
    p.add_argument(
        "--near-entries",
        type=int,
        default=20_000,
        help="near-cache max_entries per process (default: 20000)",
    )
    p.add_argument("--value-min", type=int, default=1024)
    p.add_argument("--value-max", type=int, default=4096)
    p.add_argument(
        "--near-warmup",
        type=float,
        default=1.5,
        help="untimed seconds of the near-cache system's own sequence before timing (default: 1.5)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SUBSTR",
        help="run only the systems whose name contains SUBSTR (repeatable)",
    )
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="about 1 minute smoke run")
    p.add_argument("--no-redis", action="store_true", help="skip the redis systems")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="shards 1,2,4,8 x workers 2 x shards (for a 16-core machine)",
    )
    p.add_argument(
        "--scaling-shards",
        default="1,2,4,8",
        help="shard counts for --scaling (default: %(default)s)",
    )
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 1.5 if args.quick else 4.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.trace_count is None:
        args.trace_count = 4000 if args.quick else 20_000
    if args.json is None:
        name = "workload_scaling.json" if args.scaling else "workload.json"
        args.json = ROOT / "bench" / "results" / name
    if min(args.workers, args.shards, args.rounds, args.keys - BATCH, args.trace_count) < 1:
        p.error("need --workers, --shards, --rounds, --trace-count >= 1 and --keys > 100")
    if not 0 < args.value_min <= args.value_max or args.seconds < WINDOW_S:
        p.error(f"need 0 < --value-min <= --value-max and --seconds >= {WINDOW_S}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench._servers import redis_server_binary, redis_server_problem

    if not args.scaling and not args.no_redis:
        problem = redis_server_problem(redis_server_binary())
        if problem:
            print(f"redis: {problem}; run with --no-redis to skip redis", file=sys.stderr)
            return 2
    cfg = {
        "keys": args.keys,
        "seed": args.seed,
        "zipf_s": ZIPF_S,
        "read_fraction": READ_FRACTION,
        "vmin": args.value_min,
        "vmax": args.value_max,
    }
    started = time.perf_counter()
    load_start = os.getloadavg()
    report: dict[str, Any] = {
        "benchmark": "workload_scaling" if args.scaling else "workload",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "workload": cfg,
            "inflight": INFLIGHT,
            "pipeline": PIPELINE,
            "batch": BATCH,
            "window_s": WINDOW_S,
        },
    }
    if args.scaling:
        run_scaling(args, cfg, report)
    else:
        run_default(args, cfg, report)
    report["machine"] = machine_info()
    # The machine may be shared: its load average (1, 5, 15 min) before and after.
    report["machine"]["loadavg_start"] = load_start
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["total_s"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"\nwrote {args.json}\ntotal {report['total_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
