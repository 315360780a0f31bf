"""How often each semantic cache serves the right answer, on real data, in one run.

    .venv-bench/bin/python bench/semantic_quality.py --data /work/shared/data

Protocols (all with all-MiniLM-L6-v2, exact search, vectors L2-normalised):

* ``qqp-pairs``: store one side of N QQP pairs, query the other. A served answer is
  right when the pair is a duplicate and the served entry is the pair's own (or the
  same text). Hit rate = duplicates served / duplicates.
* ``qqp-stream``: classes = connected components of QQP's duplicate pairs; a stream of
  queries drawn from the class members of a working set plus unpaired questions; a
  miss computes the "answer" (the class id) and stores it; a semantic hit is right
  when the served answer is the query's class. Exact repeats are reported apart and
  excluded from the false-hit rate (they are always right).
  Two "ceiling" rows (no cluster, exact search, same guard) show what a cache that
  knew the truth could serve: the best candidate only when it is right.
* ``gptcache-999``: GPTCache's published protocol: store ``origin`` with its id as the
  answer, query ``similar``; right = own id ("id rule"), or the same origin text
  ("text rule": the data holds one question under several ids), or an origin whose
  embedding is a near-duplicate of the own one (cosine >= 0.95: "near-dup rule", the
  same sentence give or take "Yes," or a word's case). ``no-tie`` rows switch the
  near-tie rule off (``tie_margin=0``), ``no-refusal`` rows serve candidates however far
  below one the guard refused (``refusal_margin=None``).
* ``fow-pairs``: fow-cache's 600 pairs: store ``a``, query ``b``; should-hit pairs
  served, and traps served wrongly (an entry of another text; 28 traps' ``b`` is
  stored word for word as another row's ``a``, and serving that entry is right: it
  is reported apart, as "traps served, any entry").
* ``fow-multiturn``: fow-cache's 240 conversation pairs: store conversation ``a``'s
  last message, query ``b``'s; peers see the last message only.

Writes ``bench/results/semantic_quality.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _semantic_common import (
    RESULTS,
    Embedder,
    GPTCachePeer,
    RedisStack,
    RedisVLPeer,
    load_fow_convs,
    load_fow_pairs,
    load_mock,
    load_qqp,
    wilson,
)

STATIC = [0.80, 0.85, 0.90, 0.94, 0.97]
STREAM_STATIC = [0.80, 0.85, 0.90, 0.94, 0.97, 0.98, 0.985, 0.99]
NEAR_DUP = 0.95


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else 0.0, "ci95": [lo, hi]}


# -- this project through the cluster -------------------------------------------------


class Ours:
    """SemanticCache / AdaptiveSemanticCache on a local 2-shard cluster."""

    def __init__(self, embed: Embedder) -> None:
        from omnicache_cluster import CacheCluster

        self.embed = embed
        self.cluster = CacheCluster.start(
            num_shards=2,
            namespace=f"bench-semantic-{int(time.time())}",
            ray_init={"num_cpus": 2, "include_dashboard": False},
        )
        self._n = 0

    def view(self, name: str) -> Any:
        self._n += 1
        return self.cluster.with_key_namespace(f"{name}-{self._n}")

    def cache(self, view: Any, *, threshold: float = 0.9, guard: Any = True, **extra: Any) -> Any:
        from omnicache_cluster.semantic import SemanticCache

        return SemanticCache(
            view, self.embed, threshold=threshold, model="minilm", dim=384, lexical_guard=guard,
            top_k=4, **extra,
        )  # fmt: skip

    def adaptive(self, view: Any, bound: float, seed: int) -> Any:
        from omnicache_cluster.semantic import AdaptivePolicy, AdaptiveSemanticCache

        return AdaptiveSemanticCache(
            view, self.embed, policy=AdaptivePolicy(bound, rng=random.Random(seed)),
            model="minilm", dim=384, top_k=4,
        )  # fmt: skip

    @staticmethod
    def store(cache: Any, items: list[tuple[str, Any]], batch: int = 64) -> None:
        async def run() -> None:
            for i in range(0, len(items), batch):
                await asyncio.gather(*(cache.aset(q, a) for q, a in items[i : i + batch]))

        asyncio.run(run())

    @staticmethod
    def lookup_all(cache: Any, queries: list[str], batch: int = 64) -> list[Any]:
        async def run() -> list[Any]:
            out: list[Any] = []
            for i in range(0, len(queries), batch):
                out += await asyncio.gather(*(cache.alookup(q) for q in queries[i : i + batch]))
            return out

        return asyncio.run(run())

    def close(self) -> None:
        self.cluster.shutdown()


# -- protocols --------------------------------------------------------------------------


def qqp_pairs(pairs: list[dict[str, Any]], ours: Ours, peers: dict[str, Any]) -> dict[str, Any]:
    """Store every text_a, query every text_b."""
    answers = {p["text_a"]: i for i, p in enumerate(pairs)}  # last pair wins for repeats
    own = [p["text_a"] for p in pairs]
    is_dup = [p["label"] == 1 for p in pairs]
    out: dict[str, Any] = {}

    def score(served: list[str | None]) -> dict[str, Any]:
        right = wrong = dup_served = 0
        for s, o, d in zip(served, own, is_dup, strict=True):
            if s is None:
                continue
            dup_served += d
            if d and s == o:
                right += 1
            else:
                wrong += 1
        return {
            "hit_rate": _rate(dup_served, sum(is_dup)),
            "false_hit_rate": _rate(wrong, right + wrong),
            "served": right + wrong,
        }

    view = ours.view("qqp-pairs")
    ours.store(ours.cache(view), [(t, t) for t in answers])
    queries = [p["text_b"] for p in pairs]
    for guard in (True, False):
        for t in STATIC:
            found = ours.lookup_all(ours.cache(view, threshold=t, guard=guard), queries)
            served = [f.value if f.hit else None for f in found]
            out[f"ours static {t:.2f}{'' if guard else ' no-guard'}"] = score(served)
    for name, make in peers.items():
        peer = make(f"qqp{len(out)}")
        texts = list(answers)
        peer.save_many(texts, texts, ours.embed) if hasattr(peer, "save_many") else [
            peer.put(t, t) for t in texts
        ]
        out[name] = score([peer.get(q) for q in queries])
    return out


def qqp_classes(pairs: list[dict[str, Any]]) -> dict[str, int]:
    """Connected components of the duplicate pairs: text -> class id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        find(p["text_a"]), find(p["text_b"])
        if p["label"] == 1:
            parent[find(p["text_a"])] = find(p["text_b"])
    roots: dict[str, int] = {}
    return {t: roots.setdefault(find(t), len(roots)) for t in parent}


