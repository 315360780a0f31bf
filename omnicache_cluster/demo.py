"""The demo: an agent-like workload on a local cluster, through the cache layers.

Several Ray tasks work through overlapping questions at the same time. For its
questions each task makes one batch embedding call (`EmbeddingCache.get_or_compute_many`:
only the texts no task embedded or is embedding go to the provider; a text another
task is embedding right now is waited for), asks the LLM for each answer
(`ResponseCache.get_or_generate`: cluster-wide single-flight, so two tasks missing the
same question at the same moment pay for one call) and streams a summary
(`StreamingResponseCache.get_or_stream`: a concurrent task replays the live stream).
The providers are fakes with realistic latencies; the report counts the calls made
and avoided per layer and the provider time saved.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DemoReport", "run_demo"]

LLM_SECONDS = 0.2
EMBED_CALL_SECONDS = 0.02
EMBED_TEXT_SECONDS = 0.01
STREAM_CHUNKS = 5
STREAM_CHUNK_SECONDS = 0.03
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
SYSTEM = "You are a concise assistant for an engineering team."
#: Seconds a provider spends per unit of each layer's work (an embedded text, an
#: answer, a streamed summary), for the "time saved" column.
UNIT_SECONDS = {
    "embedding": EMBED_TEXT_SECONDS,
    "response": LLM_SECONDS,
    "stream": STREAM_CHUNKS * STREAM_CHUNK_SECONDS,
}


def fake_embed(texts: list[str]) -> list[Any]:
    """A deterministic stand-in for a batch embedding API call."""
    import numpy as np

    time.sleep(EMBED_CALL_SECONDS + EMBED_TEXT_SECONDS * len(texts))
    out = []
    for text in texts:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
        out.append(np.random.default_rng(seed).uniform(-1, 1, 16).astype(np.float32))
    return out


def fake_llm(messages: list[dict[str, str]]) -> str:
    """A deterministic stand-in for an LLM API call."""
    time.sleep(LLM_SECONDS)
    return f"(answer to: {messages[-1]['content']})"


def fake_stream(messages: list[dict[str, str]]) -> Iterator[str]:
    """A deterministic stand-in for a streaming LLM API call."""
    words = f"summary of: {messages[-1]['content']}".split()
    per_chunk = max(1, len(words) // STREAM_CHUNKS)
    for i in range(STREAM_CHUNKS):
        time.sleep(STREAM_CHUNK_SECONDS)
        yield " ".join(words[i * per_chunk : (i + 1) * per_chunk or None]) + " "


def _agent(cache: Any, questions: list[str]) -> dict[str, dict[str, Any]]:
    """One worker: embed its questions, answer each, stream a summary of each."""
    from omnicache_cluster.layers import EmbeddingCache, ResponseCache, StreamingResponseCache
    from omnicache_cluster.policies import TTLPolicy

    policy = TTLPolicy(default=3600)
    embeddings = EmbeddingCache(cache, ttl_policy=policy)
    responses = ResponseCache(cache, ttl_policy=policy)
    streams = StreamingResponseCache(cache, ttl_policy=policy)
    embeddings.get_or_compute_many(questions, fake_embed, "fake-embed")
    for q in questions:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
        responses.get_or_generate(messages, fake_llm, "fake-llm", {"temperature": 0})
        summary = [{"role": "user", "content": q}]
        for _chunk in streams.get_or_stream(summary, fake_stream, "fake-llm"):
            pass  # an agent would print or forward each chunk
    return {
        "embedding": embeddings.stats(),
        "response": responses.stats(),
        "stream": streams.stats(),
    }


@dataclass
class DemoReport:
    """What the demo measured: per layer ``lookups``, ``computes`` (provider calls
    made; texts embedded for the embedding layer) and ``hits``."""

    tasks: int
    questions_per_task: int
    distinct_questions: int
    wall_s: float
    layers: dict[str, dict[str, int]]
    dashboard_url: str | None
    cluster_stats: dict[str, Any]

    def saved_seconds(self, layer: str) -> float:
        """Provider seconds the cache saved in ``layer``."""
        c = self.layers[layer]
        return (c["lookups"] - c["computes"]) * UNIT_SECONDS[layer]

    def render(self) -> str:
        """Return the report as a text table."""
        rows = [("layer", "lookups", "calls made", "calls avoided", "hit rate", "time saved")]
        for layer, c in self.layers.items():
            avoided = c["lookups"] - c["computes"]
            rate = avoided / c["lookups"] if c["lookups"] else 0.0
            saved = self.saved_seconds(layer)
            rows.append(
                (layer, str(c["lookups"]), str(c["computes"]), str(avoided), f"{rate:.1%}",
                 f"{saved:.1f} s")
            )  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        uncached = sum(c["lookups"] * UNIT_SECONDS[k] for k, c in self.layers.items())
        saved = sum(self.saved_seconds(k) for k in self.layers)
        stats = self.cluster_stats
        lines += [
            "",
            f"{self.tasks} Ray tasks x {self.questions_per_task} questions at once, "
            f"{self.distinct_questions} distinct questions",
            f"provider time without the cache: {uncached:.1f} s; saved: {saved:.1f} s",
            f"wall time: {self.wall_s:.1f} s",
            f"cluster: {stats['entries']} entries, {stats['bytes']} bytes, "
            f"ring epoch {stats['epoch']}, {len(stats['shards'])} shards",
            f"Ray dashboard: {self.dashboard_url or 'not running (install ray[default])'}",
        ]
        return "\n".join(lines)


def _sum_layers(results: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, int]]:
    layers: dict[str, dict[str, int]] = {}
    for per_task in results:
        for layer, stats in per_task.items():
            acc = layers.setdefault(layer, {"lookups": 0, "computes": 0, "hits": 0})
            for name in acc:
                acc[name] += int(stats[name])
    return layers


def _dashboard(cluster: Any) -> str | None:
    if cluster.dashboard_url:
        return str(cluster.dashboard_url)
    from omnicache_cluster.admin import _dashboard_url

    return _dashboard_url()


def run_demo(
    tasks: int = 6, questions_per_task: int = 10, shards: int = 2, seed: int = 7
) -> DemoReport:
    """Start a local cluster, run the workload, shut the cluster down, return the report."""
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
        return DemoReport(
            tasks=tasks,
            questions_per_task=questions_per_task,
            distinct_questions=len({q for plan in plans for q in plan}),
            wall_s=wall,
            layers=_sum_layers(results),
            dashboard_url=_dashboard(cluster),
            cluster_stats=cluster.stats(),
        )
    finally:
        cluster.shutdown()
