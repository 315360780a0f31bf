"""The semantic caches without a cluster: the seed's README example in one process, every
local backend, the seed's call forms, and the same answers as on the cluster."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from omnicache_cluster import MISS, CacheKey, CacheKeyBuilder, CacheManager, InMemoryBackend
from omnicache_cluster.backends.vector import FAISSBackend
from omnicache_cluster.semantic import AdaptivePolicy, AdaptiveSemanticCache, SemanticCache
from tests.conftest import unique

DIM = 64


def bow_embed(text: str) -> np.ndarray:
    """A deterministic bag-of-words embedding: shared words make similar vectors."""
    vec = np.zeros(DIM)
    for word in re.findall(r"[a-z0-9']+", text.lower()):
        seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vec += np.random.default_rng(seed).normal(size=DIM)
    return vec


class PinnedModel:
    """Stands in for the README's ``embed_model``: the vectors a model gives these texts
    (the reworded question at cosine 0.97 of the original, the other one far)."""

    def __init__(self, dim: int) -> None:
        rng = np.random.default_rng(5)
        base, other, far = rng.normal(size=(3, dim))
        other -= other.dot(base) / base.dot(base) * base  # orthogonal to base
        base, other, far = (v / np.linalg.norm(v) for v in (base, other, far))
        self.vectors = {
            "What is the capital of France?": base,
            "Which city is the capital of France?": 0.97 * base + np.sqrt(1 - 0.97**2) * other,
            "How tall is the Eiffel Tower?": far,
        }

    def encode(self, text: str) -> np.ndarray:
        return self.vectors[text]


# -- the seed README's example --------------------------------------------------------


def test_seed_readme_semantic_example_runs_in_one_process():
    embed_model = PinnedModel(1536)
    sem_cache = SemanticCache(
        exact_backend=InMemoryBackend(),
        vector_backend=FAISSBackend(dim=1536),
        embed_fn=lambda text: embed_model.encode(text),  # returns np.ndarray
        threshold=0.95,
    )
    sem_cache.set("What is the capital of France?", "Paris")
    assert sem_cache.get("What is the capital of France?") == "Paris"  # exact
    assert sem_cache.get("Which city is the capital of France?") == "Paris"  # semantic hit
    assert sem_cache.get("How tall is the Eiffel Tower?") is None  # the seed's miss
    found = sem_cache.lookup("Which city is the capital of France?")
    assert (found.kind, round(found.score, 4)) == ("semantic", 0.97)
    assert sem_cache.local


def test_seed_semantic_example_imports_no_ray(python_env):
    """The local mode is the whole cache in one process: Ray is never imported."""
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from omnicache_cluster import InMemoryBackend
        from omnicache_cluster.backends.vector import FAISSBackend
        from omnicache_cluster.semantic import SemanticCache
        vecs = {"a b c": np.array([1.0, 0.0, 0.0]), "a b d": np.array([0.98, 0.2, 0.0])}
        c = SemanticCache(exact_backend=InMemoryBackend(), vector_backend=FAISSBackend(dim=3),
                          embed_fn=vecs.__getitem__, threshold=0.95)
        c.set("a b c", "v")
        print(json.dumps({"hit": c.get("a b d"), "ray": "ray" in sys.modules}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=python_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"hit": "v", "ray": False}


def test_seed_positional_form_and_its_defaults():
    faiss = FAISSBackend(dim=DIM)
    cache = SemanticCache(InMemoryBackend(), faiss, bow_embed)
    assert cache.threshold == 0.95  # the seed's default when built the seed's way
    assert cache.miss_value is None
    assert SemanticCache(InMemoryBackend(), faiss, bow_embed, 0.8).threshold == 0.8
    own = SemanticCache(InMemoryBackend(), bow_embed)
    assert own.threshold == 0.9
    assert own.get("nothing here") is MISS  # this project's form tells a miss from None
    own.set("is it cached", None)
    assert own.get("is it cached") is None
    assert own.lookup("is it cached").hit


def test_seed_vector_backend_holds_the_vectors_and_delete_removes_both():
    faiss = FAISSBackend(dim=DIM)
    cache = SemanticCache(
        exact_backend=InMemoryBackend(), vector_backend=faiss, embed_fn=bow_embed, threshold=0.8
    )
    cache.set("how do I cancel my order", "Orders > Cancel", 60)  # ttl positional, as seeded
    assert len(faiss) == 1
    [(key, score)] = faiss.search(bow_embed("how do I cancel my order"))
    assert score == pytest.approx(1.0, abs=1e-5)
    assert key == cache.lookup("how do I cancel my order").key
    assert faiss.expires_at(key) is not None
    assert cache.delete("how do I cancel my order") is True
    assert len(faiss) == 0
    assert cache.get("how do I cancel my order") is None
    assert cache.get("how can I cancel my order") is None
    assert cache.delete("how do I cancel my order") is False


def test_seed_calls_without_an_equivalent_fail_loudly():
    from omnicache_cluster.backends.vector import QdrantBackend
    from omnicache_cluster.backends.vector.qdrant import QdrantConfig

    with pytest.raises(TypeError, match="needs a backend"):
        SemanticCache(embed_fn=bow_embed)
    with pytest.raises(TypeError, match="not a cache backend"):
        SemanticCache(exact_backend={}, embed_fn=bow_embed)
    with pytest.raises(TypeError, match="codec"):
        SemanticCache(InMemoryBackend(), bow_embed, serializer=object())
    qdrant = QdrantBackend(QdrantConfig(location=":memory:"))
    with pytest.raises(TypeError, match=r"FAISSBackend\(dim=\.\.\.\)"):
        SemanticCache(exact_backend=InMemoryBackend(), vector_backend=qdrant, embed_fn=bow_embed)
    with pytest.raises(TypeError, match="max_error_rate"):
        AdaptiveSemanticCache(
            exact_backend=InMemoryBackend(),
            vector_backend=FAISSBackend(dim=DIM),
            embed_fn=bow_embed,
            target_hit_rate=0.35,
            adjustment_interval=50,
        )
    with pytest.raises(TypeError, match="max_error_rate"):
        AdaptiveSemanticCache(InMemoryBackend(), FAISSBackend(dim=DIM), bow_embed, 0.9)
    adaptive = AdaptiveSemanticCache(InMemoryBackend(), FAISSBackend(dim=DIM), bow_embed)
    with pytest.raises(TypeError, match="context="):
        adaptive.get("how do I pay", turn_count=3)
    with pytest.raises(AttributeError, match="max_error_rate"):
        _ = adaptive.current_threshold
    with pytest.raises(ValueError, match="dimension"):  # the FAISS index sets the dimension
        SemanticCache(InMemoryBackend(), FAISSBackend(dim=8), bow_embed).set("x y", 1)


def test_manager_and_key_builder_scope_the_answers():
    backend = InMemoryBackend()
    manager = CacheManager(backend, CacheKeyBuilder(namespace="app"))
    cache = SemanticCache(manager, bow_embed, threshold=0.8)
    cache.set("how do I reset my password", "Settings > Reset")
    assert cache.lookup("how do I reset my password").key.startswith("app:default:semantic:")
    acme = SemanticCache(
        backend, bow_embed, threshold=0.8, key_builder=CacheKeyBuilder("app", tenant="acme")
    )
    assert acme.get("how do I reset my password") is MISS  # another tenant's answer
    acme.set("how do I reset my password", "acme portal")
    assert acme.lookup("how can I reset my password").value == "acme portal"
    assert cache.lookup("how can I reset my password").value == "Settings > Reset"


class SeedStyleBackend:
    """A custom backend in the seed's protocol: six methods over a dict."""

    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value, ttl=None):
        self.data[key] = value

    def delete(self, key):
        self.data.pop(key, None)

    def exists(self, key):
        return key in self.data

    def clear(self):
        self.data.clear()

    def close(self):
        pass