def make_stream(pairs: list[dict[str, Any]], n_classes: int, n_single: int, length: int, seed: int):
    cls = qqp_classes(pairs)
    members: dict[int, list[str]] = defaultdict(list)
    for t, c in cls.items():
        members[c].append(t)
    rng = random.Random(seed)
    multi = [c for c, m in members.items() if len(m) > 1]
    single = [c for c, m in members.items() if len(m) == 1]
    chosen = rng.sample(multi, n_classes) + rng.sample(single, n_single)
    pool = [t for c in chosen for t in members[c]]
    stream = [rng.choice(pool) for _ in range(length)]
    return stream, cls, pool


def run_stream(
    cache: Any, stream: list[str], cls: dict[str, int], window: int = 16
) -> dict[str, Any]:
    computed: set[str] = set()
    sem_right = sem_wrong = exact = misses = 0
    dup_opportunities = 0

    async def one(text: str) -> tuple[str, Any, bool]:
        called = []

        def fn() -> int:
            called.append(1)
            return cls[text]

        value = await cache.aget_or_compute(text, fn)
        return text, value, bool(called)

    classes_done: set[int] = set()

    async def run() -> None:
        nonlocal sem_right, sem_wrong, exact, misses, dup_opportunities
        for i in range(0, len(stream), window):
            batch = stream[i : i + window]
            for text, value, was_miss in await asyncio.gather(*(one(t) for t in batch)):
                # An opportunity: not an exact repeat, and its class was answered before.
                if text not in computed and cls[text] in classes_done:
                    dup_opportunities += 1
                if was_miss:
                    misses += 1
                    computed.add(text)
                    classes_done.add(cls[text])
                elif text in computed:
                    exact += 1
                elif value == cls[text]:
                    sem_right += 1
                else:
                    sem_wrong += 1

    t0 = time.time()
    asyncio.run(run())
    served = sem_right + sem_wrong
    return {
        "queries": len(stream),
        "exact_hits": exact,
        "semantic_hits": served,
        "semantic_hit_rate": _rate(sem_right, dup_opportunities),
        "false_hit_rate": _rate(sem_wrong, served),
        "misses": misses,
        # Misses that an adaptive cache ran to verify a candidate (learning cost).
        "verifications": cache.metrics.snapshot().get("verifications", 0),
        "seconds": round(time.time() - t0, 1),
    }


