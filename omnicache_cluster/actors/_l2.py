"""`ShardL2`: a shard's durable tier (Redis or disk), its write modes and its faults.

One flusher task per shard writes batches to L2, one batch at a time, in order:

* **write-through** (the default): a ``set`` waits until the batch holding it is in
  L2. Concurrent writes share a batch (group commit), so a busy shard makes one L2
  round trip per batch, not per key.
* **write-behind**: a ``set`` is acknowledged at once and flushed every
  ``flush_interval_s``; at most ``queue_max`` dirty entries wait (a writer past it
  waits for a flush), ``l2_dirty`` in `stats` is how many, and `flush` (called on a
  graceful shutdown) writes them out.

Deletes, tag invalidations and flushes go to L2 directly, after any batch in flight
(one lock orders every L2 mutation); a pending write of a deleted key is dropped.
A read of a key first looks at the dirty entries (they are newer than L2).

**Degraded contract** (fail-open): when L2 fails, the shard keeps serving from L1.
The fault is counted (``l2_errors``) and logged at most once per ``log_interval_s``,
and L2 is left alone for ``retry_interval_s``. Meanwhile a write-through ``set`` is
acknowledged from L1 alone (counted as ``l2_degraded``) and kept dirty; dirty entries
(at most ``queue_max``, the oldest dropped past it and counted as ``l2_dropped``) are
written as soon as L2 answers again, with no restart. An acknowledged write is only
lost if its shard dies while L2 is down. Invalidations and clears made while L2 is
down reach L1 only (counted).

A read that raced a write of the same key does not fill L1 with what it read, so a
slow L2 read can never put an older value over a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from omnicache_cluster.backends.base import AsyncByteStore, Record
from omnicache_cluster.config import L2Config
from omnicache_cluster.core.faults import FaultLog

__all__ = ["ShardL2"]

_log = logging.getLogger(__name__)

Pending = dict[str, Record | None]  # None: a delete not yet in L2


class ShardL2:
    """The L2 tier of one shard (see the module docstring).

    Args:
        config: the L2 spec (pickled into the actor with its `ShardConfig`).
        name: the shard's name, for logs.
        store: the async byte store to use (``config.open_async()`` by default).
        clock: wall-clock seconds (record expiry).
        monotonic: monotonic seconds (retry timing).
    """

    def __init__(
        self,
        config: L2Config,
        name: str,
        *,
        store: AsyncByteStore | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._store = store if store is not None else config.open_async()
        self._behind = config.write_mode == "write_behind"
        self._clock = clock
        self._mono = monotonic
        self._pending: Pending = {}
        self._inflight: Pending = {}
        self._waiters: list[asyncio.Future[bool]] = []
        self._forced = 0
        self._wake = asyncio.Event()
        self._io = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._down_until = 0.0
        # Reads in flight per key, keys written while read, and whole-shard wipes.
        self._watch: dict[str, int] = {}
        self._dirtied: set[str] = set()
        self._wipes = 0
        self.faults = FaultLog(
            f"L2 ({config.where()}) of shard {name}", _log, interval_s=config.log_interval_s
        )
        self.counts = dict.fromkeys(
            ("reads", "hits", "flushed", "degraded", "dropped", "skipped"), 0
        )

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher task on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, timeout_s: float = 10.0) -> int:
        """Write every dirty entry now, even while L2 counts as down; return how many
        are still dirty afterwards (0 when all reached L2)."""
        self.start()
        self._forced += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_flush(), timeout_s)
        finally:
            self._forced -= 1
        return len(self._pending) + len(self._inflight)

    async def close(self, timeout_s: float = 10.0) -> int:
        """Flush, stop the flusher and close the store; return the entries left dirty."""
        left = await self.flush(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self._store.close()
        except Exception as exc:  # closing a dead connection is not worth an error
            self.faults.record("close", exc)
        return left

    @property
    def up(self) -> bool:
        """Whether L2 may be tried now (no error within ``retry_interval_s``)."""
        return self._mono() >= self._down_until

    def _failed(self, kind: str, exc: BaseException) -> None:
        self.faults.record(kind, exc)
        self._down_until = self._mono() + self.config.retry_interval_s

    def _succeeded(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            _log.warning("%s: answering again", self.faults.what)

    # -- reads --------------------------------------------------------------------------

    async def read(self, keys: Sequence[str]) -> tuple[list[Record | None], list[bool]]:
        """Return each key's record (dirty entries first, then L2) and whether it may
        fill L1 (no write of the key raced the read)."""
        for k in keys:
            self._watch[k] = self._watch.get(k, 0) + 1
        wipes = self._wipes
        try:
            records = await self._fetch(keys)
        finally:
            fill = [wipes == self._wipes and k not in self._dirtied for k in keys]
            for k in keys:
                n = self._watch[k] - 1
                if n:
                    self._watch[k] = n
                else:
                    del self._watch[k]
                    self._dirtied.discard(k)
        return records, fill

    async def _fetch(self, keys: Sequence[str]) -> list[Record | None]:
        now = self._clock()
        out: list[Record | None] = [None] * len(keys)
        todo: list[int] = []
        pending, inflight = self._pending, self._inflight
        for i, k in enumerate(keys):
            if k in pending or k in inflight:  # newer than L2; None is a delete
                dirty = pending[k] if k in pending else inflight[k]
                out[i] = dirty if dirty is not None and dirty.live(now) else None
            else:
                todo.append(i)
        if not todo:
            return out
        if not self.up:
            self.counts["skipped"] += len(todo)
            return out
        self.counts["reads"] += len(todo)
        try:
            found = await self._store.get_many([keys[i] for i in todo])
        except Exception as exc:
            self._failed("read", exc)
            return out
        self._succeeded()
        for i, record in zip(todo, found, strict=True):
            out[i] = record
        self.counts["hits"] += sum(r is not None for r in found)
        return out

    async def exists(self, keys: Sequence[str]) -> list[bool]:
        """Return, per key, whether a live record is dirty or in L2."""
        return [r is not None for r in await self._fetch(keys)]

    # -- writes -------------------------------------------------------------------------

    def _touch(self, keys: Iterable[str]) -> None:
        watch = self._watch
        if watch:
            self._dirtied.update(k for k in keys if k in watch)

    def _trim(self) -> None:
        over = len(self._pending) - self.config.queue_max
        if over > 0:
            for key in list(self._pending)[:over]:  # oldest first
                del self._pending[key]
            self.counts["dropped"] += over
            self.faults.record("queue", f"{over} dirty entries dropped (queue_max reached)")

    async def write(self, items: Sequence[tuple[str, Record]]) -> bool:
        """Queue ``items`` for L2; return whether they are in L2 when this returns.

        Write-through waits for the batch unless L2 is down; write-behind waits only
        when the dirty queue is full.
        """
        pending = self._pending
        self._touch(k for k, _ in items)
        for key, record in items:
            pending.pop(key, None)  # re-inserted: the newest write is the last to drop
            pending[key] = record
        if self._behind:
            if len(pending) >= self.config.queue_max and self.up:
                return await self._wait_flush()
            self._trim()
            return False
        if not self.up:
            self.counts["degraded"] += len(items)
            self._trim()
            return False
        future = self._waiter()
        if self._io.locked():  # a batch is in flight: the flusher takes ours next
            self.start()
            self._wake.set()
        else:  # nothing in flight: write the batch now; shielded, a cancelled caller
            # cannot cut a batch (and the other writers waiting on it) in half.
            await asyncio.shield(self._flush_once())
        ok = bool(await future)
        if not ok:
            self.counts["degraded"] += len(items)
        return ok

    def _waiter(self) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    async def _wait_flush(self) -> bool:
        self.start()
        future = self._waiter()
        self._wake.set()
        return bool(await future)

    async def delete(self, keys: Sequence[str]) -> list[bool]:
        """Delete keys from L2 (after any batch in flight); return which were there."""
        self._touch(keys)
        pending = self._pending
        existed = [pending.pop(k, None) is not None for k in keys]
        if self.up:
            async with self._io:
                try:
                    in_l2 = await self._store.delete_many(keys)
                except Exception as exc:
                    self._failed("delete", exc)
                else:
                    self._succeeded()
                    return [a or b for a, b in zip(existed, in_l2, strict=True)]
        for k in keys:  # retried with the next batch
            pending.setdefault(k, None)
        self._trim()
        return existed

    async def invalidate(self, tags: Sequence[str], owned: Callable[[str], bool]) -> set[str]:
        """Delete the entries carrying any of ``tags`` whose key ``owned`` accepts;
        return their keys."""
        wanted = set(tags)

        async def find() -> list[str]:
            keys = [k for tag in tags for k in await self._store.tagged(tag)]
            return [k for k in dict.fromkeys(keys) if owned(k)]

        return await self._delete_where(
            "invalidate", lambda r: not wanted.isdisjoint(r.tags), "", find
        )

    async def clear(self, prefix: str | None, owned: Callable[[str], bool]) -> set[str]:
        """Delete the entries whose key starts with ``prefix`` (all for ``None``) and
        that ``owned`` accepts; return their keys."""
        start = prefix or ""

        async def find() -> list[str]:
            return [k for k in await self._store.keys(start) if owned(k)]

        return await self._delete_where("clear", lambda _r: True, start, find)

    async def _delete_where(
        self,
        kind: str,
        match: Callable[[Record], bool],
        prefix: str,
        find: Callable[[], Awaitable[list[str]]],
    ) -> set[str]:
        """Turn matching dirty writes into deletes, then delete what ``find`` lists in
        L2 (after any batch in flight); return the keys removed."""
        removed = self._drop_dirty(match, prefix)
        if not self.up:
            self.faults.record(kind, f"L2 is down; the {kind} reached L1 only")
            return removed
        async with self._io:
            # Again under the lock: a failed batch may have put matching writes back.
            removed |= self._drop_dirty(match, prefix)
            try:
                keys = await find()
                if keys:
                    gone = await self._store.delete_many(keys)
                    removed.update(k for k, g in zip(keys, gone, strict=True) if g)
            except Exception as exc:
                self._failed(kind, exc)
            else:
                self._succeeded()
        return removed

    def _drop_dirty(self, match: Callable[[Record], bool], prefix: str = "") -> set[str]:
        """Turn matching dirty writes into deletes (an older copy may be in L2)."""
        self._wipes += 1
        hit = {
            k
            for k, r in self._pending.items()
            if r is not None and k.startswith(prefix) and match(r)
        }
        for k in hit:
            self._pending[k] = None
        return hit

    # -- the flusher --------------------------------------------------------------------

    def _timeout(self) -> float | None:
        if self._waiters and (self.up or self._forced):
            return 0.0
        if not self._pending:
            return None
        if not self.up:
            return max(0.0, self._down_until - self._mono())
        return self.config.flush_interval_s if self._behind else 0.0

    async def _run(self) -> None:
        while True:
            timeout = self._timeout()
            if timeout is None:
                await self._wake.wait()
            elif timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if not self._pending:
                waiters, self._waiters = self._waiters, []
                if waiters:
                    async with self._io:  # a batch a writer flushes itself may be in flight
                        pass
                self._resolve(waiters, True)
                continue
            if self.up or self._forced:
                await self._flush_once()

    async def _flush_once(self) -> None:
        batch, waiters = self._pending, self._waiters
        self._pending, self._waiters = {}, []
        self._inflight = batch
        ok = False
        try:
            async with self._io:
                sets = [(k, r) for k, r in batch.items() if r is not None]
                deletes = [k for k, r in batch.items() if r is None]
                if sets:
                    await self._store.set_many(sets)
                if deletes:
                    await self._store.delete_many(deletes)
            ok = True
        except Exception as exc:
            self._failed("write", exc)
            # Back in the queue, behind nothing: newer writes of a key win.
            batch.update(self._pending)
            self._pending = batch
            self._trim()
        else:
            self._succeeded()
            self.counts["flushed"] += len(batch)
        finally:
            self._inflight = {}
        self._resolve(waiters, ok)

    @staticmethod
    def _resolve(waiters: list[asyncio.Future[bool]], ok: bool) -> None:
        for future in waiters:
            if not future.done():
                future.set_result(ok)

    # -- stats --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Return the L2 counters and levels of this shard (``l2_*`` keys)."""
        store = self._store.stats()
        c = self.counts
        return {
            "l2": self.config.kind,
            "l2_mode": self.config.write_mode,
            "l2_up": self.up,
            "l2_dirty": len(self._pending) + len(self._inflight),
            "l2_errors": sum(n for k, n in self.faults.by_kind.items() if k != "queue"),
            "l2_corrupt": int(store.get("corrupt", 0)),
            "l2_reads": c["reads"],
            "l2_hits": c["hits"],
            "l2_flushed": c["flushed"],
            "l2_degraded": c["degraded"],
            "l2_dropped": c["dropped"],
            "l2_skipped": c["skipped"],
        }
