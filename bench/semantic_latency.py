"""Semantic lookup latency (p50 / p99) at 10k, 100k and 1M stored 384-d vectors.

    .venv-bench/bin/python bench/semantic_latency.py [--sizes 10000 100000 1000000]

Systems, one run, same synthetic vectors (random unit vectors; each query is a stored
vector plus noise, so every lookup has a close neighbour):

* ``raw FAISS flat`` / ``raw FAISS HNSW``: faiss in this process (the floor);
* ``this cluster``: `SemanticIndex.search` through the semantic index actor (one Ray
  round trip; exact below 20k vectors, HNSW M=32 above);
* ``GPTCache faiss``: GPTCache 0.1.44's faiss vector store (``IndexFlatL2`` + id map),
  its ``search`` call;
* ``redisvl``: a redisvl ``SearchIndex`` (HNSW, cosine) on a local Redis Stack
  (RediSearch) server, one ``VectorQuery`` per lookup.

Writes ``bench/results/semantic_latency.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _semantic_common import RESULTS, RedisStack

DIM = 384


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.empty((n, DIM), dtype=np.float32)
    for i in range(0, n, 100_000):  # in chunks: keeps peak memory low at 1M
        x = rng.standard_normal((min(100_000, n - i), DIM), dtype=np.float32)
        out[i : i + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed(fn: Callable[[np.ndarray], Any], queries: np.ndarray) -> dict[str, float]:
    for q in queries[:20]:  # warm up
        fn(q)
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        lat.append((time.perf_counter() - t0) * 1000)
    a = np.array(lat)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "n": len(a),
    }


def raw_faiss(db: np.ndarray, queries: np.ndarray, hnsw: bool) -> dict[str, Any]:
    import faiss

    t0 = time.time()
    if hnsw:
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    else:
        index = faiss.IndexFlatIP(DIM)
    index.add(db)
    build = time.time() - t0
    res = timed(lambda q: index.search(q[None, :], 1), queries)
    return res | {"build_s": round(build, 1)}


def cluster_index(db: np.ndarray, queries: np.ndarray, ns: str) -> dict[str, Any]:
    from omnicache_cluster import CacheCluster
    from omnicache_cluster.semantic import SemanticIndex

    cluster = CacheCluster.start(
        num_shards=1,
        namespace=ns,
        ray_init={"num_cpus": 2, "include_dashboard": False},
        options=None,
    ).with_options(call_timeout_s=600.0, retry_deadline_s=600.0)
    try:
        index = SemanticIndex(cluster, "synthetic384", DIM)
        t0 = time.time()
        prefix = f"{cluster.key_namespace}:{cluster.tenant}:semantic:"
        for i in range(0, len(db), 20_000):
            chunk = db[i : i + 20_000]
            index.add([f"{prefix}{j:032x}" for j in range(i, i + len(chunk))], chunk)
        stats = index.stats()
        # The switch to HNSW is built in the background: measure the settled index.
        while stats.get("rebuilding") or "flat" in stats.get("kinds", {}):
            if len(db) < 20_000:  # stays exact below the threshold
                break
            time.sleep(0.5)
            stats = index.stats()
        build = time.time() - t0
        res = timed(lambda q: index.search(q, top_k=1), queries)
        return res | {"build_s": round(build, 1), "kinds": stats["kinds"]}
    finally:
        cluster.shutdown()


def gptcache_faiss(db: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    import tempfile

    from gptcache.manager import VectorBase
    from gptcache.manager.vector_data.base import VectorData

    path = Path(tempfile.mkdtemp()) / "gptcache.faiss"
    store = VectorBase("faiss", dimension=DIM, top_k=1, index_path=str(path))
    t0 = time.time()
    for i in range(0, len(db), 50_000):
        store.mul_add([VectorData(id=j, data=db[j]) for j in range(i, min(len(db), i + 50_000))])
    build = time.time() - t0
    res = timed(lambda q: store.search(q, top_k=1), queries)
    return res | {"build_s": round(build, 1)}


def redisvl_index(
    db: np.ndarray, queries: np.ndarray, stack: RedisStack, name: str
) -> dict[str, Any]:
    from redisvl.index import SearchIndex
    from redisvl.query import VectorQuery

    schema = {
        "index": {"name": name, "prefix": f"{name}:", "storage_type": "hash"},
        "fields": [
            {"name": "key", "type": "tag"},
            {
                "name": "vec",
                "type": "vector",
                "attrs": {
                    "dims": DIM,
                    "algorithm": "hnsw",
                    "distance_metric": "cosine",
                    "datatype": "float32",
                    "m": 32,
                    "ef_construction": 80,
                },
            },
        ],
    }
    index = SearchIndex.from_dict(schema, redis_url=stack.url)
    index.create(overwrite=True)
    t0 = time.time()
    for i in range(0, len(db), 5_000):
        index.load(
            [{"key": str(j), "vec": db[j].tobytes()} for j in range(i, min(len(db), i + 5_000))]
        )
    while int(index.info().get("percent_indexed", 1)) < 1:
        time.sleep(0.5)
    build = time.time() - t0

    def one(q: np.ndarray) -> Any:
        return index.query(
            VectorQuery(
                vector=q.tolist(), vector_field_name="vec", return_fields=["key"], num_results=1
            )
        )

    res = timed(one, queries)
    index.delete(drop=True)
    return res | {"build_s": round(build, 1)}


def run_one(
    name: str, n: int, db: np.ndarray, queries: np.ndarray, stack: RedisStack | None
) -> dict[str, Any]:
    """Measure one system at one size."""
    if name in ("faiss-flat", "faiss-hnsw"):
        return raw_faiss(db, queries, hnsw=name == "faiss-hnsw")
    if name == "cluster":
        return cluster_index(db, queries, f"bench-lat-{n}-{int(time.time())}")
    if name == "gptcache":
        return gptcache_faiss(db, queries)
    if name == "redisvl" and stack is not None:
        return redisvl_index(db, queries, stack, f"lat{n}")
    raise ValueError(f"unknown system {name!r}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument(
        "--systems",
        nargs="+",
        default=["faiss-flat", "faiss-hnsw", "cluster", "gptcache", "redisvl"],
    )
    ap.add_argument("--redisvl-max", type=int, default=100_000, help="largest size for redisvl")
    ap.add_argument(
        "--libssl", type=Path, default=Path(__file__).resolve().parents[1] / ".venv-bench/libssl11"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "semantic_latency.json")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    db_all = unit(rng, max(args.sizes))
    results: dict[str, dict[str, Any]] = {}
    stack = RedisStack(args.libssl) if "redisvl" in args.systems else None
    try:
        for n in args.sizes:
            db = db_all[:n]
            picks = rng.integers(0, n, args.queries)
            noise = rng.standard_normal((args.queries, DIM), dtype=np.float32) * 0.03
            queries = db[picks] + noise
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            row: dict[str, Any] = {}
            for name in args.systems:
                if name == "redisvl" and n > args.redisvl_max:
                    row[name] = {"skipped": f"over --redisvl-max={args.redisvl_max}"}
                    continue
                print(f"{n} {name} ...", flush=True)
                row[name] = run_one(name, n, db, queries, stack)
                print(f"   {row[name]}", flush=True)
            results[str(n)] = row
    finally:
        if stack is not None:
            stack.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\n{'vectors':>9} {'system':12} {'p50 ms':>8} {'p99 ms':>8} {'build s':>8}")
    for n, row in results.items():
        for name, r in row.items():
            if "skipped" in r:
                print(f"{n:>9} {name:12} {'skipped: ' + r['skipped']}")
            else:
                print(f"{n:>9} {name:12} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['build_s']:>8}")
    return results


if __name__ == "__main__":
    main()
