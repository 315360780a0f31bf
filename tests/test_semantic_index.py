"""The vector side: FAISS against brute force, expiry, Qdrant and Chroma, restart rebuild."""

from __future__ import annotations

import time

import numpy as np
import pytest

from omnicache_cluster.backends.vector.base import IndexScope, VectorRecord, check_vectors
from omnicache_cluster.backends.vector.faiss import FAISSBackend
from omnicache_cluster.semantic.guard import lexical_match


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(db, keys, q, k):
    scores = db @ q
    order = np.argsort(-scores)[:k]
    return [keys[i] for i in order], scores[order]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_flat_index_equals_brute_force_and_survives_deletes():
    rng = np.random.default_rng(1)
    db = _unit(rng, 2000, 32)
    keys = [f"k{i}" for i in range(len(db))]
    index = FAISSBackend(32, hnsw_threshold=10_000)
    index.add_many(keys, db)
    queries = _unit(rng, 50, 32)
    for q, hits in zip(queries, index.search_many(queries, top_k=5), strict=True):
        want, scores = _brute(db, keys, q, 5)
        assert [k for k, _ in hits] == want
        assert np.allclose([s for _, s in hits], scores, atol=1e-5)
    gone = set(keys[::3])
    assert index.delete_many(sorted(gone)) == len(gone)
    live = [i for i, k in enumerate(keys) if k not in gone]
    for q, hits in zip(queries, index.search_many(queries, top_k=5), strict=True):
        want, _ = _brute(db[live], [keys[i] for i in live], q, 5)
        assert [k for k, _ in hits] == want
    assert index.kind == "flat"
    assert len(index) == len(live)


def test_index_switches_to_hnsw_past_threshold_with_high_recall():
    rng = np.random.default_rng(2)
    db = _unit(rng, 3000, 32)
    keys = [f"k{i}" for i in range(len(db))]
    index = FAISSBackend(32, hnsw_threshold=1000, ef_search=128)
    index.add_many(keys[:900], db[:900])
    assert index.kind == "flat"
    index.add_many(keys[900:], db[900:])
    assert index.kind == "hnsw"
    index.delete_many(keys[:300])
    queries = _unit(rng, 100, 32)
    found = index.search_many(queries, top_k=10)
    recall = []
    for q, hits in zip(queries, found, strict=True):
        want, _ = _brute(db[300:], keys[300:], q, 10)
        assert not {k for k, _ in hits} & set(keys[:300])  # deleted never come back
        recall.append(len({k for k, _ in hits} & set(want)) / 10)
    assert np.mean(recall) >= 0.95


class _HookedIndex:
    """A FAISS index whose first ``add`` runs ``hook`` first: writes made while a
    background rebuild is building (outside the lock)."""

    def __init__(self, real, hook):
        self._real, self._hook = real, hook

    def add(self, x):
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        return self._real.add(x)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_background_rebuild_carries_over_writes_made_while_it_builds():
    rng = np.random.default_rng(5)
    db = _unit(rng, 1400, 32)
    keys = [f"k{i}" for i in range(len(db))]
    index = FAISSBackend(32, hnsw_threshold=1000, ef_search=128, background_rebuild=True)
    index.add_many(keys[:1200], db[:1200])
    assert index.kind == "flat"  # not rebuilt inside the write...
    assert index.rebuild_due  # ...but due
    moved = _unit(rng, 5, 32)

    def meanwhile():
        index.add_many(keys[1200:], db[1200:])  # new rows
        index.delete_many(keys[:100])  # deletes of rows being copied
        index.add_many(keys[500:505], moved)  # re-adds: new vectors for old keys

    make = index._new_index
    index._new_index = lambda kind: _HookedIndex(make(kind), meanwhile)
    assert index.rebuild() is True
    index._new_index = make
    assert index.kind == "hnsw"
    assert not index.rebuild_due
    assert index.rebuilds == 1
    assert len(index) == 1300
    want_db = db.copy()
    want_db[500:505] = moved
    live = list(range(100, 1400))
    queries = np.vstack([_unit(rng, 60, 32), moved])
    found = index.search_many(queries, top_k=10)
    recall = []
    for q, hits in zip(queries, found, strict=True):
        got = [k for k, _ in hits]
        assert not set(got) & set(keys[:100])  # deleted meanwhile: still deleted
        want, _ = _brute(want_db[live], [keys[i] for i in live], q, 10)
        recall.append(len(set(got) & set(want)) / 10)
    assert np.mean(recall) >= 0.95
    for i, q in enumerate(moved):  # a re-added key is found at its new vector
        assert index.search(q, 1)[0][0] == keys[500 + i]


