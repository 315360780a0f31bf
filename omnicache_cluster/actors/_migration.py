"""Live slot migration between shards; `ShardActor` mixes this in.

When the membership changes (``CacheCluster.scale``), every slot whose owner changes
moves from its old owner (the *source*) to its new owner (the *target*). The
coordinator drives one step (`omnicache_cluster.actors._rebalance`):

1. **prepare** (`prepare_migration`, to every shard): each shard works out, from the
   old and the new membership, which slots come in and from whom, and which go out
   and to whom. A shard with incoming slots *holds* its requests (they wait in
   ``_ready``, at most ``hold_s``) until it adopts the new epoch, so a client that
   already routes by the new ring waits instead of bouncing between two shards
   that both say *moved*.
2. **flip the sources** (``set_ring``): a source stops owning its outgoing slots and
   answers *moved* for them from now on, so they are frozen there: no write of those
   slots can reach it again. It snapshots its key list, records every outgoing slot
   in its change log (near-caches drop what they hold of them), then writes its dirty
   L2 entries (``flush_l2``) so L2 is not behind.
3. **flip the targets** (``set_ring``): a target owns its incoming slots at once (hold
   released) and pulls them from each source in batches (`export_batch`), in the
   background. Until a source is drained, an L1 miss of an incoming slot asks that
   source (`export_keys`) before L2, so nothing a client wrote before the flip reads
   as a miss; a write or a delete at the target marks the key *touched*, and nothing
   pulled later (stream or miss) overwrites a touched key: **the target's write is
   always newer**, because the source froze the slot before the target owned it.
4. **drain**: when a source has handed a target everything, the target stops asking
   it and tells it (`release_export`); the source drops those entries. The
   coordinator waits for every target (`wait_migration`), then tells the sources to
   drop what is left (`finish_export`).

Deletes at a target of keys it has not pulled yet are forwarded to the source
(`drop_keys`, for the return value) and the key is touched, so the stream cannot
resurrect it. A tag invalidation or a flush reaches every shard; a source that is
exporting forwards it to its targets (`import_invalidated`) before it answers, so an
entry a target pulled just before the source applied it is removed (or filtered if
still in flight) before the caller's ``invalidate`` returns.

Guarantees: no acknowledged write is lost and a client never reads a value older
than one it already read, with or without L2, as long as the shards involved stay
alive; if a source dies mid-way, its unpulled entries are read through from L2 (or
are gone without L2), as for any dead shard. Known edge: ``invalidate``/``clear``
counts may count a key twice while its slot moves (once at each end).

Single-flight: a key's lease lives at its owner. A flight open at the source when
its slot flips finishes there (the leader's ``set_and_release`` answers *moved* for
the store, hands the value to the waiters parked at the source, and the client then
stores it at the target); a caller arriving after the flip misses at the target and
starts a second flight, so one compute may happen twice across a flip, never lost
and never hung (a dead leader's lease still expires at the source).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from omnicache_cluster.actors._export import Item, ShardExport
from omnicache_cluster.core.ring import Ring, key_hash
from omnicache_cluster.errors import ValueTooLarge

if TYPE_CHECKING:
    from omnicache_cluster.actors._l2 import ShardL2
    from omnicache_cluster.actors.shard import ShardConfig
    from omnicache_cluster.core.nearcache import ChangeLog
    from omnicache_cluster.core.quota import TenantQuota
    from omnicache_cluster.core.store import LRUStore

__all__ = ["MigrationOptions", "ShardMigration"]

_log = logging.getLogger(__name__)
_INSTALL_CHUNK = 128


@dataclass(frozen=True)
class MigrationOptions:
    """How one migration step runs (sent with `prepare_migration`).

    Attributes:
        batch_entries: the most entries per streamed batch.
        batch_bytes: the most value bytes per streamed batch.
        pause_s: a pause between two batches of one source (throttles the stream).
        parallel_pulls: how many batches a target has in flight at once (over all
            its sources): each one installed is a stretch of its event loop that
            client requests wait behind.
        hold_s: the longest a target holds requests waiting for its flip.
        peer_timeout_s: the timeout of one call to another shard.
    """

    batch_entries: int = 1000
    batch_bytes: int = 1 << 20
    pause_s: float = 0.0
    parallel_pulls: int = 1
    hold_s: float = 15.0
    peer_timeout_s: float = 30.0


@dataclass
class _Plan:
    epoch: int
    members: tuple[str, ...]
    sources: tuple[str, ...]
    src_of: np.ndarray  # slot -> index into sources, -1: not incoming
    targets: tuple[str, ...]
    dst_of: np.ndarray  # slot -> index into targets, -1: not outgoing
    options: MigrationOptions


@dataclass
class _Import:
    epoch: int
    source: str
    index: int
    slots: np.ndarray
    done: bool = False
    failed: str | None = None
    filters: list[tuple[frozenset[str] | None, str | None]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("pulled", "installed", "skipped", "fetched"), 0)
    )


def _matches(filters: Sequence[tuple[frozenset[str] | None, str | None]], item: Item) -> bool:
    key, tags = item[0], item[3]
    for tagset, prefix in filters:
        if tagset is not None:
            if not tagset.isdisjoint(tags):
                return True
        elif prefix is None or key.startswith(prefix):
            return True
    return False


class ShardMigration(ShardExport):
    """Migration methods of a shard (the target side here, the source side in
    `ShardExport`); expects the attributes `ShardActor` sets up."""

    _config: ShardConfig
    _store: LRUStore
    _changes: ChangeLog
    _num_slots: int
    _epoch: int
    _members: tuple[str, ...]
    _l2: ShardL2 | None
    _quota_gen: int
    _quotas: dict[str, TenantQuota]

    def _init_migration(self) -> None:
        n = self._num_slots
        self._plan: _Plan | None = None
        self._hold: asyncio.Event | None = None
        self._hold_until = 0.0
        self._imports: list[_Import] = []  # this epoch's, done ones included
        self._importing = 0  # how many of them are still running
        self._import_of = np.full(n, -1, dtype=np.int16)  # slot -> running import
        self._touched: set[str] = set()
        self._import_tasks: set[asyncio.Task[None]] = set()
        self._import_idle: asyncio.Event | None = None
        self._pull_slots = asyncio.Semaphore(1)
        self._init_export()
        self._mig_options = MigrationOptions()
        self._last_import: dict[str, Any] = {}

    # -- step 1: prepare ----------------------------------------------------------------

    async def prepare_migration(
        self,
        old_epoch: int,
        old_members: Sequence[str],
        new_epoch: int,
        new_members: Sequence[str],
        options: MigrationOptions | None = None,
    ) -> dict[str, int]:
        """Get ready to move from ring ``old_epoch`` to ``new_epoch`` (see the module
        docstring); return this shard's ``incoming`` and ``outgoing`` slot counts and
        its ``entries``.

        Raises:
            RuntimeError: an earlier migration is still streaming here.
        """
        if self._importing or self._export is not None:
            raise RuntimeError(
                f"shard {self._config.name}: the migration of epoch "
                f"{self._imports[0].epoch if self._imports else self._export_epoch()} "
                f"is still running"
            )
        opts = options or MigrationOptions()
        me, n = self._config.name, self._num_slots
        old = Ring(tuple(old_members), int(old_epoch), n)
        new = Ring(tuple(new_members), int(new_epoch), n)
        mine_old, mine_new = old.owned_slots(me), new.owned_slots(me)
        incoming, outgoing = mine_new & ~mine_old, mine_old & ~mine_new
        sources, src_of = self._assign(old, incoming, me)
        targets, dst_of = self._assign(new, outgoing, me)
        self._plan = _Plan(new.epoch, new.members, sources, src_of, targets, dst_of, opts)
        self._mig_options = opts
        self._peer_timeout_s = opts.peer_timeout_s
        if incoming.any() and self._epoch < new.epoch:
            self._hold = asyncio.Event()
            self._hold_until = time.monotonic() + opts.hold_s
        return {
            "incoming": int(incoming.sum()),
            "outgoing": int(outgoing.sum()),
            "entries": len(self._store),
        }

    @staticmethod
    def _assign(ring: Ring, mask: np.ndarray, me: str) -> tuple[tuple[str, ...], np.ndarray]:
        """Return the other members owning slots of ``mask`` in ``ring``, and a slot ->
        index map into them (-1 outside ``mask``)."""
        index = np.full(ring.num_slots, -1, dtype=np.int16)
        names: list[str] = []
        for name in ring.members:
            if name == me:
                continue
            sel = mask & ring.owned_slots(name)
            if sel.any():
                index[sel] = len(names)
                names.append(name)
        return tuple(names), index

    async def abort_migration(self, epoch: int) -> bool:
        """Forget a prepared migration to ``epoch`` that was never flipped; return
        whether one was forgotten."""
        plan = self._plan
        if plan is None or plan.epoch != int(epoch):
            return False
        self._plan = None
        self._release_hold()
        return True

    def _release_hold(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.set()

    async def _wait_hold(self) -> None:
        """Wait (in ``_ready``) while a flip to an incoming epoch is pending."""
        hold = self._hold
        if hold is None:
            return
        left = self._hold_until - time.monotonic()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hold.wait(), left)
        if self._hold is hold and time.monotonic() >= self._hold_until:
            _log.warning("shard %s: flip not received in time; serving", self._config.name)
            self._release_hold()

    # -- steps 2 and 3: the flip (called by set_ring after the new epoch is adopted) ----

    def _migration_on_ring(self) -> None:
        plan = self._plan
        if plan is None or self._epoch < plan.epoch:
            return
        self._plan = None
        if self._epoch == plan.epoch:
            if (plan.dst_of >= 0).any():
                self._start_export(plan.epoch, plan.targets, plan.dst_of)
            if (plan.src_of >= 0).any():
                self._start_import(plan)
        else:
            _log.warning(
                "shard %s: ring jumped to epoch %d past the prepared %d; not migrating",
                self._config.name,
                self._epoch,
                plan.epoch,
            )
        self._release_hold()

    def _start_import(self, plan: _Plan) -> None:
        self._imports = []
        self._import_of[:] = -1
        self._touched.clear()
        self._import_idle = asyncio.Event()
        self._pull_slots = asyncio.Semaphore(max(1, plan.options.parallel_pulls))
        loop = asyncio.get_running_loop()
        for index, source in enumerate(plan.sources):
            slots = plan.src_of == index
            imp = _Import(plan.epoch, source, index, slots)
            self._imports.append(imp)
            self._import_of[slots] = index
            self._importing += 1
            task = loop.create_task(self._pull(imp))
            self._import_tasks.add(task)
            task.add_done_callback(self._import_tasks.discard)
        for slot in np.flatnonzero(plan.src_of >= 0):
            self._changes.record(int(slot))

    # -- step 3: pulling (target side) --------------------------------------------------

    async def _pull(self, imp: _Import) -> None:
        me, opts = self._config.name, self._mig_options
        failures = 0
        try:
            while True:
                try:
                    async with self._pull_slots:
                        status, items, done = await self._call_peer(
                            imp.source,
                            "export_batch",
                            imp.epoch,
                            me,
                            opts.batch_entries,
                            opts.batch_bytes,
                        )
                        if status == "ok":
                            await self._install(imp, items)
                except Exception as exc:
                    failures += 1
                    if failures >= 5 or type(exc).__name__ == "ActorDiedError":
                        imp.failed = f"{type(exc).__name__}: {exc}"
                        _log.warning("shard %s: import from %s failed: %s", me, imp.source, exc)
                        return
                    await asyncio.sleep(0.2 * failures)
                    continue
                failures = 0
                if status != "ok":  # the source restarted: what it had is gone
                    imp.failed = status
                    return
                if done:
                    break
                await asyncio.sleep(opts.pause_s)  # let client requests in between
            self._finish_import(imp)
            with contextlib.suppress(Exception):  # the coordinator's finish_export backs this
                await self._call_peer(imp.source, "release_export", imp.epoch, me)
        finally:
            self._finish_import(imp)

    def _finish_import(self, imp: _Import) -> None:
        if imp.done:
            return
        imp.done = True
        self._import_of[imp.slots] = -1
        self._importing -= 1
        if not self._importing:
            self._touched.clear()
            self._last_import = self._import_summary()
            if self._import_idle is not None:
                self._import_idle.set()

    async def _install(self, imp: _Import, items: Sequence[Item]) -> None:
        """Store pulled entries that nothing newer at this shard supersedes; each
        entry's check and store happen in one turn of the event loop."""
        store, touched, n = self._store, self._touched, self._num_slots
        filters, now = imp.filters, time.time()
        counts = imp.counts
        for i, item in enumerate(items):
            if i and not i % _INSTALL_CHUNK:
                await asyncio.sleep(0)  # let client requests in
                filters = imp.filters
            counts["pulled"] += 1
            key, value, expires_at, tags, tenant = item
            if (
                self._import_of[key_hash(key) % n] != imp.index
                or key in touched
                or (expires_at is not None and expires_at <= now)
                or (filters and _matches(filters, item))
                or key in store
            ):
                counts["skipped"] += 1
                continue
            try:
                store.set(key, value, expires_at=expires_at, tags=tuple(tags), tenant=tenant)
            except ValueTooLarge:
                counts["skipped"] += 1
                continue
            counts["installed"] += 1

    def _take(self, imp: _Import, item: Item) -> bytes | None:
        """Return what a read of ``item``'s key serves, after asking its source:
        this shard's own entry when the key was touched or is already here, else the
        source's (kept here)."""
        key = item[0]
        if imp.done or key in self._touched or key in self._store:
            entry = self._store.get_entry(key)
            return None if entry is None else entry.value
        expires_at = item[2]
        if (expires_at is not None and expires_at <= time.time()) or (
            imp.filters and _matches(imp.filters, item)
        ):
            return None
        imp.counts["fetched"] += 1
        with contextlib.suppress(ValueTooLarge):  # served, not kept
            self._store.set(
                key, item[1], expires_at=expires_at, tags=tuple(item[3]), tenant=item[4]
            )
        return item[1]

    def _asks(self, keys: Sequence[str], positions: Iterable[int]) -> dict[int, list[int]]:
        """Group the positions of untouched keys of running imports by import."""
        asks: dict[int, list[int]] = {}
        n, touched, import_of = self._num_slots, self._touched, self._import_of
        for i in positions:
            key = keys[i]
            idx = int(import_of[key_hash(key) % n])
            if idx >= 0 and key not in touched:
                asks.setdefault(idx, []).append(i)
        return asks

    async def _ask_sources(
        self, keys: Sequence[str], asks: dict[int, list[int]], values: bool
    ) -> list[tuple[_Import, list[int], list[Any]]]:
        async def ask(idx: int, pos: list[int]) -> tuple[_Import, list[int], list[Any]]:
            imp = self._imports[idx]
            try:
                found = await self._call_peer(
                    imp.source, "export_keys", imp.epoch, [keys[i] for i in pos], values
                )
            except Exception as exc:  # a dead source: L2 (or nothing) has the rest
                _log.warning(
                    "shard %s: source %s did not answer: %r", self._config.name, imp.source, exc
                )
                found = [None] * len(pos)
            return imp, pos, found

        return list(await asyncio.gather(*(ask(i, p) for i, p in asks.items())))

    async def _read_importing(
        self,
        keys: Sequence[str],
        l2_read: Callable[[Sequence[str]], Awaitable[list[bytes | None]]],
    ) -> list[bytes | None]:
        """Read L1 misses: keys of incoming slots from their source first, the rest
        (and what the source lacks) through L2."""
        out: list[bytes | None] = [None] * len(keys)
        asks = self._asks(keys, range(len(keys)))
        for imp, pos, found in await self._ask_sources(keys, asks, True):
            for i, item in zip(pos, found, strict=True):
                if item is not None:
                    out[i] = self._take(imp, item)
        if self._l2 is not None:
            rest = [i for i, v in enumerate(out) if v is None]
            if rest:
                for i, value in zip(rest, await l2_read([keys[i] for i in rest]), strict=True):
                    out[i] = value
        return out

    def _touch_importing(self, keys: Iterable[str]) -> None:
        """Mark keys of incoming slots written here: nothing pulled overwrites them."""
        if self._importing:
            n, import_of = self._num_slots, self._import_of
            self._touched.update(k for k in keys if import_of[key_hash(k) % n] >= 0)

    async def _delete_importing(
        self, keys: Sequence[str], mine: Sequence[int], existed: list[bool]
    ) -> None:
        """Deletes of keys of incoming slots: touch them (before any await), and drop
        the source's copy of those not pulled yet (for ``existed``)."""
        if not self._importing:
            return
        asks = self._asks(keys, mine)
        self._touch_importing(keys[i] for i in mine)
        for imp, pos, _ in [(self._imports[i], p, None) for i, p in asks.items()]:
            try:
                gone = await self._call_peer(
                    imp.source, "drop_keys", imp.epoch, [keys[i] for i in pos]
                )
            except Exception as exc:  # the source's copy is never served again anyway
                _log.debug("shard %s: drop at %s failed: %s", self._config.name, imp.source, exc)
                continue
            for i, was in zip(pos, gone, strict=True):
                existed[i] = existed[i] or bool(was)

    async def _exists_importing(
        self, keys: Sequence[str], present: list[bool], skip: set[int]
    ) -> None:
        """`exists_many` of keys of incoming slots not here yet: ask their source."""
        if not self._importing:
            return
        todo = (i for i, p in enumerate(present) if not p and i not in skip)
        for _imp, pos, found in await self._ask_sources(keys, self._asks(keys, todo), False):
            for i, there in zip(pos, found, strict=True):
                present[i] = present[i] or bool(there)

    async def import_invalidated(
        self, epoch: int, source: str, tags: Sequence[str] | None, prefix: str | None
    ) -> int:
        """A source applied an invalidation (``tags``) or a flush (``prefix``; both
        ``None``: everything) to slots moving here: filter what is still in flight
        and remove what was pulled already; return how many entries were removed."""
        imp = next((i for i in self._imports if i.source == source and i.epoch == epoch), None)
        if imp is None:
            return 0
        tagset = frozenset(tags) if tags is not None else None
        imp.filters.append((tagset, prefix))
        n, touched, slots = self._num_slots, self._touched, imp.slots

        def pulled(key: str) -> bool:
            return bool(slots[key_hash(key) % n]) and key not in touched

        if tagset is not None:
            victims = {k for tag in tagset for k in self._store.tagged(tag) if pulled(k)}
            return self._store.clear(lambda key, _entry: key in victims)
        return self._store.clear(
            lambda key, _entry: (prefix is None or key.startswith(prefix)) and pulled(key)
        )

    # -- step 4: waiting, views ---------------------------------------------------------

    async def wait_migration(self, epoch: int, timeout_s: float = 600.0) -> dict[str, Any]:
        """Wait until this shard's part of the migration to ``epoch`` is over (its
        imports pulled, its export dropped); return its counters and ``complete``."""
        waits = []
        if self._importing and self._import_idle is not None:
            waits.append(self._import_idle.wait())
        if self._export is not None and self._export.epoch == int(epoch):
            waits.append(self._export_done())
        complete = True
        if waits:
            try:
                await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
            except TimeoutError:
                complete = False
        summary: dict[str, Any] = {"shard": self._config.name, "complete": complete}
        if self._imports and self._imports[0].epoch == int(epoch):
            summary["import"] = self._import_summary()
        exp = self._export
        if exp is not None and exp.epoch == int(epoch):
            summary["export"] = {
                "epoch": exp.epoch,
                "exported": exp.exported,
                "dropped": exp.dropped,
            }
        elif self._last_export.get("epoch") == int(epoch):
            summary["export"] = dict(self._last_export)
        return summary

    def _import_summary(self) -> dict[str, Any]:
        totals: dict[str, Any] = dict.fromkeys(("pulled", "installed", "skipped", "fetched"), 0)
        for imp in self._imports:
            for name, value in imp.counts.items():
                totals[name] += value
        totals["epoch"] = self._imports[0].epoch if self._imports else 0
        totals["failed"] = {i.source: i.failed for i in self._imports if i.failed}
        totals["touched"] = len(self._touched)
        return totals

    def _migration_stats(self) -> dict[str, Any]:
        """The migration fields of `stats`."""
        exp = self._export
        return {
            "migration_importing": self._importing,
            "migration_exporting": exp is not None,
            "migration_last_import": dict(self._last_import),
            "migration_last_export": dict(self._last_export),
        }

    async def recovery_view(self) -> dict[str, Any]:
        """What a restarted coordinator needs, without waiting for this shard to be
        ready (a restarted shard would otherwise ask the coordinator that asks it)."""
        plan = self._plan
        return {
            "epoch": self._epoch,
            "members": self._members,
            "quota_gen": self._quota_gen,
            "quotas": dict(self._quotas),
            "plan": None if plan is None else (plan.epoch, plan.members),
            "outgoing": plan is not None and bool((plan.dst_of >= 0).any()),
            "importing": self._importing,
            "exporting": self._export_epoch(),
        }

    async def where(self) -> dict[str, Any]:
        """Return this shard's name, Ray node id and process id."""
        import os

        import ray

        return {
            "shard": self._config.name,
            "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else "",
            "pid": os.getpid(),
        }
