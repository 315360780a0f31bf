"""The ring: stable key hash, balanced slot table, minimal movement on membership change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from omnicache_cluster.core.keys import digest
from omnicache_cluster.core.ring import DEFAULT_SLOTS, Ring, key_hash, key_slot

ROOT = Path(__file__).resolve().parents[1]
N_KEYS = 100_000
FOUR = tuple(f"shard-{i}" for i in range(4))


@pytest.fixture(scope="module")
def keys() -> list[str]:
    """Realistic stored keys: ``namespace:tenant:layer:digest``."""
    return [f"app:default:response:{digest(i)}" for i in range(N_KEYS)]


def _owners(ring: Ring, keys: list[str]) -> list[str]:
    return [ring.owner(k) for k in keys]


# -- balance and movement -------------------------------------------------------------------


def test_load_is_within_ten_percent_of_fair_share(keys: list[str]) -> None:
    ring = Ring(FOUR)
    counts = Counter(_owners(ring, keys))
    assert set(counts) == set(FOUR)
    fair = N_KEYS / len(FOUR)
    for member, n in counts.items():
        assert abs(n - fair) <= 0.10 * fair, (member, n, fair)
    slot_counts = ring.slot_counts()
    assert sum(slot_counts.values()) == DEFAULT_SLOTS
    for n in slot_counts.values():
        assert abs(n - DEFAULT_SLOTS / 4) <= 0.10 * DEFAULT_SLOTS / 4


def test_adding_a_fifth_shard_moves_a_fifth_of_keys_all_to_it(keys: list[str]) -> None:
    ring4 = Ring(FOUR)
    ring5 = ring4.with_members([*FOUR, "shard-4"])
    before, after = _owners(ring4, keys), _owners(ring5, keys)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    fraction = len(moved) / N_KEYS
    assert 0.15 <= fraction <= 0.25, fraction
    assert all(b == "shard-4" for _, b in moved)
    # Everything the new shard owns came from somewhere: nothing else moved.
    assert len(moved) == after.count("shard-4")
    # It took roughly evenly from each old shard.
    taken = Counter(a for a, _ in moved)
    assert set(taken) == set(FOUR)


def test_removing_a_shard_moves_only_its_keys(keys: list[str]) -> None:
    ring4 = Ring(FOUR)
    ring3 = ring4.with_members([m for m in FOUR if m != "shard-2"])
    before, after = _owners(ring4, keys), _owners(ring3, keys)
    assert "shard-2" not in after
    for a, b in zip(before, after, strict=True):
        if a != "shard-2":
            assert a == b
    # The removed shard's keys spread over the survivors.
    spread = Counter(b for a, b in zip(before, after, strict=True) if a == "shard-2")
    assert set(spread) == {"shard-0", "shard-1", "shard-3"}


def test_slot_movement_matches_key_movement() -> None:
    ring4 = Ring(FOUR)
    ring5 = ring4.with_members([*FOUR, "shard-4"])
    old = np.array([ring4.members[ring4.slot_owner_index(s)] for s in range(DEFAULT_SLOTS)])
    new = np.array([ring5.members[ring5.slot_owner_index(s)] for s in range(DEFAULT_SLOTS)])
    changed = old != new
    assert set(new[changed]) == {"shard-4"}
    assert np.array_equal(changed, ring5.owned_slots("shard-4"))


def test_owner_does_not_depend_on_member_order(keys: list[str]) -> None:
    sample = keys[:5000]
    a = Ring(FOUR)
    b = Ring(tuple(reversed(FOUR)))
    assert _owners(a, sample) == _owners(b, sample)


def test_owner_index_owner_and_slot_agree(keys: list[str]) -> None:
    ring = Ring(FOUR, epoch=3, num_slots=1024)
    for k in keys[:2000]:
        slot = ring.slot(k)
        assert 0 <= slot < 1024
        assert slot == key_slot(k, 1024) == key_hash(k) % 1024
        idx = ring.owner_index(k)
        assert idx == ring.slot_owner_index(slot)
        assert ring.owner(k) == ring.members[idx]
        assert ring.owned_slots(ring.owner(k))[slot]


def test_owned_slots_partition_the_table() -> None:
    ring = Ring(FOUR)
    masks = [ring.owned_slots(m) for m in FOUR]
    total = np.sum(masks, axis=0)
    assert np.all(total == 1)
    assert {m: int(mask.sum()) for m, mask in zip(FOUR, masks, strict=True)} == ring.slot_counts()
    assert not ring.owned_slots("not-a-member").any()


def test_single_member_owns_everything() -> None:
    ring = Ring(("only",), num_slots=64)
    assert ring.slot_counts() == {"only": 64}
    assert ring.owner("anything") == "only"


# -- cross-process stability -----------------------------------------------------------------

_CHILD = """
import json, sys
from omnicache_cluster.core.keys import digest
from omnicache_cluster.core.ring import Ring, key_hash
members = tuple(json.loads(sys.argv[1]))
ring = Ring(members)
keys = [f"app:default:response:{digest(i)}" for i in range(3000)]
print(json.dumps({
    "owners": [ring.owner(k) for k in keys],
    "counts": ring.slot_counts(),
    "key_hash": [key_hash(k) for k in ("hello", "", "é", "app:t:l:" + "0" * 32)],
    "py_hash": hash("hello"),
}))
"""


def _child(seed: str, members: tuple[str, ...]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(members)],
        env={**os.environ, "PYTHONHASHSEED": seed},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_same_members_same_table_in_other_processes() -> None:
    members = ("alpha", "bravo", "charlie", "delta", "echo")
    ring = Ring(members)
    keys = [f"app:default:response:{digest(i)}" for i in range(3000)]
    here = [ring.owner(k) for k in keys]
    one, two = _child("1", members), _child("4242", members)
    assert one["owners"] == here
    assert two["owners"] == here
    assert one["counts"] == two["counts"] == ring.slot_counts()


def test_key_hash_is_stable_and_not_pythons_hash() -> None:
    inputs = ("hello", "", "é", "app:t:l:" + "0" * 32)
    here = [key_hash(k) for k in inputs]
    one, two = _child("1", FOUR), _child("2", FOUR)
    # The seeds did take effect: Python's own hash differs between the children...
    assert one["py_hash"] != two["py_hash"]
    # ...while key_hash does not.
    assert one["key_hash"] == two["key_hash"] == here
    assert key_hash("hello") != hash("hello")
    # Pinned: a change of hash function would reroute every key of a running cluster.
    assert key_hash("hello") == 9022087748821825191


def test_key_hash_properties() -> None:
    assert key_hash("hello") == key_hash(b"hello")
    assert key_hash("é") == key_hash("é".encode())
    assert key_hash("a") != key_hash("b")
    values = [key_hash(f"k{i}") for i in range(1000)]
    assert all(0 <= v < 2**64 for v in values)
    assert len(set(values)) == len(values)
    assert max(values) > 2**63  # uses the full unsigned range


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "num_slots", "match"),
    [
        ((), DEFAULT_SLOTS, "at least one"),
        ([], DEFAULT_SLOTS, "at least one"),
        (("a", "b", "a"), DEFAULT_SLOTS, "unique"),
        (["x", "x"], DEFAULT_SLOTS, "unique"),
        (("a",), 0, "num_slots"),
        (("a",), -16, "num_slots"),
    ],
    ids=["empty-tuple", "empty-list", "dup", "dup-list", "zero-slots", "negative-slots"],
)
def test_bad_ring_arguments(members: tuple[str, ...], num_slots: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Ring(members, num_slots=num_slots)


def test_with_members_bumps_epoch_and_keeps_slot_count() -> None:
    ring = Ring(("a", "b"), epoch=7, num_slots=512)
    nxt = ring.with_members(["a", "b", "c"])
    assert nxt.epoch == 8
    assert nxt.num_slots == 512
    assert nxt.members == ("a", "b", "c")
    assert isinstance(nxt.members, tuple)
    assert ring.members == ("a", "b")  # the old ring is unchanged
    assert ring.epoch == 7
    assert nxt.with_members(["a"]).epoch == 9
    with pytest.raises(ValueError, match="unique"):
        ring.with_members(["a", "a"])
    with pytest.raises(ValueError, match="at least one"):
        ring.with_members([])


def test_list_members_are_stored_as_tuple_and_rings_compare_by_membership() -> None:
    ring = Ring(["a", "b"])  # type: ignore[arg-type]
    assert ring.members == ("a", "b")
    assert ring == Ring(("a", "b"))
    assert ring != Ring(("a", "b"), epoch=2)