def test_background_rebuild_copies_a_burst_of_new_rows_outside_the_lock():
    rng = np.random.default_rng(10)
    db = _unit(rng, 6200, 16)
    keys = [f"b{i}" for i in range(len(db))]
    index = FAISSBackend(16, hnsw_threshold=1000, background_rebuild=True)
    index.add_many(keys[:1100], db[:1100])
    rounds = []
    make = index._new_index

    def burst():  # more new rows than are carried over under the lock
        index.add_many(keys[1100:], db[1100:])

    def hooked(kind):
        real = _HookedIndex(make(kind), burst)
        original_add = real.add

        def add(x):
            rounds.append(len(x))
            return original_add(x)

        real.add = add
        return real

    index._new_index = hooked
    assert index.rebuild() is True
    index._new_index = make
    assert rounds == [1100, 5100]  # the snapshot, then the burst in a round of its own
    assert index.kind == "hnsw"
    assert len(index) == 6200
    for i in (0, 1099, 1100, 6199):
        assert index.search(db[i], 1)[0][0] == keys[i]


def test_background_rebuild_gives_up_if_cleared_meanwhile():
    rng = np.random.default_rng(6)
    index = FAISSBackend(8, hnsw_threshold=50, background_rebuild=True)
    index.add_many([f"k{i}" for i in range(60)], _unit(rng, 60, 8))
    make = index._new_index
    index._new_index = lambda kind: _HookedIndex(make(kind), lambda: index.clear())
    real_clear = index.clear

    def clear():  # the clear itself makes a plain index
        index._new_index = make
        real_clear()

    index.clear = clear
    assert index.rebuild() is False
    assert len(index) == 0
    assert index.kind == "flat"
    index.add("after", _unit(rng, 1, 8)[0])
    assert [k for k, _ in index.search(_unit(rng, 1, 8)[0], 3)] == ["after"]


def test_vectors_expire_with_their_entries_and_re_add_replaces():
    clock = FakeClock()
    index = FAISSBackend(4, clock=clock)
    index.add("short", [1, 0, 0, 0], expires_at=clock.now + 5)
    index.add("long", [0.9, 0.1, 0, 0], expires_at=clock.now + 50)
    index.add("never", [0.8, 0.2, 0, 0])
    assert [k for k, _ in index.search([1, 0, 0, 0], 3)] == ["short", "long", "never"]
    clock.now += 10
    assert [k for k, _ in index.search([1, 0, 0, 0], 3)] == ["long", "never"]
    clock.now += 100
    assert index.expire() == ["long"]  # "short" was already dropped when seen expired
    assert [k for k, _ in index.search([1, 0, 0, 0], 3)] == ["never"]
    index.add("never", [0, 0, 0, 1])  # same key, new vector: the old one is gone
    assert index.search([0, 0, 0, 1], 3) == [("never", pytest.approx(1.0))]
    assert len(index) == 1


def test_max_entries_drops_the_oldest():
    index = FAISSBackend(2, max_entries=3)
    for i in range(5):
        index.add(f"k{i}", [1.0, i / 10])
    assert len(index) == 3
    assert sorted(k for k, _ in index.search([1.0, 0.0], 5)) == ["k2", "k3", "k4"]
    assert index.take_evicted() == ["k0", "k1"]  # for the owner's durable copy
    assert index.take_evicted() == []


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([1.0, 2.0], "dimension"),
        ([float("nan")] * 3, "NaN"),
        ([float("inf"), 0, 0], "infinite"),
        ([0.0, 0.0, 0.0], "zero"),
        ([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "zero"),
    ],
)
def test_bad_vectors_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        check_vectors(bad, 3)
    with pytest.raises(ValueError, match=match):
        FAISSBackend(3).add_many(["a"] * np.atleast_2d(bad).shape[0], bad)


