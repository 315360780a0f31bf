"""`StreamingResponseCache`: streamed LLM answers, replayed chunk by chunk.

The first call streams live from the provider while the chunks are buffered; when the
stream ends normally the chunk list is stored, and later calls replay it, chunk for
chunk. A stream that fails or is abandoned half-way (the consumer stops iterating, the
task is cancelled) is not cached.

Concurrent first calls for the same request, in any process of the cluster, make one
upstream stream: one caller leads (chosen through the backend's single-flight), the
others follow it and replay its chunks as they arrive, from short-lived progress
entries the leader publishes every ``flush_interval`` seconds (see
`omnicache_cluster.layers._streamwire`). A follower whose leader fails raises
`StreamInterrupted`; one whose leader was abandoned or went silent before it received
anything starts over, usually as the new leader.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from typing import Any

from omnicache_cluster._flight import record_fault
from omnicache_cluster.core.keys import CacheKey, validate_part
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.layers._base import (
    LAYER_DEFAULT,
    CacheLayer,
    _faults,
    config_of,
    with_overrides,
)
from omnicache_cluster.layers._streamwire import (
    ABANDONED,
    DONE,
    FAILED,
    RESTART,
    Backoff,
    Publisher,
    Reader,
    StreamInterrupted,
    claim_key,
    describe_error,
    head_key,
)
from omnicache_cluster.layers.response import request_key
from omnicache_cluster.policies import RequestConfig, TTLPolicy, model_tag

__all__ = ["StreamInterrupted", "StreamingResponseCache"]

_MAX_RESTARTS = 3
_STOPPED = (GeneratorExit, asyncio.CancelledError, KeyboardInterrupt)


class _Restart(Exception):
    """A follower's leader stopped before this follower got anything: start over."""


def _identity(chunk: Any) -> Any:
    return chunk


