"""``get_or_compute``: a cache lookup, and on a miss one compute in the whole cluster.

A hit is one shard call, as for ``get``. A miss costs one more: the shard that owns
the key looks it up and, on a miss, leads or joins the key's flight in the same call
(`omnicache_cluster.actors._leases`); the leader computes, then stores its value and
hands it to every waiter in one call. A waiter gets the leader's value or re-raises
the leader's exception. Tenants with compute quotas take their lease from the
coordinator instead, which admits computes cluster-wide; such a leader checks the
cache once more inside the flight before computing.

Cache faults never reach the caller: if a shard or the coordinator cannot be reached,
or stored bytes do not decode, the user function runs anyway, and the fault is
counted and logged (at most once per interval per kind). Errors that are the caller's
(a bad key or ttl, a tenant over its quota, a wait past ``wait_timeout``) are raised.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.errors import (
    CodecError,
    OmnicacheError,
    QuotaExceeded,
    Timeout,
    ValueTooLarge,
)

if TYPE_CHECKING:
    from omnicache_cluster.client import CacheCluster

__all__ = ["FAULTS", "aget_or_compute", "get_or_compute", "record_fault"]

_log = logging.getLogger("omnicache_cluster")
T = TypeVar("T")

#: Cache faults this process failed open on, by kind (``get``, ``set``, ``lease``, ...).
FAULTS: Counter[str] = Counter()
_LOG_INTERVAL_S = 10.0
_last_logged: dict[str, float] = {}


def record_fault(kind: str, exc: BaseException) -> None:
    """Count a fault the cache failed open on; log it at most once per interval."""
    FAULTS[kind] += 1
    now = time.monotonic()
    if now - _last_logged.get(kind, -_LOG_INTERVAL_S) >= _LOG_INTERVAL_S:
        _last_logged[kind] = now
        _log.warning(
            "cache fault (%s), failing open: %s: %s [%d so far]",
            kind,
            type(exc).__name__,
            exc,
            FAULTS[kind],
        )


def _cache_faults() -> tuple[type[BaseException], ...]:
    from ray.exceptions import GetTimeoutError, RayActorError

    # ValueError: Ray's error for a named actor that does not exist (yet).
    return (OmnicacheError, RayActorError, GetTimeoutError, TimeoutError, ValueError)


def _portable(exc: Exception) -> Exception:
    """Return ``exc`` if Ray can send it to the waiters, else a RuntimeError naming it."""
    from ray import cloudpickle

    try:
        cloudpickle.dumps(exc)
    except Exception:
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    return exc


class _LeaseKeeper:
    """One daemon thread per process that renews the leases this process leads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[tuple[int, str, int], tuple[Any, float, float]] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, coordinator: Any, key: str, token: int, lease_ttl: float) -> None:
        with self._lock:
            due = time.monotonic() + lease_ttl / 3
            self._leases[(id(coordinator), key, token)] = (coordinator, lease_ttl, due)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="omnicache-lease-keeper", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def remove(self, coordinator: Any, key: str, token: int) -> None:
        with self._lock:
            self._leases.pop((id(coordinator), key, token), None)

    def _due(self) -> tuple[dict[tuple[int, float], list[tuple[str, int]]], dict[int, Any], float]:
        now = time.monotonic()
        groups: dict[tuple[int, float], list[tuple[str, int]]] = {}
        handles: dict[int, Any] = {}
        next_due = now + 1.0
        with self._lock:
            for (cid, key, token), (coord, ttl, due) in list(self._leases.items()):
                if due <= now:
                    groups.setdefault((cid, ttl), []).append((key, token))
                    handles[cid] = coord
                    due = now + ttl / 3
                    self._leases[(cid, key, token)] = (coord, ttl, due)
                next_due = min(next_due, due)
        return groups, handles, next_due

    def _run(self) -> None:
        import ray

        while True:
            groups, handles, next_due = self._due()
            for (cid, ttl), leases in groups.items():
                try:
                    ray.get(handles[cid].renew.remote(leases, ttl), timeout=ttl)
                except Exception as exc:  # the lease may pass on; the compute goes on
                    record_fault("lease_renew", exc)
            self._wake.wait(max(0.01, next_due - time.monotonic()))
            self._wake.clear()


_KEEPER = _LeaseKeeper()


def _decode_or_miss(client: CacheCluster, data: bytes | None) -> Any:
    if data is None:
        return MISS
    try:
        return client._ser.loads(data)
    except CodecError as exc:
        record_fault("decode", exc)
        return MISS