def test_lexical_guard_on_hand_written_pairs():
    must_miss = [
        ("cancel my order", "don't cancel my order", "negation"),
        ("Cancel my subscription", "Do not cancel my subscription", "negation"),
        ("How do I lock my card?", "How do I unlock my card?", "negation"),
        ("What was our revenue in 2023?", "What was our revenue in 2024?", "number"),
        ("Convert 100 USD to GBP", "Convert 1,000 USD to GBP", "number"),
        ("How many calories are in three eggs?", "How many calories are in 4 eggs?", "number"),
        ("Are you open on Saturday?", "Are you open on Sunday?", "date"),
        ("Where is my order from Amazon?", "Where is my order from ASOS?", "entity"),
        ("How do I reset my password?", "How do I reset my colleague's password?", "possessive"),
    ]
    for a, b, why in must_miss:
        assert lexical_match(a, b) == why, (a, b)
        assert lexical_match(b, a) == why, (b, a)
    must_hit = [
        ("How do I cancel my order?", "how can I cancel my order"),
        ("What's 15% of 200?", "Calculate fifteen percent of 200"),
        ("Is the restaurant dog-friendly?", "Are dogs allowed in the restaurant?"),
        ("How do I install Python on Windows?", "how do i install python on windows"),
        ("Hi team, how do I change my invoice currency?", "How do I change my invoice currency?"),
        ("What's the capital of Australia?", "Which city is Australia's capital?"),
    ]
    for a, b in must_hit:
        assert lexical_match(a, b) is None, (a, b)
    # The strict guard also refuses one-word swaps that embeddings cannot tell apart.
    assert lexical_match("Does the hotel have a pool?", "Does the hotel have a gym?") is None
    assert (
        lexical_match(
            "Does the hotel have a pool?", "Does the hotel have a gym?", substitution=True
        )
        == "substitution"
    )
    assert (
        lexical_match("How do I chnage my email?", "How do I change my email?", substitution=True)
        is None
    )


# -- durable backends: one contract, Qdrant local mode and embedded Chroma -------------


@pytest.fixture(params=["qdrant", "chroma"])
def durable(request, tmp_path):
    if request.param == "qdrant":
        from omnicache_cluster.backends.vector.qdrant import QdrantBackend, QdrantConfig

        def make():
            return QdrantBackend(QdrantConfig(path=str(tmp_path / "q"), collection="sem"))
    else:
        from omnicache_cluster.backends.vector.chroma import ChromaBackend

        def make():
            return ChromaBackend(path=str(tmp_path / "c"), collection="sem-test")

    return make


def test_durable_backend_filters_by_scope_and_expiry_and_never_wipes(durable):
    a = IndexScope("acme", "app", "m")
    b = IndexScope("globex", "app", "m")
    store = durable()
    now = time.time()
    v = np.array([1.0, 0.0, 0.0, 0.0])
    store.upsert(
        [
            VectorRecord("app:acme:semantic:" + "1" * 32, v, a, None, "acme q"),
            VectorRecord("app:acme:semantic:" + "2" * 32, [0.9, 0.1, 0, 0], a, now - 1, "old"),
            VectorRecord("app:globex:semantic:" + "3" * 32, v, b, None, "globex q"),
        ]
    )
    assert [k for k, _ in store.search_scope(a, v, 10)] == ["app:acme:semantic:" + "1" * 32]
    assert [k for k, _ in store.search_scope(b, v, 10)] == ["app:globex:semantic:" + "3" * 32]
    assert store.search_scope(IndexScope("acme", "app", "m", "ctx"), v, 10) == []
    store.upsert([VectorRecord("app:acme:semantic:" + "1" * 32, [0, 1.0, 0, 0], a, None, "acme q")])
    assert store.count() == 3  # same key, same point (uuid5 of the key)
    store.close()
    reopened = durable()  # a new process opening the same store: nothing was wiped
    records = {r.key: r for r in reopened.scan()}
    assert set(records) == {"app:acme:semantic:" + "1" * 32, "app:globex:semantic:" + "3" * 32}
    assert records["app:acme:semantic:" + "1" * 32].scope == a
    assert np.allclose(records["app:acme:semantic:" + "1" * 32].vector, [0, 1, 0, 0])
    reopened.delete_keys(["app:globex:semantic:" + "3" * 32])
    assert reopened.search_scope(b, v, 10) == []
    reopened.delete_expired()
    assert reopened.count() == 1
    reopened.close()


