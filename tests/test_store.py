"""LRUStore: byte bound, LRU order, TTL, tags and per-tenant quotas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from omnicache_cluster.core.store import ENTRY_OVERHEAD, Entry, LRUStore
from omnicache_cluster.errors import ValueTooLarge


class FakeClock:
    """A settable wall clock."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class EvictionLog:
    """Collects ``on_evict`` calls."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, key: str, entry: Entry, reason: str) -> None:
        assert isinstance(entry, Entry)
        self.events.append((key, reason))

    def keys(self, reason: str) -> list[str]:
        return [k for k, r in self.events if r == reason]


def charge(key: str, value: bytes, tags: tuple[str, ...] = ()) -> int:
    return len(key) + len(value) + sum(len(t) for t in tags) + ENTRY_OVERHEAD


def held(store: LRUStore) -> list[str]:
    """The keys the store holds, least recently used first."""
    return list(store.keys())


def make(
    max_bytes: int = 10_000, max_entries: int | None = None
) -> tuple[LRUStore, FakeClock, EvictionLog]:
    clock, log = FakeClock(), EvictionLog()
    return LRUStore(max_bytes, max_entries, clock=clock, on_evict=log), clock, log


# -- model-based test -----------------------------------------------------------------------

KEYS = [f"k{i}" for i in range(8)]
TAGS = ["red", "green", "blue"]
TENANTS = ["acme", "globex", "initech"]


@dataclass
class ModelEntry:
    value: bytes
    tags: tuple[str, ...]
    tenant: str
    expires_at: float | None


class StoreMachine(RuleBasedStateMachine):
    """Runs random operations against the store and a plain-dict model.

    The store may drop entries the model still has (eviction), but it must never hold a
    key the model does not have, never return a value other than the model's latest one
    for that key, and never return an expired value.
    """

    def __init__(self) -> None:
        super().__init__()
        self.store: LRUStore | None = None
        self.model: dict[str, ModelEntry] = {}
        self.recency: list[str] = []  # model keys, least recently used first
        self.limits: dict[str, int] = {}
        self.clock = FakeClock()
        self.log = EvictionLog()

    @initialize(
        max_bytes=st.integers(150, 2500),
        max_entries=st.none() | st.integers(1, 10),
    )
    def setup(self, max_bytes: int, max_entries: int | None) -> None:
        self.store = LRUStore(max_bytes, max_entries, clock=self.clock, on_evict=self.log)

    # helpers

    def _live(self, key: str) -> bool:
        m = self.model.get(key)
        return m is not None and (m.expires_at is None or m.expires_at > self.clock.now)

    def _touch(self, key: str) -> None:
        if key in self.recency:
            self.recency.remove(key)
        self.recency.append(key)

    def _forget(self, key: str) -> None:
        self.model.pop(key, None)
        if key in self.recency:
            self.recency.remove(key)

    def _charge_of(self, keys: list[str]) -> int:
        return sum(charge(k, self.model[k].value, self.model[k].tags) for k in keys)

    # rules

    @rule(
        key=st.sampled_from(KEYS),
        value=st.binary(max_size=400),
        tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True).map(tuple),
        tenant=st.sampled_from(TENANTS),
        ttl=st.none() | st.integers(1, 40),
    )
    def set(
        self, key: str, value: bytes, tags: tuple[str, ...], tenant: str, ttl: int | None
    ) -> None:
        store = self.store
        assert store is not None
        size = charge(key, value, tags)
        assert store.charge(key, value, tags) == size
        expires_at = None if ttl is None else self.clock.now + ttl
        limit = self.limits.get(tenant)
        before_keys = list(store.keys())
        before_bytes = store.bytes
        if size > store.max_bytes or (limit is not None and size > limit):
            with pytest.raises(ValueTooLarge):
                store.set(key, value, expires_at=expires_at, tags=tags, tenant=tenant)
            assert list(store.keys()) == before_keys
            assert store.bytes == before_bytes
            return
        self.log.events.clear()
        store.set(key, value, expires_at=expires_at, tags=tags, tenant=tenant)
        self.model[key] = ModelEntry(value, tags, tenant, expires_at)
        self._touch(key)
        keys_now = list(store.keys())
        # The entry just written is always kept, and is the most recently used.
        assert keys_now[-1] == key
        entry = store.get_entry(key)
        assert entry is not None
        assert entry.value == value
        # Evictions only happen from the old end: quota victims are the tenant's oldest,
        # LRU victims the globally oldest of what is left.
        others = [k for k in before_keys if k != key]
        quota = self.log.keys("quota")
        lru = self.log.keys("lru")
        assert {r for _, r in self.log.events} <= {"quota", "lru"}
        tenant_before = [k for k in others if self.model[k].tenant == tenant]
        assert quota == tenant_before[: len(quota)]
        remaining = [k for k in others if k not in quota]
        assert lru == remaining[: len(lru)]
        # And no more than needed: without the last victim the bound would not hold.
        if lru:
            kept = [*keys_now, lru[-1]]
            over_bytes = self._charge_of(kept) > store.max_bytes
            over_count = store.max_entries is not None and len(kept) > store.max_entries
            assert over_bytes or over_count
        if quota:
            kept_t = [k for k in keys_now if self.model[k].tenant == tenant]
            assert limit is not None
            assert self._charge_of([*kept_t, quota[-1]]) > limit

    @rule(key=st.sampled_from(KEYS))
    def get(self, key: str) -> None:
        store = self.store
        assert store is not None
        held = key in list(store.keys())
        result = store.get(key)
        if result is not None:
            assert self._live(key)
            assert result == self.model[key].value
            self._touch(key)
        else:
            assert not (held and self._live(key)), "a held, live key was not returned"
            assert key not in list(store.keys()) or self._live(key)

    @rule(key=st.sampled_from(KEYS))
    def peek(self, key: str) -> None:
        store = self.store
        assert store is not None
        order = list(store.keys())
        present = key in store
        if present:
            assert self._live(key)
            entry = store.get_entry(key)
            assert entry is not None
            assert entry.value == self.model[key].value
            assert list(store.keys()) == order  # neither changes recency
        else:
            assert key not in list(store.keys())

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        store = self.store
        assert store is not None
        expected = key in list(store.keys()) and self._live(key)
        assert store.delete(key) is expected
        self._forget(key)
        assert key not in list(store.keys())

    @rule(tag=st.sampled_from(TAGS))
    def invalidate_tag(self, tag: str) -> None:
        store = self.store
        assert store is not None
        tagged_held = {k for k in held(store) if tag in self.model[k].tags}
        removed = store.invalidate_tag(tag)
        assert sorted(removed) == sorted(tagged_held)
        for k in [k for k, m in self.model.items() if tag in m.tags]:
            self._forget(k)
        assert not any(k in tagged_held for k in held(store))
        assert store.invalidate_tag(tag) == []

    @rule(seconds=st.integers(0, 25))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def expire(self) -> None:
        store = self.store
        assert store is not None
        due = {k for k in held(store) if not self._live(k)}
        assert store.expire() == len(due)
        assert set(held(store)).isdisjoint(due)

    @rule(tenant=st.sampled_from(TENANTS), limit=st.none() | st.integers(120, 1500))
    def set_tenant_limit(self, tenant: str, limit: int | None) -> None:
        store = self.store
        assert store is not None
        others = {t: store.tenant_bytes(t) for t in TENANTS if t != tenant}
        store.set_tenant_limit(tenant, limit)
        if limit is None:
            self.limits.pop(tenant, None)
        else:
            self.limits[tenant] = limit
            assert store.tenant_bytes(tenant) <= limit
        assert {t: store.tenant_bytes(t) for t in others} == others

    # invariants

    @invariant()
    def bounds_and_accounting(self) -> None:
        store = self.store
        if store is None:
            return
        keys = list(store.keys())
        assert store.bytes <= store.max_bytes
        if store.max_entries is not None:
            assert len(store) <= store.max_entries
        assert len(store) == len(keys)
        # Never a key the model deleted or invalidated.
        assert set(keys) <= set(self.model)
        # Bytes are exactly the charges of what is held.
        assert store.bytes == self._charge_of(keys)
        for t in TENANTS:
            mine = [k for k in keys if self.model[k].tenant == t]
            assert store.tenant_bytes(t) == self._charge_of(mine)
        snap = store.snapshot()
        assert snap.bytes == store.bytes
        assert snap.entries == len(keys)
        assert sum(snap.tenant_bytes.values()) == store.bytes
        assert sum(snap.tenant_entries.values()) == len(keys)
        for t, limit in self.limits.items():
            assert store.tenant_bytes(t) <= limit
        # Recency order is the model's, minus what was evicted.
        held = set(keys)
        assert [k for k in self.recency if k in held] == keys

    @invariant()
    def values_match_model(self) -> None:
        store = self.store
        if store is None:
            return
        for k in list(store.keys()):
            if self._live(k):  # get_entry on a live key changes nothing
                entry = store.get_entry(k)
                assert entry is not None
                m = self.model[k]
                assert entry.value == m.value
                assert entry.tenant == m.tenant
                assert entry.tags == m.tags
                assert entry.expires_at == m.expires_at


StoreMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreMachine.TestCase


# -- LRU order ------------------------------------------------------------------------------


def test_least_recently_used_is_evicted_first() -> None:
    size = charge("a", b"x" * 10)
    store, _, log = make(max_bytes=3 * size)
    for k in "abc":
        store.set(k, b"x" * 10)
    assert list(store.keys()) == ["a", "b", "c"]
    store.set("d", b"x" * 10)
    assert list(store.keys()) == ["b", "c", "d"]
    assert log.events == [("a", "lru")]
    assert store.stats.evictions["lru"] == 1


def test_get_refreshes_recency() -> None:
    size = charge("a", b"x" * 10)
    store, _, _ = make(max_bytes=3 * size)
    for k in "abc":
        store.set(k, b"x" * 10)
    assert store.get("a") == b"x" * 10
    assert list(store.keys()) == ["b", "c", "a"]
    store.set("d", b"x" * 10)
    assert "a" in store
    assert "b" not in store
    assert store.get("b") is None


def test_contains_and_get_entry_do_not_refresh_recency() -> None:
    size = charge("a", b"x" * 10)
    store, _, _ = make(max_bytes=3 * size)
    for k in "abc":
        store.set(k, b"x" * 10)
    hits, misses = store.stats.hits, store.stats.misses
    assert "a" in store
    entry = store.get_entry("a")
    assert entry is not None
    assert entry.value == b"x" * 10
    assert (store.stats.hits, store.stats.misses) == (hits, misses)
    assert list(store.keys()) == ["a", "b", "c"]
    store.set("d", b"x" * 10)
    assert "a" not in store


def test_overwrite_moves_to_most_recent_and_recharges() -> None:
    store, _, _ = make()
    store.set("a", b"1")
    store.set("b", b"2")
    store.set("a", b"longer value")
    assert list(store.keys()) == ["b", "a"]
    assert store.get("a") == b"longer value"
    assert store.bytes == charge("a", b"longer value") + charge("b", b"2")
    assert len(store) == 2


def test_eviction_frees_enough_for_a_large_entry() -> None:
    small = charge("a", b"")
    store, _, log = make(max_bytes=5 * small)
    for k in "abcde":
        store.set(k, b"")
    big = b"z" * (3 * small - len("big") - ENTRY_OVERHEAD)
    assert charge("big", big) == 3 * small
    store.set("big", big)
    assert store.bytes == store.max_bytes
    assert log.keys("lru") == ["a", "b", "c"]
    assert list(store.keys()) == ["d", "e", "big"]


def test_entry_of_exactly_max_bytes_fits_alone() -> None:
    value = b"v" * 100
    size = charge("only", value)
    store, _, _ = make(max_bytes=size)
    store.set("x", b"")
    store.set("only", value)
    assert list(store.keys()) == ["only"]
    assert store.bytes == size


def test_many_tiny_entries_are_bounded_by_overhead() -> None:
    store, _, _ = make(max_bytes=10 * ENTRY_OVERHEAD)
    for i in range(1000):
        store.set(f"{i}", b"")
    assert len(store) < 10
    assert store.bytes <= store.max_bytes


# -- max_entries ------------------------------------------------------------------------------


def test_max_entries_bound() -> None:
    store, _, log = make(max_bytes=10**9, max_entries=3)
    for i in range(10):
        store.set(f"k{i}", b"v")
        assert len(store) <= 3
    assert list(store.keys()) == ["k7", "k8", "k9"]
    assert log.keys("lru") == [f"k{i}" for i in range(7)]


def test_max_entries_one_keeps_the_newest() -> None:
    store, _, _ = make(max_entries=1)
    store.set("a", b"1")
    store.set("b", b"2")
    assert list(store.keys()) == ["b"]
    store.set("b", b"3")
    assert store.get("b") == b"3"


# -- TTL ----------------------------------------------------------------------------------------


def test_ttl_visible_before_and_gone_at_expiry() -> None:
    store, clock, log = make()
    store.set("k", b"v", expires_at=clock.now + 10)
    clock.advance(9.999)
    assert store.get("k") == b"v"
    assert "k" in store
    clock.advance(0.001)  # exactly at expiry
    assert store.get("k") is None
    assert "k" not in list(store.keys())
    assert store.stats.evictions["ttl"] == 1
    assert log.events == [("k", "ttl")]
    assert store.bytes == 0
    assert store.tenant_bytes("default") == 0


@pytest.mark.parametrize("reader", ["get", "contains", "get_entry", "delete"])
def test_expired_entry_is_invisible_to_every_reader(reader: str) -> None:
    store, clock, _ = make()
    store.set("k", b"v", expires_at=clock.now + 1)
    clock.advance(5)
    result: Any = {
        "get": lambda: store.get("k"),
        "contains": lambda: "k" in store,
        "get_entry": lambda: store.get_entry("k"),
        "delete": lambda: store.delete("k"),
    }[reader]()
    assert result in (None, False)
    assert len(store) == 0
    assert store.stats.evictions["ttl"] == 1
    assert store.stats.deletes == 0


def test_expire_sweeps_only_expired_entries() -> None:
    store, clock, log = make()
    now = clock.now
    store.set("a", b"1", expires_at=now + 1)
    store.set("b", b"2", expires_at=now + 5)
    store.set("c", b"3", expires_at=now + 10)
    store.set("forever", b"4")
    clock.advance(5)
    assert store.expire() == 2
    assert list(store.keys()) == ["c", "forever"]
    assert sorted(log.keys("ttl")) == ["a", "b"]
    assert store.stats.evictions["ttl"] == 2
    assert store.expire() == 0
    clock.advance(100)
    assert store.expire() == 1
    assert list(store.keys()) == ["forever"]


def test_expire_respects_limit() -> None:
    store, clock, _ = make()
    for i in range(5):
        store.set(f"k{i}", b"v", expires_at=clock.now + 1)
    clock.advance(2)
    assert store.expire(limit=2) == 2
    assert len(store) == 3
    assert store.expire() == 3
    assert len(store) == 0


def test_reset_with_new_ttl_survives_old_heap_item() -> None:
    store, clock, _ = make()
    store.set("k", b"old", expires_at=clock.now + 5)
    store.set("k", b"new", expires_at=clock.now + 50)
    clock.advance(10)
    assert store.expire() == 0
    assert store.get("k") == b"new"
    clock.advance(40)
    assert store.expire() == 1
    assert "k" not in store


def test_reset_without_ttl_survives_old_heap_item() -> None:
    store, clock, _ = make()
    store.set("k", b"old", expires_at=clock.now + 5)
    store.set("k", b"new")
    clock.advance(10)
    assert store.expire() == 0
    assert store.get("k") == b"new"


def test_delete_then_reset_survives_old_heap_item() -> None:
    store, clock, _ = make()
    store.set("k", b"old", expires_at=clock.now + 5)
    assert store.delete("k") is True
    store.set("k", b"new", expires_at=clock.now + 100)
    clock.advance(10)
    assert store.expire() == 0
    assert store.get("k") == b"new"


# -- tags -----------------------------------------------------------------------------------------


def test_invalidate_tag_removes_exactly_the_tagged_entries() -> None:
    store, _, log = make()
    store.set("a", b"1", tags=["user:1", "docs"])
    store.set("b", b"2", tags=["user:2"])
    store.set("c", b"3", tags=["docs"])
    store.set("d", b"4")
    removed = store.invalidate_tag("docs")
    assert sorted(removed) == ["a", "c"]
    assert list(store.keys()) == ["b", "d"]
    assert store.stats.deletes == 2
    assert log.events == []  # invalidation is not an eviction
    assert store.invalidate_tag("docs") == []
    assert store.invalidate_tag("never-used") == []
    assert store.invalidate_tag("user:1") == []  # "a" is gone, and so is its tag entry
    assert store.invalidate_tag("user:2") == ["b"]


def test_tag_index_cleaned_after_delete() -> None:
    store, _, _ = make()
    store.set("k", b"v", tags=["t"])
    store.delete("k")
    assert store._tags == {}
    store.set("k", b"v2")  # same key, no tag now
    assert store.invalidate_tag("t") == []
    assert store.get("k") == b"v2"


def test_tag_index_cleaned_after_overwrite() -> None:
    store, _, _ = make()
    store.set("k", b"v", tags=["old"])
    store.set("k", b"v2", tags=["new"])
    assert store.invalidate_tag("old") == []
    assert store.get("k") == b"v2"
    assert store.invalidate_tag("new") == ["k"]
    assert store._tags == {}


def test_tag_index_cleaned_after_eviction_and_expiry() -> None:
    size = charge("a", b"", ("t",))
    store, clock, _ = make(max_bytes=2 * size)
    store.set("a", b"", tags=["t"])
    store.set("b", b"", tags=["t"], expires_at=clock.now + 1)
    store.set("c", b"", tags=["u"])  # evicts "a"
    assert "a" not in store
    clock.advance(2)
    assert store.expire() == 1  # "b"
    assert store._tags == {"u": {"c"}}
    store.set("a", b"back")
    assert store.invalidate_tag("t") == []
    assert store.get("a") == b"back"


def test_tags_are_charged() -> None:
    store, _, _ = make()
    store.set("k", b"v", tags=["abc", "de"])
    assert store.bytes == len("k") + len("v") + 5 + ENTRY_OVERHEAD
    assert LRUStore.charge("k", b"v", ["abc", "de"]) == store.bytes


def test_clear_with_and_without_predicate() -> None:
    store, _, _ = make()
    store.set("a", b"1", tenant="x")
    store.set("b", b"2", tenant="y")
    store.set("c", b"3", tenant="x")
    assert store.clear(lambda _k, e: e.tenant == "x") == 2
    assert list(store.keys()) == ["b"]
    assert store.tenant_bytes("x") == 0
    assert store.clear() == 1
    assert len(store) == 0
    assert store.bytes == 0


# -- tenants -----------------------------------------------------------------------------


def test_per_tenant_byte_accounting() -> None:
    store, _, _ = make()
    store.set("a1", b"xx", tenant="a")
    store.set("a2", b"yyyy", tenant="a")
    store.set("b1", b"z", tenant="b")
    assert store.tenant_bytes("a") == charge("a1", b"xx") + charge("a2", b"yyyy")
    assert store.tenant_bytes("b") == charge("b1", b"z")
    assert store.tenant_bytes("nobody") == 0
    store.set("a1", b"x", tenant="b")  # moves between tenants
    assert store.tenant_bytes("a") == charge("a2", b"yyyy")
    assert store.tenant_bytes("b") == charge("b1", b"z") + charge("a1", b"x")
    snap = store.snapshot()
    assert snap.tenant_entries == {"a": 1, "b": 2}
    assert snap.tenant_bytes == {"a": store.tenant_bytes("a"), "b": store.tenant_bytes("b")}


def test_set_tenant_limit_evicts_own_oldest_entries() -> None:
    store, _, log = make()
    per = charge("a0", b"v" * 10)
    store.set("b0", b"v" * 10, tenant="b")  # globally the oldest
    for i in range(5):
        store.set(f"a{i}", b"v" * 10, tenant="a")
    store.set("b1", b"v" * 10, tenant="b")
    b_bytes = store.tenant_bytes("b")
    store.set_tenant_limit("a", 2 * per)
    assert [k for k in held(store) if k.startswith("a")] == ["a3", "a4"]
    assert log.events == [("a0", "quota"), ("a1", "quota"), ("a2", "quota")]
    assert store.stats.evictions["quota"] == 3
    assert store.tenant_bytes("a") == 2 * per
    assert store.tenant_bytes("b") == b_bytes
    assert "b0" in store
    assert "b1" in store


def test_tenant_over_limit_on_set_evicts_its_own_entries_only() -> None:
    store, _, log = make()
    per = charge("a0", b"v" * 10)
    store.set_tenant_limit("a", 3 * per)
    store.set("b0", b"v" * 10, tenant="b")
    for i in range(6):
        store.set(f"a{i}", b"v" * 10, tenant="a")
        assert store.tenant_bytes("a") <= 3 * per
    assert [k for k in held(store) if k.startswith("a")] == ["a3", "a4", "a5"]
    assert set(log.keys("quota")) == {"a0", "a1", "a2"}
    assert log.keys("lru") == []
    assert "b0" in store
    # A recently read entry of the tenant is kept over an older unread one.
    assert store.get("a3") is not None
    store.set("a6", b"v" * 10, tenant="a")
    assert [k for k in held(store) if k.startswith("a")] == ["a5", "a3", "a6"]


def test_entry_over_tenant_limit_is_value_too_large() -> None:
    store, _, _ = make()
    store.set_tenant_limit("a", 200)
    store.set("keep", b"v", tenant="a")
    with pytest.raises(ValueTooLarge) as info:
        store.set("big", b"x" * 500, tenant="a")
    assert info.value.limit == 200
    assert list(store.keys()) == ["keep"]
    store.set("big", b"x" * 500, tenant="b")  # no limit for b
    assert "big" in store


def test_removing_tenant_limit() -> None:
    store, _, _ = make()
    store.set_tenant_limit("a", ENTRY_OVERHEAD + 10)
    store.set_tenant_limit("a", None)
    store.set("k1", b"v" * 10, tenant="a")
    store.set("k2", b"v" * 10, tenant="a")
    assert len(store) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "100"], ids=repr)
def test_set_tenant_limit_rejects_bad_values(bad: Any) -> None:
    store, _, _ = make()
    with pytest.raises(ValueError, match="max_bytes"):
        store.set_tenant_limit("a", bad)


# -- ValueTooLarge --------------------------------------------------------------------------------


def test_value_too_large_changes_nothing() -> None:
    store, _, log = make(max_bytes=1000)
    store.set("a", b"1", tags=["t"])
    store.set("big", b"small for now")
    before = (list(store.keys()), store.bytes, store.snapshot())
    with pytest.raises(ValueTooLarge) as info:
        store.set("big", b"x" * 1000, tags=["t"])
    err = info.value
    assert err.size == charge("big", b"x" * 1000, ("t",))
    assert err.limit == 1000
    assert isinstance(err, ValueError)
    assert (list(store.keys()), store.bytes, store.snapshot()) == before
    assert store.get("big") == b"small for now"
    assert sorted(store.invalidate_tag("t")) == ["a"]
    assert log.events == []


def test_one_byte_over_max_bytes_is_value_too_large() -> None:
    store, _, _ = make(max_bytes=500)
    value = b"x" * (500 - len("k") - ENTRY_OVERHEAD + 1)
    assert charge("k", value) == 501
    with pytest.raises(ValueTooLarge):
        store.set("k", value)
    assert len(store) == 0
    assert store.bytes == 0
    store.set("k", value[:-1])
    assert store.bytes == 500


# -- constructor ----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_bytes", [0, -1, 1.5, "1024", None], ids=repr)
def test_constructor_rejects_bad_max_bytes(max_bytes: Any) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        LRUStore(max_bytes)


@pytest.mark.parametrize("max_entries", [0, -3, 2.5, "10"], ids=repr)
def test_constructor_rejects_bad_max_entries(max_entries: Any) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        LRUStore(1000, max_entries)


def test_stats_counters() -> None:
    store, _, _ = make()
    store.set("a", b"1")
    store.get("a")
    store.get("missing")
    store.delete("a")
    store.delete("a")
    s = store.snapshot()
    assert (s.sets, s.hits, s.misses, s.deletes) == (1, 1, 1, 1)
    assert (s.entries, s.bytes) == (0, 0)
    assert s.tenant_bytes == {}
    assert s.tenant_entries == {}