def test_a_custom_backend_in_the_seeds_protocol_holds_the_answers():
    store = SeedStyleBackend()
    cache = SemanticCache(exact_backend=store, embed_fn=bow_embed, threshold=0.8)
    cache.set("how do I cancel my order", "Orders > Cancel")
    assert len(store.data) == 1  # the answer went to the user's store (as encoded bytes)
    assert cache.get("how can I cancel my order") == "Orders > Cancel"
    cache.clear()
    assert cache.get("how do I cancel my order") is None


# -- every local backend ----------------------------------------------------------------


@pytest.fixture(params=["memory", "disk", "redis", "tiered"])
def local_backend(request, tmp_path):
    from omnicache_cluster import DiskBackend, RedisBackend, TieredBackend

    if request.param == "memory":
        yield InMemoryBackend()
        return
    if request.param == "disk":
        backend = DiskBackend(tmp_path / "cache")
    else:
        url = request.getfixturevalue("redis_server")
        backend = RedisBackend(url, key_prefix=unique("sem") + ":")
        if request.param == "tiered":
            backend = TieredBackend(InMemoryBackend(), backend, l1_ttl=60)
    yield backend
    backend.close()


async def test_local_mode_on_every_local_backend(local_backend):
    cache = SemanticCache(local_backend, bow_embed, threshold=0.8, model="bow64")
    assert cache.local
    assert cache.set("how do I cancel my order", {"answer": "Orders > Cancel"})
    assert cache.lookup("how do I cancel my order").kind == "exact"
    hit = cache.lookup("how can I cancel my order")
    assert (hit.kind, hit.value) == ("semantic", {"answer": "Orders > Cancel"})
    assert cache.lookup("how do I not cancel my order").reason == "guard:negation"
    # The answer is an ordinary entry of the backend, under the key the lookup reports.
    stored_key = CacheKey.parse(hit.key)
    assert local_backend.get(stored_key)["v"] == {"answer": "Orders > Cancel"}
    calls = []
    assert cache.get_or_compute("what is the refund window", lambda: calls.append(1) or "14d")
    assert cache.get_or_compute("so what is the refund window", lambda: calls.append(1)) == "14d"
    assert calls == [1]
    assert await cache.aset("where is my parcel", "tracking page")
    assert await cache.aget("where is my parcel now") == "tracking page"
    assert await cache.adelete("where is my parcel")
    assert await cache.aget("where is my parcel now") is MISS
    # clear() removes the answers too: a cleared question is a miss, exact or reworded.
    assert cache.clear() == 2
    assert cache.lookup("how do I cancel my order").hit is False
    assert cache.lookup("how can I cancel my order").hit is False
    assert local_backend.get(stored_key) is MISS


