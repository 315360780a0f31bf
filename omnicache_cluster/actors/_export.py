"""The source side of live slot migration (`omnicache_cluster.actors._migration`
explains the protocol): a shard whose slots move out hands their entries to the new
owners in batches, answers their misses, takes their forwarded deletes, and forwards
invalidations to them; then drops what it handed over.

Once a source flipped, it owns none of the outgoing slots, so nothing writes them
here again: what it exports is a frozen snapshot of its key list, read at export
time (a key deleted, expired or evicted meanwhile is skipped).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from omnicache_cluster.core.ring import key_hash

if TYPE_CHECKING:
    from omnicache_cluster.actors.shard import ShardConfig
    from omnicache_cluster.core.nearcache import ChangeLog
    from omnicache_cluster.core.store import LRUStore

__all__ = ["Item", "ShardExport"]

_log = logging.getLogger(__name__)

# (key, value, expires_at, tags, tenant): one entry on the wire between shards.
Item = tuple[str, bytes, float | None, tuple[str, ...], str]
# Work done between two turns of the event loop, so client requests never wait long
# behind the migration: ~1 µs per key hashed, a few per entry dropped.
_SCAN_CHUNK = 1024
_DROP_CHUNK = 512
PEER_TIMEOUT_S = 30.0


@dataclass
class _Export:
    epoch: int
    targets: tuple[str, ...]
    dst_of: np.ndarray
    keys: list[str]
    pos: int = 0
    queues: list[deque[str]] = field(default_factory=list)
    sent: list[list[str]] = field(default_factory=list)
    released: set[int] = field(default_factory=set)
    exported: int = 0
    dropped: int = 0


class ShardExport:
    """Export methods of a shard, and its calls to other shards; expects the
    attributes `ShardActor` sets up."""

    _config: ShardConfig
    _store: LRUStore
    _changes: ChangeLog
    _num_slots: int
    _owned: np.ndarray

    def _init_export(self) -> None:
        self._export: _Export | None = None
        self._export_idle: asyncio.Event | None = None
        self._last_export: dict[str, Any] = {}
        self._peers: dict[str, Any] = {}
        self._peer_timeout_s = PEER_TIMEOUT_S

    # -- peers ------------------------------------------------------------------------

    async def _peer(self, name: str) -> Any:
        handle = self._peers.get(name)
        if handle is None:
            import ray

            handle = await asyncio.to_thread(ray.get_actor, name, namespace=self._config.namespace)
            self._peers[name] = handle
        return handle

    async def _call_peer(self, name: str, method: str, *args: Any) -> Any:
        handle = await self._peer(name)
        try:
            return await asyncio.wait_for(
                getattr(handle, method).remote(*args), self._peer_timeout_s
            )
        except Exception:
            self._peers.pop(name, None)  # resolve the name again next time
            raise

    def _keeps(self, key: str) -> bool:
        """Whether an entry this shard no longer owns must stay (it is being exported)."""
        exp = self._export
        return exp is not None and bool(exp.dst_of[key_hash(key) % self._num_slots] >= 0)

    def _export_epoch(self) -> int:
        return self._export.epoch if self._export is not None else 0

    def _start_export(self, epoch: int, targets: tuple[str, ...], dst_of: np.ndarray) -> None:
        self._export = _Export(
            epoch=epoch,
            targets=targets,
            dst_of=dst_of,
            keys=list(self._store.keys()),  # nothing of these slots is written after this
            queues=[deque() for _ in targets],
            sent=[[] for _ in targets],
        )
        self._export_idle = asyncio.Event()
        for slot in np.flatnonzero(dst_of >= 0):  # near-caches drop these slots
            self._changes.record(int(slot))

    # -- step 3: exporting (source side) ------------------------------------------------

    def _scan(self, exp: _Export, limit: int) -> None:
        """Sort the next ``limit`` snapshot keys into the targets' queues."""
        n, dst_of, queues = self._num_slots, exp.dst_of, exp.queues
        end = min(exp.pos + limit, len(exp.keys))
        for key in exp.keys[exp.pos : end]:
            idx = dst_of[key_hash(key) % n]
            if idx >= 0:
                queues[idx].append(key)
        exp.pos = end

    async def export_batch(
        self, epoch: int, target: str, max_entries: int, max_bytes: int
    ) -> tuple[str, list[Item], bool]:
        """Return ``(status, items, done)``: the next entries of the slots moving to
        ``target``; status ``"gone"`` when this shard has no such export (it
        restarted, or it finished)."""
        exp = self._export
        if exp is None or exp.epoch != int(epoch) or target not in exp.targets:
            return "gone", [], True
        idx = exp.targets.index(target)
        queue, sent = exp.queues[idx], exp.sent[idx]
        items: list[Item] = []
        size = 0
        while len(items) < max_entries and size < max_bytes:
            if not queue:
                if exp.pos >= len(exp.keys):
                    break
                self._scan(exp, _SCAN_CHUNK)
                await asyncio.sleep(0)  # (safe: the slots are frozen; see the docstring)
                continue
            key = queue.popleft()
            entry = self._store.get_entry(key)
            if entry is None:
                continue
            sent.append(key)
            items.append((key, entry.value, entry.expires_at, entry.tags, entry.tenant))
            size += entry.size
        exp.exported += len(items)
        return "ok", items, not queue and exp.pos >= len(exp.keys)

    async def export_keys(
        self, epoch: int, keys: Sequence[str], values: bool = True
    ) -> list[Item | bool | None]:
        """Return the entries (or, with ``values=False``, ``True``) of ``keys`` that
        this shard still holds for its export of ``epoch``; ``None`` for the others."""
        exp = self._export
        out: list[Item | bool | None] = [None] * len(keys)
        if exp is None or exp.epoch != int(epoch):
            return out
        n = self._num_slots
        for i, key in enumerate(keys):
            if exp.dst_of[key_hash(key) % n] < 0:
                continue
            entry = self._store.get_entry(key)
            if entry is not None:
                out[i] = (
                    (key, entry.value, entry.expires_at, entry.tags, entry.tenant)
                    if values
                    else True
                )
        return out

    async def drop_keys(self, epoch: int, keys: Sequence[str]) -> list[bool]:
        """Delete exported ``keys`` (a target forwards its deletes); return which were
        here."""
        exp = self._export
        if exp is None or exp.epoch != int(epoch):
            return [False] * len(keys)
        n = self._num_slots
        return [exp.dst_of[key_hash(k) % n] >= 0 and self._store.delete(k) for k in keys]

    async def _drop(self, exp: _Export, keys: Sequence[str]) -> None:
        """Drop exported entries, a chunk per loop turn; not counted as deletes."""
        n, store = self._num_slots, self._store
        for start in range(0, len(keys), _DROP_CHUNK):
            dropped = 0
            for key in keys[start : start + _DROP_CHUNK]:
                if exp.dst_of[key_hash(key) % n] >= 0 and store.delete(key):
                    dropped += 1
            store.stats.deletes -= dropped
            exp.dropped += dropped
            await asyncio.sleep(0)

    async def release_export(self, epoch: int, target: str) -> int:
        """``target`` has pulled everything it gets from here: drop it; return how many
        entries were dropped."""
        exp = self._export
        if exp is None or exp.epoch != int(epoch) or target not in exp.targets:
            return 0
        idx = exp.targets.index(target)
        if idx in exp.released:
            return 0
        exp.released.add(idx)
        before = exp.dropped
        keys, exp.sent[idx] = exp.sent[idx], []
        await self._drop(exp, keys)
        if len(exp.released) == len(exp.targets):
            await self.finish_export(epoch)
        return exp.dropped - before

    async def finish_export(self, epoch: int) -> dict[str, int]:
        """Drop whatever is left of the export of ``epoch`` (the coordinator's last
        step, also after a target died); return its counters once it is dropped."""
        exp = self._export
        if exp is None or exp.epoch != int(epoch):  # finished, or finishing (last release)
            if self._last_export.get("epoch") != int(epoch):
                return {}
            await self._export_done()
            return dict(self._last_export)
        self._export = None  # no more batches, and set_ring may drop what is not owned
        self._last_export = {"epoch": exp.epoch, "exported": exp.exported, "dropped": 0}
        rest = [k for q in exp.queues for k in q] + [k for s in exp.sent for k in s]
        rest += exp.keys[exp.pos :]
        await self._drop(exp, rest)
        # Entries of these slots read through from L2 around the flip: a scan, in chunks.
        keys = list(self._store.keys())
        for start in range(0, len(keys), _SCAN_CHUNK):
            stray = [
                k
                for k in keys[start : start + _SCAN_CHUNK]
                if exp.dst_of[key_hash(k) % self._num_slots] >= 0 and not self._owns_slot(k)
            ]
            await self._drop(exp, stray)
        self._last_export["dropped"] = exp.dropped
        if self._export_idle is not None:
            self._export_idle.set()
        return dict(self._last_export)

    async def _export_done(self) -> None:
        """Wait until the running export is finished (dropped)."""
        if self._export_idle is not None:
            await self._export_idle.wait()

    def _owns_slot(self, key: str) -> bool:
        return bool(self._owned[key_hash(key) % self._num_slots])

    async def _forward_invalidation(self, tags: Sequence[str] | None, prefix: str | None) -> None:
        """While exporting: pass an invalidation or a flush on to the targets (before
        the caller's call returns), so nothing they pulled outlives it."""
        exp = self._export
        if exp is None:
            return
        me = self._config.name
        names = [t for i, t in enumerate(exp.targets) if i not in exp.released]
        calls = [
            self._call_peer(t, "import_invalidated", exp.epoch, me, tags, prefix) for t in names
        ]
        for name, result in zip(
            names, await asyncio.gather(*calls, return_exceptions=True), strict=True
        ):
            if isinstance(result, BaseException):
                _log.warning(
                    "shard %s: could not forward an invalidation to %s: %s", me, name, result
                )
