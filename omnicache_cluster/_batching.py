"""Automatic batching: concurrent single-key calls leave as one call per shard.

* Async: every ``aget`` / ``aset`` made in the same turn of the event loop (or until
  ``max_batch`` are pending) is sent as one ``get_many`` / ``set_many`` per shard. A
  lone call waits one loop turn, microseconds.
* Threads: group commit. A thread that finds no call in flight sends its own at once
  (no added latency when used from one thread); threads that arrive while one is in
  flight queue up, and the next sender takes the whole queue in one batch.

Either way each caller gets exactly its own key's reply, or its own exception.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from omnicache_cluster._routing import _Batch

if TYPE_CHECKING:
    from omnicache_cluster._routing import _ClusterState
    from omnicache_cluster.client import ClientOptions

__all__: list[str] = []

MAX_BATCH = 1024
MAX_INFLIGHT = 2


def _results(batch: _Batch) -> list[Any]:
    if batch.method == "set_many":  # per key: (size, limit) if refused, else the change seq
        errors = {pos: (size, limit) for pos, size, limit in batch.errors}
        return [errors.get(i, seq) for i, seq in enumerate(batch.results)]
    return batch.results


class AsyncBatcher:
    """Coalesces the ``get_many`` / ``set_many`` calls of one event loop.

    At most ``MAX_INFLIGHT`` batches per method are in flight; calls made meanwhile
    wait and leave together when one returns (group commit), so the batches grow
    with the load instead of splitting into many small ones.
    """

    def __init__(self, state: _ClusterState, loop: asyncio.AbstractEventLoop) -> None:
        self._state = state
        self._loop = loop
        self._pending: dict[tuple[str, ClientOptions], list[tuple[Any, asyncio.Future[Any]]]] = {}
        self._inflight: dict[tuple[str, ClientOptions], int] = {}
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0

    def submit(self, method: str, key: str, arg: Any, opts: ClientOptions) -> asyncio.Future[Any]:
        """Queue one key; the future gets its result (``set_many``: an error or the seq)."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending.setdefault((method, opts), []).append(((key, arg), fut))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        for group in list(self._pending):
            while self._inflight.get(group, 0) < MAX_INFLIGHT and self._pending.get(group):
                queue = self._pending[group]
                part, rest = queue[:MAX_BATCH], queue[MAX_BATCH:]
                if rest:
                    self._pending[group] = rest
                else:
                    del self._pending[group]
                self._send(group, part)

    def _send(self, group: tuple[str, ClientOptions], queue: list[Any]) -> None:
        self._inflight[group] = self._inflight.get(group, 0) + 1
        task = self._loop.create_task(self._run(*group, queue))
        self._tasks.add(task)  # the loop keeps only weak references to tasks

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._inflight[group] -= 1
            if self._pending.get(group) and not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._flush)

        task.add_done_callback(done)

    async def _run(self, method: str, opts: ClientOptions, queue: list[Any]) -> None:
        keys = [key for (key, _), _ in queue]
        args = [arg for (_, arg), _ in queue] if method == "set_many" else None
        self.batches += 1
        try:
            batch = await self._state.arun(_Batch(method, keys, args), opts)
        except BaseException as exc:
            for _, fut in queue:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), result in zip(queue, _results(batch), strict=True):
            if not fut.done():
                fut.set_result(result)


_ASYNC: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncBatcher]]
_ASYNC = weakref.WeakKeyDictionary()


def async_batcher(state: _ClusterState) -> AsyncBatcher:
    """Return the batcher of ``state``'s cluster for the running event loop."""
    loop = asyncio.get_running_loop()
    per_loop = _ASYNC.setdefault(loop, {})
    batcher = per_loop.get(state.namespace)
    if batcher is None or batcher._state is not state:
        batcher = per_loop[state.namespace] = AsyncBatcher(state, loop)
    return batcher


class ThreadBatcher:
    """Group commit of single-key calls made from many threads."""

    def __init__(self, state: _ClusterState) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._queue: list[tuple[str, str, Any, ClientOptions, Future[Any]]] = []
        self._busy = False
        self.batches = 0

    def call(
        self, method: str, key: str, arg: Any, opts: ClientOptions, direct: Callable[[], Any]
    ) -> Any:
        """Run ``direct()`` if nothing is in flight, else queue and wait for a batch."""
        with self._lock:
            if self._busy:
                fut: Future[Any] = Future()
                self._queue.append((method, key, arg, opts, fut))
                queued = True
            else:
                self._busy = True
                queued = False
        if queued:
            return fut.result()
        try:
            return direct()
        finally:
            self._drain()

    def _drain(self) -> None:
        while True:
            with self._lock:
                queue, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                if not queue:
                    self._busy = False
                    return
            groups: dict[tuple[str, ClientOptions], list[Any]] = {}
            for item in queue:
                groups.setdefault((item[0], item[3]), []).append(item)
            for (method, opts), part in groups.items():
                self._send(method, part, opts)

    def _send(self, method: str, part: list[Any], opts: ClientOptions) -> None:
        keys = [item[1] for item in part]
        args = [item[2] for item in part] if method == "set_many" else None
        self.batches += 1
        try:
            batch = self._state.run(_Batch(method, keys, args), opts)
        except Exception as exc:
            for *_, fut in part:
                fut.set_exception(exc)
            return
        for (*_, fut), result in zip(part, _results(batch), strict=True):
            fut.set_result(result)