def test_clear_leaves_other_entries_of_the_backend():
    backend = InMemoryBackend()
    backend.set("plain", "kept")
    cache = SemanticCache(backend, bow_embed, threshold=0.8)
    cache.set("how do I cancel my order", "Orders > Cancel")
    cache.clear()
    assert backend.get("plain") == "kept"
    assert cache.get("how do I cancel my order") is MISS


# -- the same answers as the cluster ----------------------------------------------------

_VOCAB = re.findall(
    r"\w+",
    """order password refund parcel email address account invoice delivery kettle sofa card
    payment plan upgrade cancel reset change track return ship open close update""",
)


def _workload(seed: int = 11) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Stored ``(question, context, answer)`` and queries ``(text, context, truth)``:
    rewordings with 0-3 words replaced (scores spread over hits, misses and near ties),
    some negated (the guard), some in another context."""
    rng = random.Random(seed)
    stored, seen = [], set()
    while len(stored) < 40:
        q = " ".join(rng.sample(_VOCAB, 5))
        if q not in seen:
            seen.add(q)
            stored.append((q, "c1" if len(stored) % 4 == 0 else "", f"answer-{len(stored) % 15}"))
    queries = []
    for j in range(80):
        q, ctx, answer = rng.choice(stored)
        words = q.split()
        changed = rng.choice([0, 1, 1, 2, 2, 3])
        for i in rng.sample(range(len(words)), changed):
            words[i] = rng.choice(_VOCAB)
        if rng.random() < 0.3:
            rng.shuffle(words)
        text = " ".join(words)
        if j % 9 == 0:
            text = "don't " + text
        if j % 13 == 0:
            ctx = "c2" if ctx else "c1"
        queries.append((text, ctx, answer if changed <= 1 else f"fresh-{j}"))
    return stored, queries


def _outcome(found):
    score = None if found.score is None else round(found.score, 4)
    return (found.hit, found.kind, found.value, found.matched, found.reason, score)


def _run_static(cache):
    stored, queries = _workload()
    for q, ctx, answer in stored:
        assert cache.set(q, answer, context=ctx)
    return [_outcome(cache.lookup(q, context=ctx)) for q, ctx, _ in queries]


def _run_adaptive(cache):
    stored, queries = _workload(23)
    for q, ctx, answer in stored:
        cache.set(q, answer, context=ctx)
    out = []
    for _ in range(3):
        for q, ctx, truth in queries:
            out.append(cache.get_or_compute(q, lambda t=truth: t, context=ctx))
    return out


def _adaptive(backend):
    policy = AdaptivePolicy(0.2, min_labels=4, explore_rate=0.1, rng=random.Random(3))
    return AdaptiveSemanticCache(backend, bow_embed, policy=policy, model="bow64")


@pytest.mark.ray
def test_local_semantic_cache_answers_as_the_cluster_does(cluster):
    on_cluster = SemanticCache(cluster, bow_embed, threshold=0.8, model="bow64")
    local = SemanticCache(InMemoryBackend(), bow_embed, threshold=0.8, model="bow64")
    assert not on_cluster.local
    assert local.local
    remote, here = _run_static(on_cluster), _run_static(local)
    assert here == remote
    kinds = {o[1] for o in here}
    reasons = {o[4] for o in here}
    assert {"exact", "semantic", "miss"} <= kinds  # the workload covers every outcome
    assert {"threshold", "guard:negation"} <= reasons
    assert on_cluster.metrics.snapshot() == local.metrics.snapshot()


@pytest.mark.ray
def test_local_adaptive_cache_learns_and_answers_as_the_cluster_does(cluster):
    on_cluster, local = _adaptive(cluster), _adaptive(InMemoryBackend())
    remote, here = _run_adaptive(on_cluster), _run_adaptive(local)
    assert here == remote
    snap_c, snap_l = on_cluster.metrics.snapshot(), local.metrics.snapshot()
    assert snap_l == snap_c
    assert snap_l["verifications"] > 0
    assert snap_l["semantic_hits"] > 0  # it learned enough to serve