# -- through Ray ------------------------------------------------------------------------


@pytest.mark.ray
def test_actor_search_equals_brute_force(cluster):
    from omnicache_cluster.semantic import SemanticIndex

    rng = np.random.default_rng(3)
    db = _unit(rng, 500, 24)
    keys = [cluster.key(f"doc{i}", "semantic") for i in range(len(db))]
    index = SemanticIndex(cluster, "rand24", 24)
    assert index.add(keys, db * 3.0) == len(keys)  # not unit length: normalised first
    queries = _unit(rng, 20, 24)
    hits, prior = index.search(queries, top_k=5)
    assert prior is None
    for q, found in zip(queries, hits, strict=True):
        want, scores = _brute(db, keys, q, 5)
        assert [h[0] for h in found] == want
        assert np.allclose([h[1] for h in found], scores, atol=1e-5)
    assert index.delete(keys[:250]) == 250
    hits, _ = index.search(queries, top_k=5)
    for q, found in zip(queries, hits, strict=True):
        assert [h[0] for h in found] == _brute(db[250:], keys[250:], q, 5)[0]


@pytest.mark.ray
def test_actor_switches_to_hnsw_in_the_background(fresh_cluster):
    from omnicache_cluster.actors.semantic import SemanticIndexConfig
    from omnicache_cluster.semantic import SemanticIndex

    own = fresh_cluster(num_shards=1)
    config = SemanticIndexConfig(namespace=own.namespace, hnsw_threshold=400, ef_search=128)
    rng = np.random.default_rng(7)
    db = _unit(rng, 900, 16)
    keys = [own.key(f"b{i}", "semantic") for i in range(len(db))]
    index = SemanticIndex(own, "bg16", 16, config=config)
    for start in range(0, len(db), 100):  # searches keep answering between the writes
        index.add(keys[start : start + 100], db[start : start + 100])
        hits, _ = index.search(db[start], top_k=1)
        assert hits[0][0][0] == keys[start]
    index.delete(keys[:50])
    deadline = time.monotonic() + 30
    while index.stats().get("kinds") != {"hnsw": 1}:
        assert time.monotonic() < deadline, index.stats()
        time.sleep(0.1)
    queries = _unit(rng, 30, 16)
    recall = []
    for q, found in zip(queries, index.search(queries, top_k=5)[0], strict=True):
        got = [h[0] for h in found]
        assert not set(got) & set(keys[:50])
        want, _ = _brute(db[50:], keys[50:], q, 5)
        recall.append(len(set(got) & set(want)) / 5)
    assert np.mean(recall) >= 0.9


@pytest.mark.ray
def test_vectors_dropped_past_max_entries_leave_qdrant_too(fresh_cluster, tmp_path):
    from omnicache_cluster.actors.semantic import SemanticIndexConfig
    from omnicache_cluster.backends.vector.qdrant import QdrantBackend, QdrantConfig
    from omnicache_cluster.semantic import SemanticIndex

    own = fresh_cluster(num_shards=1)
    qcfg = QdrantConfig(path=str(tmp_path / "qdrant"), collection="trim")
    config = SemanticIndexConfig(namespace=own.namespace, qdrant=qcfg, max_entries_per_index=5)
    rng = np.random.default_rng(8)
    keys = [own.key(f"t{i}", "semantic") for i in range(8)]
    index = SemanticIndex(own, "m8", 8, config=config)
    for key, vec in zip(keys, _unit(rng, 8, 8), strict=True):
        index.add([key], vec)
    assert index.stats()["vectors"] == 5
    own.shutdown(stop_ray=False)
    deadline = time.monotonic() + 30
    while True:  # local mode: one process at a time; wait for the actor to let go
        try:
            store = QdrantBackend(qcfg)
            break
        except RuntimeError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    try:
        assert sorted(r.key for r in store.scan()) == sorted(keys[3:])
    finally:
        store.close()