def _outcome_value(client: CacheCluster, kind: str, payload: Any, key: Any, wait: float) -> Any:
    """Turn a non-``lead`` lease outcome into a value, or raise; MISS means compute."""
    if kind == "done":
        return _decode_or_miss(client, payload)
    if kind == "error":
        raise payload
    if kind == "quota":
        raise QuotaExceeded(client.tenant, payload)
    if kind == "timeout":
        raise Timeout(f"waited {wait}s for the caller computing {key!r}")
    return MISS  # "retry": the leader's value could not be shared


def _encode_or_none(client: CacheCluster, value: Any) -> bytes | None:
    try:
        return client.encode(value)
    except (TypeError, ValueTooLarge) as exc:
        _log.warning("get_or_compute: result not cached (%s); waiters compute their own", exc)
        return None


def _lease_timeout(client: CacheCluster, wait_timeout: float) -> float:
    return wait_timeout + client.options.call_timeout_s


def _finish_args(
    skey: str, token: int, outcome: tuple[str, Any], ttl: float | None, tags: tuple[str, ...]
) -> tuple[str, tuple[Any, ...]]:
    """The call that ends a shard-hosted flight."""
    kind, payload = outcome
    if kind == "done":
        return "set_and_release", ((skey, payload, ttl, tags), token)
    return "release", (skey, token, kind, payload)


def get_or_compute(
    client: CacheCluster,
    key: Any,
    fn: Callable[[], T],
    *,
    ttl: float | None,
    tags: tuple[str, ...],
    layer: str,
    wait_timeout: float,
    lease_ttl: float,
) -> T:
    """See `CacheCluster.get_or_compute`."""
    import ray

    skey = client.key(key, layer)
    faults = _cache_faults()
    if _lookup_first(client):  # a hit costs a direct get (or nothing), not a lease call
        try:
            data = client._lookup_raw(skey, layer)
        except faults as exc:
            record_fault("get", exc)
            return _store(client, skey, fn(), ttl, tags)
        if data is not None and (value := _decode_or_miss(client, data)) is not MISS:
            return value  # type: ignore[no-any-return]
    timeout = _lease_timeout(client, wait_timeout)
    try:
        args = (skey, lease_ttl, wait_timeout)
        (kind, payload), site = client._state.call_owner(
            skey, "get_or_lease", args, client.options, timeout
        )
        on_shard = kind != "coordinate"
        if not on_shard:
            site = client._state.coordinator_handle()
            ref = site.acquire.remote(skey, client.tenant, lease_ttl, wait_timeout)
            kind, payload = ray.get(ref, timeout=timeout)
    except faults as exc:
        record_fault("lease", exc)
        return _store(client, skey, fn(), ttl, tags)
    if kind == "hit":
        value = _decode_or_miss(client, payload)
        return _store(client, skey, fn(), ttl, tags) if value is MISS else value
    if kind != "lead":
        value = _outcome_value(client, kind, payload, key, wait_timeout)
        return fn() if value is MISS else value
    token = payload
    _KEEPER.add(site, skey, token, lease_ttl)
    outcome: tuple[str, Any] = ("retry", None)
    try:
        if not on_shard:  # the coordinator cannot look: check the cache inside the flight
            value = _decode_or_miss(client, _guarded(client._raw_get, skey))
            if value is not MISS:
                return value  # type: ignore[no-any-return]
        try:
            value = fn()
        except Exception as exc:
            outcome = ("error", _portable(exc))
            raise
        data = _encode_or_none(client, value)
        if data is not None:
            outcome = ("done", data)
        return value
    finally:
        _KEEPER.remove(site, skey, token)
        _finish(client, site, on_shard, skey, token, outcome, ttl, tags)


def _lookup_first(client: CacheCluster) -> bool:
    """Whether a lookup is cheap enough to try before the lease call: over the direct
    port (tens of microseconds) or from the near-cache, not as one more Ray call."""
    opts = client.options
    return opts.fast_path or opts.near_cache is not None