def stream_ceiling(
    stream: list[str], cls: dict[str, int], embed: Embedder, top_k: int = 4, any_of: bool = False
) -> dict[str, Any]:
    """What a cache that knew the truth could serve on the stream (exact search, same
    guard): the best guard-passing candidate, at any similarity, exactly when it is of
    the query's class (``any_of``: any of the ``top_k``). No similarity-based policy,
    static, adaptive or learned, can serve more without serving a wrong answer."""
    import numpy as np

    from omnicache_cluster.semantic.guard import lexical_features, lexical_match

    uniq = sorted(set(stream))
    at = {t: i for i, t in enumerate(uniq)}
    vecs = np.stack([embed(t) for t in uniq]).astype(np.float32)
    feats = [lexical_features(t) for t in uniq]
    stored: list[int] = []
    done: set[int] = set()
    computed: set[str] = set()
    served = opportunities = 0
    for text in stream:
        if text in computed:
            continue
        i = at[text]
        opportunities += cls[text] in done
        right = False
        if stored:
            sims = vecs[stored] @ vecs[i]
            k = min(top_k * 2, len(stored))
            top = np.argpartition(-sims, k - 1)[:k]
            passing = [
                stored[j]
                for j in top[np.argsort(-sims[top])]
                if lexical_match(feats[i], feats[stored[j]]) is None
            ][:top_k]
            picks = passing if any_of else passing[:1]
            right = any(cls[uniq[j]] == cls[text] for j in picks)
        if right:
            served += 1
        else:
            computed.add(text)
            done.add(cls[text])
            stored.append(i)
    return {
        "queries": len(stream),
        "exact_hits": 0,
        "semantic_hits": served,
        "semantic_hit_rate": _rate(served, opportunities),
        "false_hit_rate": _rate(0, served),
        "misses": len(computed),
        "verifications": 0,
        "seconds": 0.0,
    }


def gptcache_999(mock: list[dict[str, str]], ours: Ours, peers: dict[str, Any]) -> dict[str, Any]:
    origins = [m["origin"] for m in mock]
    similars = [m["similar"] for m in mock]
    ids = [str(i) for i in range(len(mock))]
    out: dict[str, Any] = {}

    def near_dup(i: int, j: int) -> bool:
        return float(ours.embed(origins[i]) @ ours.embed(origins[j])) >= NEAR_DUP

    def score(served: list[str | None]) -> dict[str, Any]:
        id_right = text_right = wrong_id = wrong_text = dup_right = 0
        for i, s in enumerate(served):
            if s is None:
                continue
            if s == ids[i]:
                id_right += 1
            else:
                wrong_id += 1
            if origins[int(s)] == origins[i]:
                text_right += 1
            else:
                wrong_text += 1
            dup_right += origins[int(s)] == origins[i] or near_dup(i, int(s))
        served_n = id_right + wrong_id
        return {
            "id_rule": {"correct": id_right, "wrong": wrong_id},
            "text_rule": {"correct": text_right, "wrong": wrong_text},
            # The served origin is a near-duplicate of the pair's own (cosine >= 0.95:
            # the same sentence give or take "Yes," or a word's case).
            "near_dup_rule": {"correct": dup_right, "wrong": served_n - dup_right},
        }

    view = ours.view("gptcache999")
    # The cache key is the text: one question under several ids keeps the last id,
    # as GPTCache's own store does for the same text... it keeps each; see text rule.
    ours.store(ours.cache(view), list(zip(origins, ids, strict=True)))
    variants: tuple[tuple[str, Any, dict[str, Any]], ...] = (
        ("", True, {}),
        (" no-tie", True, {"tie_margin": 0.0}),
        (" tie 0.02", True, {"tie_margin": 0.02}),
        (" no-refusal", True, {"refusal_margin": None}),
        (" no-guard", False, {}),
    )
    for t in (0.95, 0.90, 0.85, 0.80, 0.75):
        for suffix, guard, extra in variants:
            cache = ours.cache(view, threshold=t, guard=guard, **extra)
            found = ours.lookup_all(cache, similars)
            out[f"ours static {t:.2f}{suffix}"] = score([f.value if f.hit else None for f in found])
    for name, make in peers.items():
        peer = make(f"mock{len(out)}")
        if hasattr(peer, "save_many"):
            peer.save_many(origins, ids, ours.embed)
        else:
            for o, i in zip(origins, ids, strict=True):
                peer.put(o, i)
        out[name] = score([peer.get(q) for q in similars])
    return out


