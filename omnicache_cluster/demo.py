"""The demo: an agent-like workload on a local cluster, with and without the cache.

Several Ray tasks answer overlapping questions. Each question costs an embedding call
(~50 ms) and an LLM call (~200 ms) against fake providers; the cache is shared by all
tasks through the cluster, so a question answered in one task is free in the others.
The report counts the provider calls made and avoided, per layer.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["DemoReport", "run_demo"]

LLM_SECONDS = 0.2
EMBED_SECONDS = 0.05
QUESTIONS = [
    "What is retrieval-augmented generation?",
    "How do I shard a cache across Ray actors?",
    "Summarise the quarterly report.",
    "What is the capital of France?",
    "Explain consistent hashing in one paragraph.",
    "Which embedding model should I use for search?",
    "How does an LRU cache evict entries?",
    "What does a vector database store?",
    "Write a haiku about distributed systems.",
    "What is single-flight request coalescing?",
    "How much does a million GPT tokens cost?",
    "What is a Ray actor?",
]


def fake_embed(text: str) -> list[float]:
    """A deterministic stand-in for an embedding API call."""
    time.sleep(EMBED_SECONDS)
    seed = hashlib.blake2b(text.encode(), digest_size=8).digest()
    rng = random.Random(seed)
    return [rng.uniform(-1, 1) for _ in range(16)]


def fake_llm(prompt: str) -> str:
    """A deterministic stand-in for an LLM API call."""
    time.sleep(LLM_SECONDS)
    return f"(answer to: {prompt})"


def _agent(cache: Any, questions: list[str]) -> dict[str, dict[str, int]]:
    """One worker: embed each question, then answer it, through the cache."""
    counts = {layer: {"hits": 0, "misses": 0} for layer in ("embedding", "response")}
    for q in questions:
        for layer, call in (("embedding", fake_embed), ("response", fake_llm)):
            value = cache.get(q, None, layer=layer)
            if value is None:
                counts[layer]["misses"] += 1
                cache.set(q, call(q), layer=layer, ttl=3600)
            else:
                counts[layer]["hits"] += 1
    return counts


@dataclass
class DemoReport:
    """What the demo measured."""

    tasks: int
    questions_per_task: int
    wall_s: float
    layers: dict[str, dict[str, int]]
    dashboard_url: str | None
    cluster_stats: dict[str, Any]

    def render(self) -> str:
        """Return the report as a text table."""
        cost = {"embedding": EMBED_SECONDS, "response": LLM_SECONDS}
        rows = [("layer", "lookups", "calls made", "calls avoided", "hit rate", "time saved")]
        total_saved = 0.0
        for layer, c in self.layers.items():
            lookups = c["hits"] + c["misses"]
            saved = c["hits"] * cost[layer]
            total_saved += saved
            rate = c["hits"] / lookups if lookups else 0.0
            rows.append(
                (
                    layer,
                    str(lookups),
                    str(c["misses"]),
                    str(c["hits"]),
                    f"{rate:.1%}",
                    f"{saved:.1f} s",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        uncached = sum((c["hits"] + c["misses"]) * cost[k] for k, c in self.layers.items())
        lines += [
            "",
            f"{self.tasks} Ray tasks x {self.questions_per_task} questions, "
            f"{len(QUESTIONS)} distinct questions",
            f"provider time without the cache: {uncached:.1f} s; saved: {total_saved:.1f} s",
            f"wall time: {self.wall_s:.1f} s",
            f"cluster: {self.cluster_stats['entries']} entries, "
            f"{self.cluster_stats['bytes']} bytes, ring epoch {self.cluster_stats['epoch']}, "
            f"{len(self.cluster_stats['shards'])} shards",
            f"Ray dashboard: {self.dashboard_url or 'not running (install ray[default])'}",
        ]
        return "\n".join(lines)


def run_demo(
    tasks: int = 6, questions_per_task: int = 10, shards: int = 2, seed: int = 7
) -> DemoReport:
    """Start a local cluster, run the workload, shut everything down, return the report."""
    from omnicache_cluster.client import CacheCluster

    cluster = CacheCluster.start(num_shards=shards, namespace="omnicache-demo")
    try:
        import ray

        rng = random.Random(seed)
        plans = [rng.choices(QUESTIONS, k=questions_per_task) for _ in range(tasks)]
        agent = ray.remote(num_cpus=0.25)(_agent)
        started = time.perf_counter()
        results = ray.get([agent.remote(cluster, plan) for plan in plans])
        wall = time.perf_counter() - started
        layers: dict[str, dict[str, int]] = {}
        for counts in results:
            for layer, c in counts.items():
                acc = layers.setdefault(layer, {"hits": 0, "misses": 0})
                acc["hits"] += c["hits"]
                acc["misses"] += c["misses"]
        return DemoReport(
            tasks=tasks,
            questions_per_task=questions_per_task,
            wall_s=wall,
            layers=layers,
            dashboard_url=cluster.dashboard_url,
            cluster_stats=cluster.stats(),
        )
    finally:
        cluster.shutdown()
