"""SemanticCache through the real cluster: real Ray actors, the real FAISS index actor."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time

import numpy as np
import pytest

from omnicache_cluster import MISS
from omnicache_cluster.semantic import SemanticCache, SemanticIndex, chat_context, context_hash

pytestmark = pytest.mark.ray

DIM = 64


def bow_embed(text: str) -> np.ndarray:
    """A deterministic bag-of-words embedding: shared words make similar vectors."""
    vec = np.zeros(DIM)
    for word in re.findall(r"[a-z0-9']+", text.lower()):
        seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vec += np.random.default_rng(seed).normal(size=DIM)
    return vec


def make(cluster, **kwargs):
    kwargs.setdefault("threshold", 0.8)
    return SemanticCache(cluster, bow_embed, model="bow64", **kwargs)


def test_exact_then_semantic_hit_reports_its_score(cluster):
    cache = make(cluster)
    assert cache.set("How do I cancel my order?", "Orders > Cancel")
    exact = cache.lookup("How do I cancel my order?")
    assert (exact.hit, exact.kind, exact.value, exact.score) == (
        True,
        "exact",
        "Orders > Cancel",
        1.0,
    )
    reworded = cache.lookup("how can I cancel my order")
    assert reworded.hit
    assert reworded.kind == "semantic"
    assert reworded.value == "Orders > Cancel"
    assert reworded.matched == "How do I cancel my order?"
    expected = float(
        np.dot(
            bow_embed("how can I cancel my order")
            / np.linalg.norm(bow_embed("how can I cancel my order")),
            bow_embed("How do I cancel my order?")
            / np.linalg.norm(bow_embed("How do I cancel my order?")),
        )
    )
    assert reworded.score == pytest.approx(expected, abs=1e-5)
    assert 0.8 <= reworded.score < 1.0
    miss = cache.lookup("what is the capital of france")
    assert not miss.hit
    assert miss.value is MISS
    assert cache.get("what is the capital of france", "fallback") == "fallback"
    snap = cache.metrics.snapshot()
    assert (snap["exact_hits"], snap["semantic_hits"], snap["misses"]) == (1, 1, 2)


def test_lexical_guard_refuses_negation_numbers_and_entities(cluster):
    cache = make(cluster)
    cache.set("cancel my order", "cancelled")
    cache.set("what was the revenue in 2023", "$10M")
    cache.set("how do I export my data from Salesforce", "Setup > Export")
    for query, reason in [
        ("don't cancel my order", "guard:negation"),
        ("what was the revenue in 2024", "guard:number"),
        ("how do I export my data from HubSpot", "guard:entity"),
    ]:
        found = cache.lookup(query)
        assert not found.hit, query
        assert found.reason == reason
    assert cache.lookup("please cancel my order").value == "cancelled"
    assert cache.lookup("what was the revenue in 2023 exactly").value == "$10M"
    assert cache.metrics.snapshot()["guard_rejections"] == 3
    # Without the guard the embedding alone would have served the wrong answers.
    unguarded = make(cluster, lexical_guard=False)
    assert unguarded.lookup("don't cancel my order").value == "cancelled"
    assert unguarded.lookup("what was the revenue in 2024").value == "$10M"


def test_multi_turn_context_scopes_the_lookup(cluster):
    cache = make(cluster)
    chat_a = [
        {"role": "user", "content": "I bought a blue kettle"},
        {"role": "assistant", "content": "Nice."},
        {"role": "user", "content": "how do I return it"},
    ]
    chat_b = [
        {"role": "user", "content": "I bought a red sofa"},
        {"role": "assistant", "content": "Nice."},
        {"role": "user", "content": "so how do I return it"},
    ]
    q_a, ctx_a = chat_context(chat_a, model="m1")
    q_b, ctx_b = chat_context(chat_b, model="m1")
    assert ctx_a != ctx_b
    assert ctx_a == chat_context(list(chat_a), model="m1")[1]
    assert chat_context(chat_a, model="m2")[1] != ctx_a
    cache.set(q_a, "kettle returns: 30 days", context=ctx_a)
    # Reworded last message, other conversation: no hit, exact or semantic.
    assert not cache.lookup(q_b, context=ctx_b).hit
    assert not cache.lookup(q_a, context=ctx_b).hit
    assert not cache.lookup(q_a).hit  # no context is a context too
    assert cache.lookup(q_b, context=ctx_a).value == "kettle returns: 30 days"
    # A context can be given as the structure itself; it is hashed the same way.
    ctx = {"system": "be brief", "turns": [], "model": "m1", "tools": None}
    cache.set("what is our refund window", "14 days", context=ctx)
    assert cache.lookup("so what is our refund window", context=context_hash(ctx)).hit


def test_tenant_never_gets_another_tenants_entries(cluster):
    acme, globex = cluster.for_tenant("acme"), cluster.for_tenant("globex")
    make(acme).set("how do I reset my password", "acme: use the acme portal")
    g = make(globex)
    assert not g.lookup("how do I reset my password").hit
    assert not g.lookup("how can I reset my password").hit
    # The raw index of globex finds nothing, even for the identical vector.
    index_g = SemanticIndex(globex, "bow64", DIM)
    hits, _ = index_g.search(bow_embed("how do I reset my password"), top_k=10)
    assert hits == [[]]
    # And globex cannot point its index at acme's stored key.
    acme_key = acme.key(("semantic/v1", "bow64", "", "how do I reset my password"), "semantic")
    with pytest.raises(ValueError, match="tenant"):
        index_g.add([acme_key], bow_embed("x"))
    index_a = SemanticIndex(acme, "bow64", DIM)
    found, _ = index_a.search(bow_embed("how do I reset my password"), top_k=10)
    assert [k for k, *_ in found[0]] == [acme_key]


def test_bad_vectors_raise_before_sending_and_get_or_compute_fails_open(cluster):
    index = SemanticIndex(cluster, "bow64", DIM)
    key = cluster.key("x", "semantic")
    for bad, match in [
        (np.ones(DIM + 1), "dimension"),
        (np.full(DIM, np.nan), "NaN"),
        (np.full(DIM, np.inf), "NaN or infinite"),
        (np.zeros(DIM), "zero"),
        ("not a vector", "numbers"),
    ]:
        with pytest.raises(ValueError, match=match):
            index.add([key], bad)
        with pytest.raises(ValueError, match=match):
            index.search(bad)
    assert index.stats()["vectors"] == 0
    broken = SemanticCache(cluster, lambda _t: np.zeros(DIM), model="bow64", dim=DIM)
    with pytest.raises(ValueError, match="zero"):
        broken.lookup("anything new")
    calls = []
    assert (
        broken.get_or_compute("anything new", lambda: calls.append(1) or "computed") == "computed"
    )
    assert calls == [1]
    assert broken.metrics.snapshot()["errors"] >= 1


def test_get_or_compute_stores_and_serves_rewordings(cluster):
    cache = make(cluster)
    calls = []

    def llm(answer):
        return lambda: calls.append(answer) or answer

    assert cache.get_or_compute("how do I change my email address", llm("settings")) == "settings"
    assert cache.get_or_compute("how can I change my email address", llm("other")) == "settings"
    assert cache.get_or_compute("how do I delete my account", llm("profile")) == "profile"
    assert calls == ["settings", "profile"]


def test_expiry_and_delete_remove_vectors(cluster):
    cache = make(cluster, ttl=0.6)
    index = SemanticIndex(cluster, "bow64", DIM)
    cache.set("when does the store open", "9am")
    cache.set("where is the store", "Main St", ttl=60)
    assert cache.lookup("when does the store open please").hit
    assert index.stats()["vectors"] == 2
    time.sleep(1.0)
    found = cache.lookup("when does the store open please")
    assert not found.hit
    index.sweep()
    assert index.stats()["vectors"] == 1
    key = cluster.key(("semantic/v1", "bow64", "", "where is the store"), "semantic")
    assert index.delete([key]) == 1
    assert not cache.lookup("where is the store located").hit
    assert index.stats()["vectors"] == 0


def test_pointer_to_an_evicted_entry_is_dropped(cluster):
    cache = make(cluster)
    cache.set("how do I book a table", "call us")
    key = cluster.key(("semantic/v1", "bow64", "", "how do I book a table"), "semantic")
    from omnicache_cluster import CacheKey

    assert cluster.delete(CacheKey.parse(key))  # the answer goes, the pointer stays
    assert not cache.lookup("how do I book a table please").hit
    assert cache.metrics.snapshot()["stale_pointers"] == 1
    hits, _ = SemanticIndex(cluster, "bow64", DIM).search(bow_embed("how do I book a table"))
    assert hits == [[]]


def test_cache_faults_fail_open_with_a_counter(ray_session, caplog):
    from omnicache_cluster import CacheCluster

    nowhere = CacheCluster("no-such-cluster-here", options=None).with_options(
        retry_deadline_s=0.5, call_timeout_s=0.5
    )
    cache = SemanticCache(nowhere, bow_embed, model="bow64")
    assert cache.get_or_compute("how do I pay", lambda: "card") == "card"
    assert cache.lookup("how do I pay").reason == "error"
    assert cache.metrics.snapshot()["errors"] >= 2
    assert "served as a miss" in caplog.text


async def test_async_twins(cluster):
    cache = make(cluster)

    async def aembed(text):
        return bow_embed(text)

    acache = SemanticCache(cluster, aembed, model="bow64", threshold=0.8)
    assert await acache.aset("how do I update my card", "Billing")
    assert (await cache.alookup("how can I update my card")).kind == "semantic"
    assert await acache.aget("how can I update my card") == "Billing"

    async def compute():
        await asyncio.sleep(0)
        return "Security"

    assert await acache.aget_or_compute("how do I enable two factor login", compute) == "Security"
    assert await acache.aget("how can I enable two factor login") == "Security"


def test_index_is_shared_across_processes(cluster, ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0.1)
    def lookup_in_task(client, query):
        found = SemanticCache(client, bow_embed, model="bow64", threshold=0.8).lookup(query)
        return found.kind, found.value

    make(cluster).set("what are your opening hours", "9 to 5")
    assert ray.get(lookup_in_task.remote(cluster, "so what are your opening hours")) == (
        "semantic",
        "9 to 5",
    )


def test_shutdown_kills_the_semantic_index(fresh_cluster, ray_session):
    from omnicache_cluster.actors.remote import SEMANTIC_INDEX_NAME

    own = fresh_cluster(num_shards=1)
    make(own).set("hello there", "hi")
    ray_session.get_actor(SEMANTIC_INDEX_NAME, namespace=own.namespace)
    own.shutdown(stop_ray=False)
    with pytest.raises(ValueError, match="Failed to look up actor"):
        ray_session.get_actor(SEMANTIC_INDEX_NAME, namespace=own.namespace)


# -- near-ties between two cached questions ---------------------------------------------


def _unit(*parts: tuple[int, float]) -> np.ndarray:
    vec = np.zeros(8)
    for i, x in parts:
        vec[i] = x
    return vec / np.linalg.norm(vec)


def _at(score: float, axis: int) -> np.ndarray:
    """A unit vector whose cosine with axis 0 is ``score``."""
    return _unit((0, score), (axis, float(np.sqrt(1.0 - score * score))))


TIE_QUERY = "how to reset my password"
TIE_A = "how do I reset my password"
TIE_B = "how can I reset my password"


def tie_cache(cluster, name: str, vectors: dict[str, np.ndarray], **kwargs) -> SemanticCache:
    vectors = {TIE_QUERY: _unit((0, 1.0)), **vectors}
    return SemanticCache(
        cluster, lambda text: vectors[text], model=f"tie-{name}", threshold=0.9, **kwargs
    )


def two_answers(cluster, name: str, score_a: float, score_b: float, answer_b: str):
    """A cache holding TIE_A ("Settings > Password") and TIE_B at the given scores."""
    cache = tie_cache(cluster, name, {TIE_A: _at(score_a, 1), TIE_B: _at(score_b, 2)})
    cache.set(TIE_A, "Settings > Password")
    cache.set(TIE_B, answer_b)
    return cache


def test_a_near_tie_between_different_answers_is_an_ambiguous_miss(cluster):
    vectors = {TIE_A: _at(0.95, 1), TIE_B: _at(0.945, 2)}
    cache = tie_cache(cluster, "differ", vectors)
    assert cache.tie_margin == 0.01
    cache.set(TIE_A, "Settings > Password")
    cache.set(TIE_B, "Ask your administrator")
    found = cache.lookup(TIE_QUERY)
    assert (found.hit, found.reason) == (False, "ambiguous")
    assert found.score == pytest.approx(0.95, abs=1e-4)
    assert cache.metrics.snapshot()["ambiguous_rejections"] == 1
    # With the margin off, the best candidate is served.
    off = tie_cache(cluster, "differ", vectors, tie_margin=0)
    assert off.lookup(TIE_QUERY).value == "Settings > Password"
    # get_or_compute runs the function on an ambiguous lookup.
    assert cache.get_or_compute(TIE_QUERY, lambda: "fresh") == "fresh"


def test_a_near_tie_between_equal_answers_or_a_clear_winner_is_served(cluster):
    same = two_answers(cluster, "same", 0.95, 0.945, "Settings > Password")
    found = same.lookup(TIE_QUERY)
    assert (found.hit, found.matched) == (True, TIE_A)
    clear = two_answers(cluster, "clear", 0.95, 0.93, "Ask your administrator")
    assert clear.lookup(TIE_QUERY).value == "Settings > Password"
    # A runner-up below the threshold still counts when it is within the margin.
    low = two_answers(cluster, "low", 0.905, 0.899, "Ask your administrator")
    assert low.lookup(TIE_QUERY).reason == "ambiguous"
    assert same.metrics.snapshot()["ambiguous_rejections"] == 0


def test_a_runner_up_the_guard_refuses_or_whose_entry_is_gone_is_no_rival(cluster):
    other = "how do I reset my password in 2019"  # the guard refuses it (number)
    cache = tie_cache(cluster, "guarded", {TIE_A: _at(0.95, 1), other: _at(0.948, 2)})
    cache.set(TIE_A, "Settings > Password")
    cache.set(other, "That version is gone")
    assert cache.lookup(TIE_QUERY).value == "Settings > Password"

    gone = two_answers(cluster, "gone", 0.95, 0.946, "Ask your administrator")
    from omnicache_cluster import CacheKey

    key_b = cluster.key(("semantic/v1", "tie-gone", "", TIE_B), "semantic")
    assert cluster.delete(CacheKey.parse(key_b))  # the rival's answer goes
    assert gone.lookup(TIE_QUERY).value == "Settings > Password"


async def test_near_tie_async(cluster):
    cache = tie_cache(cluster, "async", {TIE_A: _at(0.95, 1), TIE_B: _at(0.944, 2)})
    await cache.aset(TIE_A, "Settings > Password")
    await cache.aset(TIE_B, "Ask your administrator")
    assert (await cache.alookup(TIE_QUERY)).reason == "ambiguous"
    assert await cache.aget_or_compute(TIE_QUERY, lambda: "fresh") == "fresh"


@pytest.mark.parametrize("bad", [-0.01, 1.0, True, "0.01", None])
def test_tie_margin_is_checked(cluster, bad):
    with pytest.raises(ValueError, match="tie_margin"):
        SemanticCache(cluster, bow_embed, tie_margin=bad)


# -- a candidate far below one the guard refused -----------------------------------------

REV_QUERY = "what was the revenue in 2024"
REV_2023 = "what was the revenue in 2023"  # the guard refuses it (number)


def revenue_cache(cluster, name: str, other: str, score: float, **kwargs) -> SemanticCache:
    """REV_2023 at 0.95 and ``other`` (answering 2024) at ``score`` from the query."""
    vectors = {REV_QUERY: _unit((0, 1.0)), REV_2023: _at(0.95, 1), other: _at(score, 2)}
    cache = SemanticCache(
        cluster, lambda text: vectors[text], model=f"rev-{name}", threshold=0.8, **kwargs
    )
    cache.set(REV_2023, "$10M")
    cache.set(other, "$12M")
    return cache


def test_a_candidate_far_below_a_refused_one_is_not_served(cluster):
    far = "how much money did we make in 2024"
    cache = revenue_cache(cluster, "far", far, 0.85)
    assert cache.refusal_margin == 0.05
    found = cache.lookup(REV_QUERY)
    assert (found.hit, found.reason) == (False, "guard:number")
    # Without the limit the far entry is served.
    loose = revenue_cache(cluster, "far", far, 0.85, refusal_margin=None)
    assert loose.lookup(REV_QUERY).value == "$12M"
    # A candidate close below the refused one is: the numbers tell them apart.
    near = revenue_cache(cluster, "near", "what was the revenue for 2024", 0.93)
    found = near.lookup(REV_QUERY)
    assert (found.value, found.matched) == ("$12M", "what was the revenue for 2024")


@pytest.mark.parametrize("bad", [-0.1, 2.5, True, "0.05"])
def test_refusal_margin_is_checked(cluster, bad):
    with pytest.raises(ValueError, match="refusal_margin"):
        SemanticCache(cluster, bow_embed, refusal_margin=bad)