def fow_pairs(rows: list[dict[str, Any]], ours: Ours, peers: dict[str, Any]) -> dict[str, Any]:
    a_texts = [r["a"] for r in rows]
    out: dict[str, Any] = {}

    def score(served: list[str | None]) -> dict[str, Any]:
        should = [r for r in rows if r["same_answer"]]
        traps = [r for r in rows if not r["same_answer"]]
        # A served entry whose text *is* the query's (a trap's ``b`` that another row
        # stores as its ``a``: 28 of the 300 traps) answers that very question: right.
        hit_ok = sum(
            1
            for r, s in zip(rows, served, strict=True)
            if r["same_answer"] and s in (r["a"], r["b"])
        )
        trap_any = sum(
            1 for r, s in zip(rows, served, strict=True) if not r["same_answer"] and s is not None
        )
        wrong = [
            r
            for r, s in zip(rows, served, strict=True)
            if not r["same_answer"] and s is not None and s != r["b"]
        ]
        by_cat: dict[str, int] = defaultdict(int)
        for r in wrong:
            by_cat[r["category"]] += 1
        return {
            "should_hit_served": _rate(hit_ok, len(should)),
            "traps_served": _rate(len(wrong), len(traps)),
            "traps_served_any_entry": _rate(trap_any, len(traps)),
            "traps_by_category": dict(by_cat),
        }

    view = ours.view("fow")
    ours.store(ours.cache(view), [(a, a) for a in a_texts])
    queries = [r["b"] for r in rows]
    for guard in (True, "strict", False):
        for t in (0.70, 0.75, 0.80, 0.85, 0.90):
            found = ours.lookup_all(ours.cache(view, threshold=t, guard=guard), queries)
            g = {True: "", "strict": " strict", False: " no-guard"}[guard]
            out[f"ours static {t:.2f}{g}"] = score([f.value if f.hit else None for f in found])
    for name, make in peers.items():
        peer = make(f"fow{len(out)}")
        if hasattr(peer, "save_many"):
            peer.save_many(a_texts, a_texts, ours.embed)
        else:
            for a in a_texts:
                peer.put(a, a)
        out[name] = score([peer.get(q) for q in queries])
    return out


def fow_multiturn(convs: list[dict[str, Any]], ours: Ours, peers: dict[str, Any]) -> dict[str, Any]:
    from omnicache_cluster.semantic import chat_context

    out: dict[str, Any] = {}
    right_total = sum(1 for c in convs if c["same_answer"])
    view = ours.view("fow-conv")
    cache = ours.cache(view, threshold=0.80)
    for i, c in enumerate(convs):
        q, ctx = chat_context(c["a"])
        cache.set(q, f"answer-{i}", context=ctx)
    wrong = right = 0
    for i, c in enumerate(convs):
        q, ctx = chat_context(c["b"])
        found = cache.lookup(q, context=ctx)
        if found.hit:
            if c["same_answer"] and found.value == f"answer-{i}":
                right += 1
            else:
                wrong += 1
    out["ours static 0.80 (context-scoped)"] = {
        "wrong_served": _rate(wrong, len(convs)),
        "same_answer_served": _rate(right, right_total),
    }
    for name, make in peers.items():
        peer = make(f"conv{len(out)}")
        for i, c in enumerate(convs):
            peer.put(c["a"][-1]["content"], f"answer-{i}")
        wrong = right = 0
        for i, c in enumerate(convs):
            s = peer.get(c["b"][-1]["content"])
            if s is not None:
                if c["same_answer"] and s == f"answer-{i}":
                    right += 1
                else:
                    wrong += 1
        out[name] = {
            "wrong_served": _rate(wrong, len(convs)),
            "same_answer_served": _rate(right, right_total),
        }
    return out