def _guarded(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except _cache_faults() as exc:
        record_fault("get", exc)
        return None


def _finish(
    client: CacheCluster,
    site: Any,
    on_shard: bool,
    skey: str,
    token: int,
    outcome: tuple[str, Any],
    ttl: float | None,
    tags: tuple[str, ...],
) -> None:
    import ray

    timeout = client.options.call_timeout_s
    try:
        if on_shard:
            method, args = _finish_args(skey, token, outcome, ttl, tags)
            reply = ray.get(getattr(site, method).remote(*args), timeout=timeout)
            if method == "set_and_release" and reply[1]:  # moved while computing
                client._raw_set(skey, outcome[1], ttl, tags)
            return
        if outcome[0] == "done":
            _store_raw(client, skey, outcome[1], ttl, tags)
        ray.get(site.release.remote(skey, token, *outcome), timeout=timeout)
    except _cache_faults() as exc:
        record_fault("lease_release", exc)


def _store(
    client: CacheCluster, skey: str, value: T, ttl: float | None, tags: tuple[str, ...]
) -> T:
    data = _encode_or_none(client, value)
    if data is not None:
        _store_raw(client, skey, data, ttl, tags)
    return value


def _store_raw(
    client: CacheCluster, skey: str, data: bytes, ttl: float | None, tags: tuple[str, ...]
) -> None:
    try:
        client._raw_set(skey, data, ttl, tags)
    except _cache_faults() as exc:
        record_fault("set", exc)


async def _call(fn: Callable[[], T | Awaitable[T]]) -> T:
    result = fn()
    if inspect.isawaitable(result):
        return await result  # type: ignore[no-any-return]
    return result


async def aget_or_compute(
    client: CacheCluster,
    key: Any,
    fn: Callable[[], T | Awaitable[T]],
    *,
    ttl: float | None,
    tags: tuple[str, ...],
    layer: str,
    wait_timeout: float,
    lease_ttl: float,
) -> T:
    """See `CacheCluster.aget_or_compute`."""
    skey = client.key(key, layer)
    faults = _cache_faults()
    if _lookup_first(client):  # see `get_or_compute`
        try:
            data = await client._alookup_raw(skey, layer)
        except faults as exc:
            record_fault("get", exc)
            return await _astore(client, skey, await _call(fn), ttl, tags)
        if data is not None and (value := _decode_or_miss(client, data)) is not MISS:
            return value  # type: ignore[no-any-return]
    timeout = _lease_timeout(client, wait_timeout)
    try:
        args = (skey, lease_ttl, wait_timeout)
        (kind, payload), site = await client._state.acall_owner(
            skey, "get_or_lease", args, client.options, timeout
        )
        on_shard = kind != "coordinate"
        if not on_shard:
            site = client._state.coordinator or await asyncio.to_thread(
                client._state.coordinator_handle
            )
            ref = site.acquire.remote(skey, client.tenant, lease_ttl, wait_timeout)
            kind, payload = await asyncio.wait_for(ref, timeout)
    except faults as exc:
        record_fault("lease", exc)
        return await _astore(client, skey, await _call(fn), ttl, tags)
    if kind == "hit":
        value = _decode_or_miss(client, payload)
        if value is MISS:
            return await _astore(client, skey, await _call(fn), ttl, tags)
        return value  # type: ignore[no-any-return]
    if kind != "lead":
        value = _outcome_value(client, kind, payload, key, wait_timeout)
        return await _call(fn) if value is MISS else value
    token = payload
    _KEEPER.add(site, skey, token, lease_ttl)
    outcome: tuple[str, Any] = ("retry", None)
    try:
        if not on_shard:
            try:
                data = await client._araw_get(skey)
            except faults as exc:
                record_fault("get", exc)
                data = None
            value = _decode_or_miss(client, data)
            if value is not MISS:
                return value  # type: ignore[no-any-return]
        try:
            value = await _call(fn)
        except Exception as exc:
            outcome = ("error", _portable(exc))
            raise
        data = _encode_or_none(client, value)
        if data is not None:
            outcome = ("done", data)
        return value
    finally:
        _KEEPER.remove(site, skey, token)
        await _afinish(client, site, on_shard, skey, token, outcome, ttl, tags)


async def _afinish(
    client: CacheCluster,
    site: Any,
    on_shard: bool,
    skey: str,
    token: int,
    outcome: tuple[str, Any],
    ttl: float | None,
    tags: tuple[str, ...],
) -> None:
    timeout = client.options.call_timeout_s
    try:
        if on_shard:
            method, args = _finish_args(skey, token, outcome, ttl, tags)
            reply = await asyncio.wait_for(getattr(site, method).remote(*args), timeout)
            if method == "set_and_release" and reply[1]:  # moved while computing
                await client._araw_set(skey, outcome[1], ttl, tags)
            return
        if outcome[0] == "done":
            await _astore_raw(client, skey, outcome[1], ttl, tags)
        await asyncio.wait_for(site.release.remote(skey, token, *outcome), timeout)
    except _cache_faults() as exc:
        record_fault("lease_release", exc)


async def _astore(
    client: CacheCluster, skey: str, value: T, ttl: float | None, tags: tuple[str, ...]
) -> T:
    data = _encode_or_none(client, value)
    if data is not None:
        await _astore_raw(client, skey, data, ttl, tags)
    return value


async def _astore_raw(
    client: CacheCluster, skey: str, data: bytes, ttl: float | None, tags: tuple[str, ...]
) -> None:
    try:
        await client._araw_set(skey, data, ttl, tags)
    except _cache_faults() as exc:
        record_fault("set", exc)