class StreamingResponseCache(CacheLayer):
    """Cache of streamed responses (sync and async generators), shared cluster-wide.

    Args:
        backend: a `CacheCluster`, an `InMemoryBackend` or a `CacheManager`.
        serializer: the seed's per-layer serializer (see `CacheLayer`).
        chunk_joiner: the seed's "store one joined value": refused with a
            ``TypeError`` naming the replacements (chunks are stored as a list so
            concurrent callers replay them live).
        ttl_policy: ttls per layer (the manager's, or `TTLPolicy.from_env()`).
        layer: the key's layer part (``stream``); progress entries use
            ``<layer>.wire``.
        to_cacheable: turns a provider chunk into a storable value (e.g.
            ``lambda c: c.model_dump()`` for SDK objects); identity by default.
        from_cacheable: turns a stored value back into a chunk on replay.
        flush_interval: least seconds between two publications of a live stream. The
            default 0 publishes every chunk as it arrives (one short cluster call per
            chunk, before the leader yields it); a larger value batches chunks, and
            followers may then lag by up to the gap between two upstream chunks.
        poll_interval: a follower's first poll interval (it backs off to 50 ms).
        stall_timeout: seconds of silence after which a leader counts as gone (also
            the lifetime of progress entries).

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> sc = StreamingResponseCache(InMemoryBackend())
        >>> msgs = [{"role": "user", "content": "count"}]
        >>> list(sc.get_or_stream(msgs, lambda m: iter(["1", "2", "3"])))
        ['1', '2', '3']
        >>> list(sc.get_or_stream(msgs, lambda m: iter(["never called"])))
        ['1', '2', '3']
    """

    layer = "stream"

    def __init__(
        self,
        backend: Any,
        serializer: Any = None,
        chunk_joiner: Callable[[list[Any]], Any] | None = None,
        *,
        ttl_policy: TTLPolicy | None = None,
        layer: str | None = None,
        to_cacheable: Callable[[Any], Any] | None = None,
        from_cacheable: Callable[[Any], Any] | None = None,
        flush_interval: float = 0.0,
        poll_interval: float = 0.005,
        stall_timeout: float = 60.0,
    ) -> None:
        if chunk_joiner is not None:
            raise TypeError(
                "StreamingResponseCache(chunk_joiner=) is not supported: the chunks are "
                "stored as a list, which concurrent callers replay while the stream is "
                "live. Convert chunks with to_cacheable=/from_cacheable=, or join them "
                "yourself and store the result with ResponseCache.set"
            )
        super().__init__(backend, serializer, ttl_policy=ttl_policy, layer=layer)
        for name, value, least in (
            ("flush_interval", flush_interval, 0.0),
            ("poll_interval", poll_interval, 1e-3),
            ("stall_timeout", stall_timeout, 1e-3),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
                raise ValueError(f"{name} must be at least {least} seconds, got {value!r}")
        self._wire = validate_part("layer", f"{self._layer}.wire")
        self._to = to_cacheable or _identity
        self._from = from_cacheable or _identity
        self._flush_interval = float(flush_interval)
        self._poll = float(poll_interval)
        self._stall = float(stall_timeout)

    # -- the request ------------------------------------------------------------------

    def _request(
        self, messages: Any, model_id: str, params: Mapping[str, Any] | None, extras: Any
    ) -> CacheKey:
        return self._key(request_key(messages, model_id, params, extras))

    def get(
        self,
        messages: Any,
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> Any:
        """Return the cached chunk list of a request, or ``default``."""
        value = self._lookup(self._request(messages, model_id, params, request), config_of(config))
        return self._or(default) if value is MISS else [self._from(c) for c in value]

    def invalidate_model(self, model_id: str) -> int:
        """Remove every cached stream of ``model_id`` (this tenant)."""
        return self._invalidate(model_tag(model_id))

    async def ainvalidate_model(self, model_id: str) -> int:
        """Async `invalidate_model`."""
        return await self._ainvalidate(model_tag(model_id))

    # -- wire I/O (fail-open: a fault is a missing entry or a skipped write) -----------

    def _wire_args(self) -> dict[str, Any]:
        return {"ttl": max(2 * self._stall, 10.0), "layer": self._wire}

    def _new_claim(self, got: Any, me: str) -> tuple[str, bool]:
        sid = got.get("id") if isinstance(got, dict) else None
        return (sid, sid == me) if isinstance(sid, str) else (me, True)

    def _claim(self, key: CacheKey) -> tuple[str, bool]:
        me = uuid.uuid4().hex
        try:
            got = self._backend.get_or_compute(
                claim_key(str(key)), lambda: {"id": me}, **self._wire_args()
            )
        except _faults() as exc:
            record_fault("stream_claim", exc)
            return me, True
        return self._new_claim(got, me)

    async def _aclaim(self, key: CacheKey) -> tuple[str, bool]:
        me = uuid.uuid4().hex
        try:
            got = await self._backend.aget_or_compute(
                claim_key(str(key)), lambda: {"id": me}, **self._wire_args()
            )
        except _faults() as exc:
            record_fault("stream_claim", exc)
            return me, True
        return self._new_claim(got, me)

    def _wire_get(self, keys: list[Any]) -> list[Any]:
        try:
            return self._backend.get_many(keys, MISS, layer=self._wire) if keys else []
        except _faults() as exc:
            record_fault("stream_read", exc)
            return [MISS] * len(keys)

    async def _awire_get(self, keys: list[Any]) -> list[Any]:
        try:
            return await self._backend.aget_many(keys, MISS, layer=self._wire) if keys else []
        except _faults() as exc:
            record_fault("stream_read", exc)
            return [MISS] * len(keys)

    def _wire_set(self, items: list[tuple[Any, Any]]) -> None:
        try:
            self._backend.set_many(items, **self._wire_args())
        except (TypeError, *_faults()) as exc:
            record_fault("stream_publish", exc)

    async def _awire_set(self, items: list[tuple[Any, Any]]) -> None:
        try:
            await self._backend.aset_many(items, **self._wire_args())
        except (TypeError, *_faults()) as exc:
            record_fault("stream_publish", exc)

    def _drop_claim(self, key: CacheKey, sid: str) -> None:
        """Remove the claim of ``key`` if it still names stream ``sid``."""
        ckey = claim_key(str(key))
        try:
            if self._wire_get([ckey])[0] == {"id": sid}:
                self._backend.delete(ckey, layer=self._wire)
        except _faults() as exc:
            record_fault("stream_claim", exc)

    async def _adrop_claim(self, key: CacheKey, sid: str) -> None:
        """Async `_drop_claim`."""
        ckey = claim_key(str(key))
        try:
            if (await self._awire_get([ckey]))[0] == {"id": sid}:
                await self._backend.adelete(ckey, layer=self._wire)
        except _faults() as exc:
            record_fault("stream_claim", exc)

    def _end_items(self, pub: Publisher, state: tuple[str, str | None]) -> list[tuple[Any, Any]]:
        return [*pub.take_parts(), pub.head(*state)]

    # -- sync -------------------------------------------------------------------------

    def get_or_stream(
        self,
        messages: Any,
        stream_fn: Callable[[Any], Iterable[Any]],
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> Iterator[Any]:
        """Yield the cached chunks of a request, or stream ``stream_fn(messages)`` live
        (buffered, and stored if it ends normally), or follow a concurrent caller's
        live stream. Takes the same request arguments as `ResponseCache.get`.

        Raises:
            StreamInterrupted: this call was replaying another caller's stream, which
                failed or stopped after some chunks had been yielded here.
        """
        key = self._request(messages, model_id, params, request)
        config = with_overrides(config, ttl, tags)
        return self._stream(key, lambda: stream_fn(messages), config, [model_tag(model_id)])

    def _stream(
        self,
        key: CacheKey,
        upstream: Callable[[], Iterable[Any]],
        config: RequestConfig,
        tags: list[str],
    ) -> Iterator[Any]:
        for _ in range(_MAX_RESTARTS):
            cached = self._lookup(key, config, count=False)
            if cached is not MISS:
                self._count(hits=1)
                yield from (self._from(c) for c in cached)
                return
            if not config.writes:
                break
            sid, leads = self._claim(key)
            if leads:
                try:
                    chunks = upstream()
                except BaseException as exc:  # the provider refused the request
                    self._wire_set([_failed_head(sid, exc)])
                    self._drop_claim(key, sid)
                    raise
                yield from self._lead(key, sid, chunks, config, tags)
                return
            try:
                yield from self._follow(key, sid)
                return
            except _Restart:
                continue
        self._count(misses=1, computes=1)
        yield from upstream()

    def _lead(
        self,
        key: CacheKey,
        sid: str,
        chunks: Iterable[Any],
        config: RequestConfig,
        tags: list[str],
    ) -> Iterator[Any]:
        self._count(misses=1, computes=1)
        pub = Publisher(sid, self._flush_interval)
        self._wire_set([pub.head()])
        state: tuple[str, str | None] = (DONE, None)
        try:
            for chunk in chunks:
                if pub.add(self._to(chunk)):
                    self._wire_set([*pub.take_parts(), pub.head()])
                yield chunk
        except BaseException as exc:
            state = _end_state(exc)
            raise
        finally:
            close = getattr(chunks, "close", None)
            if state[0] != DONE and callable(close):
                close()
            if state[0] == DONE:
                self._store(key, pub.chunks, config, tags)
            self._wire_set(self._end_items(pub, state))
            self._drop_claim(key, sid)

    def _follow(self, key: CacheKey, sid: str) -> Iterator[Any]:
        reader = Reader(sid, self._stall)
        backoff = Backoff(self._poll, 0.05)
        while True:
            (head,) = self._wire_get([head_key(sid)])
            got = reader.take(self._wire_get(reader.wanted(head)))
            yield from (self._from(c) for c in got)
            verdict = reader.verdict(head)
            if verdict == DONE:
                self._count(hits=1)
                return
            if verdict == RESTART:
                self._drop_claim(key, sid)
                raise _Restart
            time.sleep(backoff.next(bool(got)))

    # -- async ------------------------------------------------------------------------

    async def aget(
        self,
        messages: Any,
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> Any:
        """Async `get`."""
        key = self._request(messages, model_id, params, request)
        value = await self._alookup(key, config_of(config))
        return self._or(default) if value is MISS else [self._from(c) for c in value]

    def aget_or_stream(
        self,
        messages: Any,
        stream_fn: Callable[[Any], Any],
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> AsyncIterator[Any]:
        """Async `get_or_stream`, an async generator: ``async for chunk in
        cache.aget_or_stream(...)``. ``stream_fn(messages)`` returns an async iterable
        (or an awaitable of one, as ``client.chat.completions.create(stream=True)`` of
        an async client does).

        Close the iterator when stopping early (``contextlib.aclosing``), so that the
        abandoned stream is known at once rather than when it is garbage-collected.
        """
        key = self._request(messages, model_id, params, request)
        config = with_overrides(config, ttl, tags)
        return self._astream(key, lambda: stream_fn(messages), config, [model_tag(model_id)])

    async def _astream(
        self, key: CacheKey, upstream: Callable[[], Any], config: RequestConfig, tags: list[str]
    ) -> AsyncIterator[Any]:
        for _ in range(_MAX_RESTARTS):
            cached = await self._alookup(key, config, count=False)
            if cached is not MISS:
                self._count(hits=1)
                for c in cached:
                    yield self._from(c)
                return
            if not config.writes:
                break
            sid, leads = await self._aclaim(key)
            # aclosing: closing this generator must close the inner one at once (an
            # ``async for`` does not), so an abandoned lead is known as such.
            if leads:
                try:
                    chunks = await _open(upstream)
                except BaseException as exc:
                    await self._awire_set([_failed_head(sid, exc)])
                    await self._adrop_claim(key, sid)
                    raise
                inner = self._alead(key, sid, chunks, config, tags)
            else:
                inner = self._afollow(key, sid)
            try:
                async with aclosing(inner):
                    async for chunk in inner:
                        yield chunk
                return
            except _Restart:
                continue
        self._count(misses=1, computes=1)
        async for chunk in await _open(upstream):
            yield chunk

    async def _alead(
        self, key: CacheKey, sid: str, chunks: Any, config: RequestConfig, tags: list[str]
    ) -> AsyncIterator[Any]:
        self._count(misses=1, computes=1)
        pub = Publisher(sid, self._flush_interval)
        await self._awire_set([pub.head()])
        state: tuple[str, str | None] = (DONE, None)
        try:
            async for chunk in chunks:
                if pub.add(self._to(chunk)):
                    await self._awire_set([*pub.take_parts(), pub.head()])
                yield chunk
        except BaseException as exc:
            state = _end_state(exc)
            raise
        finally:
            aclose = getattr(chunks, "aclose", None)
            if state[0] != DONE and callable(aclose):
                await aclose()
            if state[0] == DONE:
                await self._astore(key, pub.chunks, config, tags)
            await self._awire_set(self._end_items(pub, state))
            await self._adrop_claim(key, sid)

    async def _afollow(self, key: CacheKey, sid: str) -> AsyncIterator[Any]:
        reader = Reader(sid, self._stall)
        backoff = Backoff(self._poll, 0.05)
        while True:
            (head,) = await self._awire_get([head_key(sid)])
            got = reader.take(await self._awire_get(reader.wanted(head)))
            for c in got:
                yield self._from(c)
            verdict = reader.verdict(head)
            if verdict == DONE:
                self._count(hits=1)
                return
            if verdict == RESTART:
                await self._adrop_claim(key, sid)
                raise _Restart
            await asyncio.sleep(backoff.next(bool(got)))


def _end_state(exc: BaseException) -> tuple[str, str | None]:
    """How a leader's stream ended when ``exc`` interrupted it."""
    if isinstance(exc, _STOPPED):  # the consumer stopped, or the task was cancelled
        return (ABANDONED, None)
    return (FAILED, describe_error(exc))


def _failed_head(sid: str, exc: BaseException) -> tuple[Any, dict[str, Any]]:
    """The head record of a stream whose request failed before its first chunk."""
    return Publisher(sid, 0.0).head(FAILED, describe_error(exc))


async def _open(upstream: Callable[[], Any]) -> Any:
    """Call ``upstream`` and return its async iterable (awaiting it if needed).

    Raises:
        TypeError: it gave a sync iterable, which would block the event loop.
    """
    stream = upstream()
    if inspect.isawaitable(stream) and not hasattr(stream, "__aiter__"):
        stream = await stream
    if not hasattr(stream, "__aiter__"):
        raise TypeError(
            f"aget_or_stream needs an async iterable from stream_fn, got "
            f"{type(stream).__qualname__}; use get_or_stream for sync streams"
        )
    return stream
