"""The ring: stable 64-bit key hash → one of a fixed number of slots → shard.

Two levels, as Redis Cluster does: a key's slot never changes (it depends only on the
key), and a versioned slot table maps slots to shards. The table is computed by
rendezvous (highest-random-weight) hashing of each slot over the member names, so:

* every process computes the same table from the same member list (no table is
  shipped around, only the epoch and the names);
* adding an Nth shard moves exactly the slots the new shard wins, about 1/N of them;
* removing a shard moves only that shard's slots.

Hashes are BLAKE2b and SplitMix64, never Python's ``hash()``, which is salted per
process and would route the same key to different shards in different workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

__all__ = ["DEFAULT_SLOTS", "Ring", "key_hash", "key_slot"]

DEFAULT_SLOTS: Final = 16384
_MASK64: Final = (1 << 64) - 1


# Hashes of recent keys: a request hashes its key several times on the way (route,
# slot, near-cache), and hot keys come back. Bounded; cleared when full.
_MEMO: dict[str | bytes, int] = {}
_MEMO_ENTRIES: Final = 65_536


def key_hash(key: str | bytes) -> int:
    """Return the stable unsigned 64-bit hash of ``key``."""
    try:
        return _MEMO[key]
    except KeyError:
        pass
    data = key.encode() if isinstance(key, str) else key
    h = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    if len(_MEMO) >= _MEMO_ENTRIES:
        _MEMO.clear()
    if len(data) <= 512:
        _MEMO[key] = h
    return h


def key_slot(key: str | bytes, num_slots: int = DEFAULT_SLOTS) -> int:
    """Return the slot of ``key``: its stable hash modulo ``num_slots``."""
    return key_hash(key) % num_slots


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # SplitMix64 finaliser, vectorised; uint64 arithmetic wraps as intended.
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _assign(members: Sequence[str], num_slots: int) -> np.ndarray:
    slots = np.arange(num_slots, dtype=np.uint64)
    scores = np.empty((len(members), num_slots), dtype=np.uint64)
    for i, name in enumerate(members):
        scores[i] = _splitmix64(slots ^ np.uint64(key_hash(name)))
    return np.argmax(scores, axis=0).astype(np.int32)


@dataclass(frozen=True)
class Ring:
    """An immutable slot table for one membership and epoch.

    Args:
        members: the shard names, in a stable order; indexes into this tuple are what
            `owner_index` returns.
        epoch: the version of this membership; it grows with every change.
        num_slots: the fixed slot count (same for the life of a cluster).

    Raises:
        ValueError: no members, duplicate names, or a non-positive slot count.
    """

    members: tuple[str, ...]
    epoch: int = 1
    num_slots: int = DEFAULT_SLOTS
    _table: np.ndarray = field(init=False, repr=False, compare=False)
    _owners: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a ring needs at least one member")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"ring members must be unique, got {self.members!r}")
        if self.num_slots <= 0:
            raise ValueError(f"num_slots must be positive, got {self.num_slots!r}")
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "_table", _assign(self.members, self.num_slots))
        # The same table as a list of ints: indexing it is cheaper than a numpy scalar.
        object.__setattr__(self, "_owners", self._table.tolist())

    def slot(self, key: str | bytes) -> int:
        """Return the slot of ``key``."""
        return key_hash(key) % self.num_slots

    def owner_index(self, key: str | bytes) -> int:
        """Return the index in `members` of the shard that owns ``key``."""
        return self._owners[key_hash(key) % self.num_slots]

    def owner(self, key: str | bytes) -> str:
        """Return the name of the shard that owns ``key``."""
        return self.members[self.owner_index(key)]

    def slot_owner_index(self, slot: int) -> int:
        """Return the index in `members` of the shard that owns ``slot``."""
        return int(self._table[slot])

    def owned_slots(self, member: str) -> np.ndarray:
        """Return a boolean mask over slots: ``True`` where ``member`` owns the slot."""
        try:
            idx = self.members.index(member)
        except ValueError:
            return np.zeros(self.num_slots, dtype=bool)
        return self._table == idx

    def slot_counts(self) -> dict[str, int]:
        """Return how many slots each member owns."""
        counts = np.bincount(self._table, minlength=len(self.members))
        return {m: int(c) for m, c in zip(self.members, counts, strict=True)}

    def with_members(self, members: Sequence[str]) -> Ring:
        """Return the ring for a new membership at the next epoch."""
        return Ring(tuple(members), self.epoch + 1, self.num_slots)