@pytest.mark.ray
def test_searches_use_the_index_actors_direct_port(cluster):
    import asyncio

    from omnicache_cluster.actors.remote import SEMANTIC_INDEX_NAME
    from omnicache_cluster.semantic import SemanticIndex

    rng = np.random.default_rng(9)
    db = _unit(rng, 50, 12)
    keys = [cluster.key(f"w{i}", "semantic") for i in range(len(db))]
    index = SemanticIndex(cluster, "wire12", 12)
    index.add(keys, db)
    before = index.stats()["direct_requests"]
    hits, prior = index.search(db[:3], top_k=2, with_stats=True)
    assert [h[0][0] for h in hits] == keys[:3]
    assert isinstance(prior, tuple)
    assert len(prior) == 3
    ahits, _ = asyncio.run(index.asearch(db[3], top_k=1))
    assert ahits[0][0][0] == keys[3]
    assert index.stats()["direct_requests"] == before + 2
    plain = SemanticIndex(cluster.with_options(fast_path=False), "wire12", 12)
    assert [h[0][0] for h in plain.search(db[:3], top_k=1)[0]] == keys[:3]
    assert index.stats()["direct_requests"] == before + 2  # that one went through Ray
    endpoint = cluster._state.endpoints[SEMANTIC_INDEX_NAME]
    scope = list(index.scope())
    with pytest.raises(ValueError, match="float32"):  # bytes that do not fit the shape
        endpoint.call("wire_search", [scope, b"\0" * 10, 1, 12, 1, False], 5.0)
    nan = np.full((1, 12), np.nan, dtype=np.float32).tobytes()
    with pytest.raises(ValueError, match=r"NaN|finite"):  # the same checks as a Ray call
        endpoint.call("wire_search", [scope, nan, 1, 12, 1, False], 5.0)
    with pytest.raises(ValueError, match="top_k"):  # checked before sending
        index.search(db[0], top_k=0)


@pytest.mark.ray
def test_index_rebuilds_from_qdrant_after_a_restart(fresh_cluster, ray_session, tmp_path):
    from omnicache_cluster.actors.remote import SEMANTIC_INDEX_NAME
    from omnicache_cluster.actors.semantic import SemanticIndexConfig
    from omnicache_cluster.backends.vector.qdrant import QdrantBackend, QdrantConfig
    from omnicache_cluster.semantic import SemanticIndex

    ray = ray_session
    own = fresh_cluster(num_shards=1)
    qcfg = QdrantConfig(path=str(tmp_path / "qdrant"), collection="rebuild")
    config = SemanticIndexConfig(namespace=own.namespace, qdrant=qcfg)
    rng = np.random.default_rng(4)
    db = _unit(rng, 200, 16)
    acme, globex = own.for_tenant("acme"), own.for_tenant("globex")
    ia = SemanticIndex(acme, "m16", 16, config=config)
    ig = SemanticIndex(globex, "m16", 16, config=config)
    keys = [acme.key(f"q{i}", "semantic") for i in range(150)]
    ia.add(keys, db[:150], texts=[f"q{i}" for i in range(150)])
    ig.add([globex.key("g", "semantic")], db[150])
    ia.add([acme.key("brief", "semantic")], db[151], ttl=0.5)
    before = ia.search(db[:10], top_k=3)[0]
    handle = ray.get_actor(SEMANTIC_INDEX_NAME, namespace=own.namespace)
    pid = ray.get(handle.__ray_call__.remote(lambda self: __import__("os").getpid()))
    ray.kill(handle, no_restart=False)  # Ray restarts it: the constructor runs again
    time.sleep(1.0)
    after = ia.search(db[:10], top_k=3)[0]  # retried until the restarted actor answers
    assert ray.get(handle.__ray_call__.remote(lambda self: __import__("os").getpid())) != pid
    assert [[h[:3] for h in q] for q in after] == [
        [(k, pytest.approx(s, abs=1e-5), t) for k, s, t, _ in q] for q in before
    ]
    assert ia.stats()["vectors"] == 150  # the expired one was not rebuilt
    assert [h[0] for h in ig.search(db[150], top_k=5)[0][0]] == [globex.key("g", "semantic")]
    assert all(h[0].startswith(f"{acme.key_namespace}:acme:") for q in after for h in q)
    own.shutdown(stop_ray=False)
    # The Qdrant copy outlives the cluster and was never wiped. (Local mode allows one
    # process at a time: wait for the killed actor's process to let go of the folder.)
    deadline = time.monotonic() + 30
    while True:
        try:
            store = QdrantBackend(qcfg)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert store.count() >= 151
    store.close()
