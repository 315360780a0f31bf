"""The per-process near-cache (L0) and the shard change log that keeps it honest.

A shard numbers every change it makes (a write, a delete, an invalidation, a flush, an
eviction or an expiry) and remembers the slot of the last ``capacity`` changes in a
`ChangeLog`. Each client process polls every shard for the slots changed since the
sequence number it saw last, and drops its near entries of those slots. If the log no
longer reaches back that far (a *gap*), or the shard restarted (a new incarnation),
the client drops every near entry of that shard.

The guarantee, given ``bound`` (``NearCacheOptions.staleness_s``):

* read-your-writes in the writing process: a ``set``, ``delete``, ``invalidate`` or
  ``clear`` updates or drops the process's own near entries before it returns;
* any other process stops serving a value changed at time *t* by *t* + ``bound``: a
  near entry of a shard is only served while the last successful poll of that shard
  was *issued* less than ``bound`` seconds ago (a shard that cannot be polled is
  never served from the near-cache), and a value read while a poll was in flight is
  not kept (it could predate a change that poll reports).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ChangeLog", "NearCache", "NearCacheOptions"]


class ChangeLog:
    """Sequence-numbered slot changes of one shard, bounded.

    Args:
        capacity: how many changes are remembered; older ones make a gap.
        incarnation: tells a poller that this is a new shard process.
        start: the number before the first change. A shard starts from the time in
            microseconds, so a later process of the same shard numbers every change
            above any number an earlier one handed out: a poll that asks a new process
            for the changes after an old number always finds a gap.
    """

    __slots__ = ("_log", "capacity", "incarnation", "seq")

    def __init__(self, capacity: int = 65_536, incarnation: str = "", start: int = 0) -> None:
        self._log: deque[int] = deque(maxlen=capacity)
        self.capacity = capacity
        self.incarnation = incarnation
        self.seq = start

    def record(self, slot: int) -> None:
        """Number one change of ``slot``."""
        self.seq += 1
        self._log.append(slot)

    def since(self, seq: int) -> tuple[str, int, list[tuple[int, int]] | None]:
        """Return ``(incarnation, current seq, [(slot, its last change number)])`` for
        the slots changed after ``seq``; ``None`` instead of the list when the log
        does not reach back to ``seq`` (a gap)."""
        behind = self.seq - seq
        if behind < 0 or behind > len(self._log):
            return self.incarnation, self.seq, None
        log, last = self._log, {}
        for i in range(len(log) - behind, len(log)):
            last[log[i]] = self.seq - (len(log) - 1 - i)
        return self.incarnation, self.seq, sorted(last.items())


@dataclass(frozen=True)
class NearCacheOptions:
    """How the per-process near-cache behaves.

    Attributes:
        max_entries: the most entries kept in this process.
        max_bytes: the most encoded bytes kept in this process.
        staleness_s: the bound on how stale a near hit may be (see the module doc).
        layers: the layers cached near (``None``: every layer).
    """

    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    staleness_s: float = 1.0
    layers: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.staleness_s, int | float) or not self.staleness_s > 0:
            raise ValueError(f"staleness_s must be a positive number, got {self.staleness_s!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", frozenset(self.layers))

    def covers(self, layer: str) -> bool:
        """Whether ``layer`` is cached near."""
        return self.layers is None or layer in self.layers


#: `_Near.value` of an entry whose decoded value is not kept.
NO_VALUE: Any = object()


class _Near:
    __slots__ = ("data", "seq", "shard", "slot", "tags", "value")

    def __init__(self, data: bytes, shard: str, slot: int, tags: tuple[str, ...], seq: int) -> None:
        self.data = data
        # The decoded value, kept by the client when it is immutable (str, bytes,
        # numbers), so a near hit of such a value skips decoding.
        self.value = NO_VALUE
        self.shard = shard
        self.slot = slot
        self.tags = tags
        self.seq = seq  # the shard's change number the value is known to reflect


class NearCache:
    """Bounded LRU of encoded values in this process, indexed by shard, slot and tag."""

    def __init__(self, options: NearCacheOptions, clock: Callable[[], float] = time.monotonic):
        self.options = options
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[str, _Near] = OrderedDict()
        self._by_slot: dict[tuple[str, int], set[str]] = {}
        self._bytes = 0
        # Per shard: (incarnation, seq, when the last good poll was issued, polls applied)
        self._shards: dict[str, tuple[str, int, float, int]] = {}
        self.hits = 0
        self.misses = 0
        self.drops = 0
        self.last_used = clock()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        """Encoded bytes held."""
        return self._bytes

    def _fresh(self, shard: str) -> bool:
        state = self._shards.get(shard)
        return state is not None and self._clock() - state[2] < self.options.staleness_s

    def get(self, key: str) -> bytes | None:
        """Return the near value of ``key`` if it is there and its shard is fresh."""
        entry = self.lookup(key)
        return None if entry is None else entry.data

    def lookup(self, key: str) -> _Near | None:
        """Return the near entry of ``key`` (its ``data``, and ``value`` when kept
        decoded) if it is there and its shard is fresh."""
        with self._lock:
            self.last_used = now = self._clock()
            entry = self._data.get(key)
            state = None if entry is None else self._shards.get(entry.shard)
            if state is None or now - state[2] >= self.options.staleness_s:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry

    def generation(self, shard: str) -> tuple[int, int]:
        """Polls applied for ``shard`` so far and the change number they reached: take
        it before a remote read and pass it back to `put`."""
        state = self._shards.get(shard)
        return (-1, -1) if state is None else (state[3], state[1])

    def put(
        self,
        key: str,
        data: bytes,
        shard: str,
        slot: int,
        tags: Iterable[str] = (),
        generation: tuple[int, int] | None = None,
        seq: int | None = None,
    ) -> bool:
        """Keep ``data`` for ``key``.

        A value read remotely passes the ``generation`` taken before the read: it is
        not kept if a poll was applied meanwhile (it could predate a change that poll
        reported), and it reflects every change up to the change number reached then.
        A value this process wrote passes ``seq``, the shard's change number right
        after the write.
        """
        size = len(key) + len(data)
        opts = self.options
        with self._lock:
            self.last_used = self._clock()  # a write is a use: the poller stays
            if generation is not None:
                if generation[0] != self.generation(shard)[0]:
                    return False
                seq = generation[1]
            if size > opts.max_bytes:
                return False
            self._drop(key)
            self._data[key] = _Near(data, shard, slot, tuple(tags), -1 if seq is None else seq)
            self._by_slot.setdefault((shard, slot), set()).add(key)
            self._bytes += size
            while len(self._data) > opts.max_entries or self._bytes > opts.max_bytes:
                self._drop(next(iter(self._data)))
            return True

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is None:
            return
        self._bytes -= len(key) + len(entry.data)
        members = self._by_slot.get((entry.shard, entry.slot))
        if members is not None:
            members.discard(key)
            if not members:
                del self._by_slot[(entry.shard, entry.slot)]
        self.drops += 1

    def drop(self, keys: Iterable[str]) -> None:
        """Forget ``keys``."""
        with self._lock:
            for key in keys:
                self._drop(key)

    def drop_where(self, predicate: Callable[[str, tuple[str, ...]], bool]) -> None:
        """Forget the entries for which ``predicate(key, tags)`` holds."""
        with self._lock:
            for key in [k for k, e in self._data.items() if predicate(k, e.tags)]:
                self._drop(key)

    def last_seq(self, shard: str) -> tuple[str, int] | None:
        """Return the (incarnation, seq) of ``shard`` seen by the last poll."""
        state = self._shards.get(shard)
        return None if state is None else (state[0], state[1])

    def first_since(self, shard: str) -> int:
        """The change number a first poll of ``shard`` asks from: the lowest one this
        process's own writes of it carry (0 if none), so that those survive the poll
        unless their slots changed since."""
        with self._lock:
            seqs = [e.seq for e in self._data.values() if e.shard == shard and e.seq >= 0]
        return min(seqs) if seqs else 0

    def apply_poll(
        self,
        shard: str,
        issued_at: float,
        incarnation: str,
        seq: int,
        changes: list[tuple[int, int]] | None,
    ) -> None:
        """Apply one poll reply of ``shard``: drop the entries of changed slots that
        predate the change, or everything of the shard on a gap or a new incarnation;
        mark the shard fresh as of ``issued_at``."""
        with self._lock:
            old = self._shards.get(shard)
            if (old is not None and old[0] != incarnation) or changes is None:
                for key in [k for k, e in self._data.items() if e.shard == shard]:
                    self._drop(key)
            else:
                data = self._data
                if old is None:  # a first poll: keep only values whose number is known
                    for key in [k for k, e in data.items() if e.shard == shard and e.seq < 0]:
                        self._drop(key)
                for slot, last in changes:
                    for key in list(self._by_slot.get((shard, slot), ())):
                        if data[key].seq < last:
                            self._drop(key)
            polls = 0 if old is None else old[3] + 1
            self._shards[shard] = (incarnation, seq, issued_at, polls)

    def forget_shard(self, shard: str) -> None:
        """Drop everything of ``shard`` and stop serving it until its next poll."""
        with self._lock:
            for key in [k for k, e in self._data.items() if e.shard == shard]:
                self._drop(key)
            old = self._shards.pop(shard, None)
            if old is not None:  # keep the generation moving so in-flight puts fail
                self._shards[shard] = ("", -1, float("-inf"), old[3] + 1)