# -- report -----------------------------------------------------------------------------


def _pct(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:.1f}% [{100 * lo:.1f}-{100 * hi:.1f}]"


def print_tables(res: dict[str, Any]) -> None:
    if "qqp_pairs" in res:
        print(f"\nQQP pairs ({res['config']['pairs']} pairs: store a, query b)")
        print(f"{'system':34} {'hit rate (dups served)':>26} {'false-hit rate [95% CI]':>26}")
        for name, r in res["qqp_pairs"].items():
            print(f"{name:34} {_pct(r['hit_rate']):>26} {_pct(r['false_hit_rate']):>26}")
    if "qqp_stream" in res:
        s = res["qqp_stream"]
        print(f"\nQQP stream ({s['info']})")
        head = f"{'semantic hit rate':>22} {'false-hit rate [95% CI]':>26} {'exact':>6}"
        print(f"{'system':34} {head} {'sem hits':>8} {'misses':>6} {'verified':>8}")
        for name, r in s["systems"].items():
            print(
                f"{name:34} {_pct(r['semantic_hit_rate']):>22} {_pct(r['false_hit_rate']):>26} "
                f"{r['exact_hits']:>6} {r['semantic_hits']:>8} {r['misses']:>6} "
                f"{r.get('verifications', 0):>8}"
            )
    if "gptcache_999" in res:
        print("\nGPTCache 999 pairs (store origin -> id, query similar)")
        print(
            f"{'system':42} {'id rule ok/wrong':>18} {'text rule ok/wrong':>20}"
            f" {'near-dup rule ok/wrong':>24}"
        )
        for name, r in res["gptcache_999"].items():
            i, t, d = r["id_rule"], r["text_rule"], r["near_dup_rule"]
            print(
                f"{name:42} {i['correct']:>8} / {i['wrong']:<7} {t['correct']:>9} / {t['wrong']:<7}"
                f" {d['correct']:>13} / {d['wrong']:<7}"
            )
    if "fow_pairs" in res:
        print("\nfow-cache pairs (store a, query b)")
        print(
            f"{'system':34} {'should-hit served':>24} {'traps served wrongly':>24}"
            f" {'traps served, any entry':>24}"
        )
        for name, r in res["fow_pairs"].items():
            print(
                f"{name:34} {_pct(r['should_hit_served']):>24} {_pct(r['traps_served']):>24}"
                f" {_pct(r['traps_served_any_entry']):>24}"
            )
    if "fow_multiturn" in res:
        print("\nfow-cache multi-turn (240 conversation pairs; wrong = share of all queries)")
        print(f"{'system':34} {'wrong answers served':>24} {'same-answer served':>24}")
        for name, r in res["fow_multiturn"].items():
            print(f"{name:34} {_pct(r['wrong_served']):>24} {_pct(r['same_answer_served']):>24}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with qqp/ and gptcache-mock/")
    ap.add_argument("--pairs", type=int, default=8000, help="QQP pairs for the pair protocol")
    ap.add_argument("--stream", type=int, default=20000, help="queries in the QQP stream")
    ap.add_argument("--stream-classes", type=int, default=2500)
    ap.add_argument("--stream-singles", type=int, default=2500)
    ap.add_argument("--bounds", type=float, nargs="+", default=[0.02, 0.05, 0.10])
    ap.add_argument("--only", nargs="*", default=None, help="protocols to run (default: all)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument(
        "--libssl", type=Path, default=Path(__file__).resolve().parents[1] / ".venv-bench/libssl11"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "semantic_quality.json")
    args = ap.parse_args(argv)
    only = set(
        args.only or ["qqp-pairs", "qqp-stream", "gptcache-999", "fow-pairs", "fow-multiturn"]
    )

    qqp = load_qqp(args.data)
    rng = random.Random(args.seed)
    pairs = rng.sample(qqp, args.pairs)
    stream, cls, pool = make_stream(
        qqp, args.stream_classes, args.stream_singles, args.stream, args.seed
    )
    mock = load_mock(args.data)
    fow = load_fow_pairs()
    convs = load_fow_convs()

    embed = Embedder()
    texts: list[str] = []
    if "qqp-pairs" in only:
        texts += [p["text_a"] for p in pairs] + [p["text_b"] for p in pairs]
    if "qqp-stream" in only:
        texts += pool
    texts += [m["origin"] for m in mock] + [m["similar"] for m in mock]
    texts += [r["a"] for r in fow] + [r["b"] for r in fow]
    texts += [m["content"] for c in convs for m in (*c["a"], *c["b"])]
    embed.prepare(texts)

    peers: dict[str, Any] = {}
    stack = None
    if not args.no_peers:
        peers["GPTCache 0.1.44 defaults (0.8)"] = lambda _n: GPTCachePeer(embed, 0.8)
        try:
            stack = RedisStack(args.libssl)
            peers["redisvl defaults (dist 0.1)"] = lambda n: RedisVLPeer(stack.url, embed, n)
        except Exception as exc:  # report why the peer is missing, run the rest
            print(f"redisvl skipped: {exc}", file=sys.stderr)
    peers999 = dict(peers)
    if not args.no_peers:
        peers999["GPTCache published (wrapped range, 0.95)"] = lambda _n: GPTCachePeer(
            embed, 0.95, published=True
        )
        peers999["GPTCache 0.95 (default range)"] = lambda _n: GPTCachePeer(embed, 0.95)

    ours = Ours(embed)
    res: dict[str, Any] = {
        "config": vars(args)
        | {"data": str(args.data), "out": str(args.out), "libssl": str(args.libssl)}
    }
    try:
        if "qqp-pairs" in only:
            print("qqp-pairs ...", flush=True)
            res["qqp_pairs"] = qqp_pairs(pairs, ours, peers)
        if "gptcache-999" in only:
            print("gptcache-999 ...", flush=True)
            res["gptcache_999"] = gptcache_999(mock, ours, peers999)
        if "fow-pairs" in only:
            print("fow-pairs ...", flush=True)
            res["fow_pairs"] = fow_pairs(fow, ours, peers)
        if "fow-multiturn" in only:
            print("fow-multiturn ...", flush=True)
            res["fow_multiturn"] = fow_multiturn(convs, ours, peers)
        if "qqp-stream" in only:
            systems: dict[str, Any] = {}
            for b in args.bounds:
                print(f"qqp-stream adaptive {b} ...", flush=True)
                systems[f"adaptive max_error_rate={b:.2f}"] = run_stream(
                    ours.adaptive(ours.view("stream"), b, args.seed), stream, cls
                )
                print("  ", systems[f"adaptive max_error_rate={b:.2f}"], flush=True)
            for t in STREAM_STATIC:
                print(f"qqp-stream static {t} ...", flush=True)
                systems[f"static {t:g}"] = run_stream(
                    ours.cache(ours.view("stream"), threshold=t), stream, cls
                )
            for t in (0.80, 0.90):  # without the near-tie and refusal rules
                systems[f"static {t:.2f} no-tie no-refusal"] = run_stream(
                    ours.cache(
                        ours.view("stream"), threshold=t, tie_margin=0.0, refusal_margin=None
                    ),
                    stream,
                    cls,
                )
            systems["ceiling: best candidate iff right"] = stream_ceiling(stream, cls, embed)
            systems["ceiling: any of top 4 iff right"] = stream_ceiling(
                stream, cls, embed, any_of=True
            )
            info = (
                f"{len(stream)} queries over {len(pool)} questions: "
                f"{args.stream_classes} duplicate classes + {args.stream_singles} unpaired"
            )
            res["qqp_stream"] = {"info": info, "systems": systems}
    finally:
        ours.close()
        if stack is not None:
            stack.close()
        embed.save()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str))
    print_tables(res)
    return res


if __name__ == "__main__":
    main()
