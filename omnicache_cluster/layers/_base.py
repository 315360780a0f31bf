"""What every cache layer shares: the backend seam, per-request policy, fail-open I/O.

A layer turns its inputs (model + messages, text, query...) into one canonical key
object, hashes it once into a `CacheKey` of its layer, and reads, writes or
single-flights it through a `LayerBackend`: a `CacheCluster`, an `InMemoryBackend`,
or the backend of a `CacheManager`. Each I/O helper exists as a sync and an async
twin; both go through the same pure steps here, so the policy (which ttl, which tags,
skip or not) is decided once.

Fail-open: a cache fault (a shard or the coordinator unreachable, a timeout) never
breaks the call in front of which the cache sits. A read fault is a miss, a write
fault is skipped, and both are counted and logged by `record_fault`. A value that
cannot be encoded is not a cache fault but a mistake in the caller's code: storing one
raises ``TypeError`` naming its type.

The miss value: a layer built over a `CacheManager` (the seed's way) returns ``None``
on a miss, as the seed did and as `CacheManager.get` does; a layer built over a
backend or a `CacheCluster` returns `MISS`, so a cached ``None`` is a hit. Either
way, ``default=`` on a call wins (``default=MISS`` over a manager tells a miss from a
cached ``None``). A layer over a manager also takes the manager's ttls.
"""

from __future__ import annotations

import copy
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Self, TypeVar

from omnicache_cluster._flight import record_fault
from omnicache_cluster.core.codec import check_encodable
from omnicache_cluster.core.keys import CacheKey, CacheKeyBuilder, validate_part
from omnicache_cluster.core.sentinel import MISS, Sentinel
from omnicache_cluster.errors import OmnicacheError, ValueTooLarge
from omnicache_cluster.layers._protocol import LayerBackend
from omnicache_cluster.policies import DEFAULT_REQUEST, RequestConfig, TTLPolicy, _tag_list

__all__ = [
    "LAYER_DEFAULT",
    "CacheLayer",
    "LayerBackend",
    "LayerStats",
    "config_of",
    "merged",
    "with_overrides",
]

T = TypeVar("T")

#: The ``default=`` of layer reads: the layer's miss value (``None`` over a
#: `CacheManager`, `MISS` otherwise).
LAYER_DEFAULT: Any = Sentinel("LAYER_DEFAULT")


def _faults() -> tuple[type[BaseException], ...]:
    """The exceptions a layer fails open on (Ray's only if Ray is in use here)."""
    faults: tuple[type[BaseException], ...] = (OmnicacheError, ConnectionError, TimeoutError)
    if "ray" in sys.modules:
        from ray.exceptions import RayError

        # ValueError: Ray's answer for a named actor that is gone (cluster shut down).
        faults += (RayError, ValueError)
    return faults


class LayerStats:
    """What one layer object did, in this process: lookups, hits, misses, upstream
    calls made (``computes``), stores and faults. Thread-safe."""

    FIELDS: ClassVar[tuple[str, ...]] = ("lookups", "hits", "misses", "computes", "stores")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)

    def add(self, **counts: int) -> None:
        """Add to the named counters."""
        with self._lock:
            for name, n in counts.items():
                self._counts[name] += n

    def snapshot(self) -> dict[str, Any]:
        """Return the counters plus ``hit_rate`` and ``calls_avoided``."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        out["hit_rate"] = out["hits"] / out["lookups"] if out["lookups"] else 0.0
        out["calls_avoided"] = out["lookups"] - out["computes"] if out["lookups"] else 0
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"counts": self.snapshot()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A layer sent to another process starts counting afresh there.
        self.__init__()  # type: ignore[misc]


def _resolve(backend: Any) -> tuple[LayerBackend, Any]:
    """Return ``(backend view, the manager or None)`` for a backend or a manager."""
    from omnicache_cluster.manager import CacheManager

    if isinstance(backend, CacheManager):
        return backend.backend, backend  # type: ignore[return-value]
    if isinstance(backend, LayerBackend):
        return backend, None
    missing = [
        n for n in ("get_many", "get_or_compute", "aget_or_compute") if not hasattr(backend, n)
    ]
    raise TypeError(
        f"backend must be a CacheCluster, an InMemoryBackend or a CacheManager over one; "
        f"{type(backend).__qualname__} lacks {', '.join(missing) or 'part of LayerBackend'}"
    )


class CacheLayer:
    """Base of the cache layers: a backend view, a layer name, a `TTLPolicy`.

    Args:
        backend: a `CacheCluster`, an `InMemoryBackend`, or a `CacheManager`.
        serializer: the seed's per-layer serializer (e.g. ``JsonSerializer()``):
            every value this layer stores must encode with it, or ``TypeError`` is
            raised where it is stored; the backend's codec still stores it.
        stampede_shield: the seed's `StampedeShield`; accepted and not needed:
            ``get_or_*`` calls are single-flight already, cluster-wide.
        ttl_policy: ttls per layer; when omitted, the manager's (over a
            `CacheManager`) or `TTLPolicy.from_env()`.
        layer: the key's layer part; the class default (``response``...) if omitted.
    """

    layer: ClassVar[str] = "default"

    def __init__(
        self,
        backend: Any,
        serializer: Any = None,
        stampede_shield: Any = None,
        *,
        ttl_policy: TTLPolicy | None = None,
        layer: str | None = None,
    ) -> None:
        if serializer is not None and not callable(getattr(serializer, "dumps", None)):
            raise TypeError(f"serializer must have dumps(), got {serializer!r}")
        if stampede_shield is not None:
            from omnicache_cluster.core.stampede import StampedeShield

            if not isinstance(stampede_shield, StampedeShield):
                raise TypeError(
                    f"stampede_shield must be a StampedeShield, got {stampede_shield!r}"
                )
        self._check_value: Callable[[Any], Any] = (
            check_encodable if serializer is None else serializer.dumps
        )
        self._backend, manager = _resolve(backend)
        self._metrics = None if manager is None else manager.metrics
        self._layer = validate_part("layer", layer or type(self).layer)
        if ttl_policy is None:
            ttl_policy = manager.ttl_policy if manager is not None else TTLPolicy.from_env()
        self._ttl_policy = ttl_policy
        #: What a read returns on a miss when the call gives no ``default``.
        self.miss_value: Any = None if manager is not None else MISS
        self._stats = LayerStats()

    # -- views ------------------------------------------------------------------------

    @property
    def backend(self) -> LayerBackend:
        """The backend view this layer reads and writes."""
        return self._backend

    @property
    def layer_name(self) -> str:
        """The layer part of this layer's keys."""
        return self._layer

    @property
    def ttl_policy(self) -> TTLPolicy:
        """The ttl policy of this layer's writes."""
        return self._ttl_policy

    def stats(self) -> dict[str, Any]:
        """Return what this layer object did in this process (see `LayerStats`)."""
        return self._stats.snapshot()

    def for_tenant(self, tenant: str) -> Self:
        """Return this layer over ``tenant``'s view of the backend (own counters)."""
        view = copy.copy(self)
        view._backend = self._backend.for_tenant(tenant)
        view._metrics = None
        view._stats = LayerStats()
        return view

    def for_key_builder(self, key_builder: CacheKeyBuilder) -> Self:
        """Return this layer under ``key_builder``'s key namespace and tenant (the
        seed's way of scoping a layer)."""
        view = self.for_tenant(key_builder.tenant)
        if key_builder.namespace != getattr(view._backend, "key_namespace", None):
            view._backend = view._backend.with_key_namespace(key_builder.namespace)  # type: ignore[attr-defined]
        return view

    # -- the pure steps ---------------------------------------------------------------

    def _or(self, default: Any) -> Any:
        """Return the value a read gives on a miss for the call's ``default``."""
        return self.miss_value if default is LAYER_DEFAULT else default

    def _key(self, key_obj: Any) -> CacheKey:
        """Hash ``key_obj`` once; raises ``TypeError`` for inputs with no canonical form."""
        return CacheKey.parse(self._backend.key(key_obj, self._layer))

    def _write_args(self, config: RequestConfig, tags: Iterable[str]) -> dict[str, Any]:
        return {
            "ttl": self._ttl_policy.ttl_for(self._layer, config.ttl),
            "tags": [*tags, *config.tags],
            "layer": self._layer,
        }

    def _count(self, hits: int = 0, misses: int = 0, computes: int = 0, stores: int = 0) -> None:
        self._stats.add(
            lookups=hits + misses, hits=hits, misses=misses, computes=computes, stores=stores
        )
        if self._metrics is not None:
            self._metrics.record(hits=hits, misses=misses, sets=stores)

    def _counted(self, values: Sequence[Any]) -> list[Any]:
        misses = sum(1 for v in values if v is MISS)
        self._count(hits=len(values) - misses, misses=misses)
        return list(values)

    # -- sync I/O, fail-open -------------------------------------------------------------

    def _lookup_many(
        self, keys: Sequence[CacheKey], config: RequestConfig, count: bool = True
    ) -> list[Any]:
        if not config.reads or not keys:
            return [MISS] * len(keys)
        try:
            values = self._backend.get_many(keys, MISS, layer=self._layer)
        except _faults() as exc:
            record_fault("get", exc)
            values = [MISS] * len(keys)
        return self._counted(values) if count else list(values)

    def _lookup(self, key: CacheKey, config: RequestConfig, count: bool = True) -> Any:
        return self._lookup_many([key], config, count)[0]

    def _store_many(
        self, items: Sequence[tuple[CacheKey, Any]], config: RequestConfig, tags: Iterable[str]
    ) -> None:
        if not config.writes or not items:
            return
        if self._check_value is not check_encodable:  # a seed serializer= to satisfy
            for _, value in items:
                self._check_value(value)
        try:  # the backend's encoder raises TypeError for an unencodable value: loudly
            self._backend.set_many(items, **self._write_args(config, tags))
        except (ValueTooLarge, *_faults()) as exc:
            record_fault("set", exc)
            return
        self._count(stores=len(items))

    def _store(self, key: CacheKey, value: Any, config: RequestConfig, tags: Iterable[str]) -> None:
        self._store_many([(key, value)], config, tags)

    def _cached(
        self, key: CacheKey, fn: Callable[[], T], config: RequestConfig, tags: Iterable[str]
    ) -> T:
        """Return the cached value of ``key`` or ``fn()``, single-flighted when allowed."""
        if not config.writes:  # skip_cache or no_store: nothing to share with others
            value = self._lookup(key, config)
            if value is not MISS:
                return value  # type: ignore[no-any-return]
            self._count(computes=1)
            return fn()
        ran = []

        def compute() -> T:
            ran.append(True)
            value = fn()
            self._check_value(value)  # raised to this caller and every waiter
            return value

        value = self._backend.get_or_compute(key, compute, **self._write_args(config, tags))
        self._count_flight(bool(ran))
        return value  # type: ignore[no-any-return]

    def _count_flight(self, ran: bool) -> None:
        self._count(
            hits=0 if ran else 1, misses=1 if ran else 0, computes=int(ran), stores=int(ran)
        )

    # -- async I/O, fail-open ------------------------------------------------------------

    async def _alookup_many(
        self, keys: Sequence[CacheKey], config: RequestConfig, count: bool = True
    ) -> list[Any]:
        if not config.reads or not keys:
            return [MISS] * len(keys)
        try:
            values = await self._backend.aget_many(keys, MISS, layer=self._layer)
        except _faults() as exc:
            record_fault("get", exc)
            values = [MISS] * len(keys)
        return self._counted(values) if count else list(values)

    async def _alookup(self, key: CacheKey, config: RequestConfig, count: bool = True) -> Any:
        return (await self._alookup_many([key], config, count))[0]

    async def _astore_many(
        self, items: Sequence[tuple[CacheKey, Any]], config: RequestConfig, tags: Iterable[str]
    ) -> None:
        if not config.writes or not items:
            return
        if self._check_value is not check_encodable:
            for _, value in items:
                self._check_value(value)
        try:
            await self._backend.aset_many(items, **self._write_args(config, tags))
        except (ValueTooLarge, *_faults()) as exc:
            record_fault("set", exc)
            return
        self._count(stores=len(items))

    async def _astore(
        self, key: CacheKey, value: Any, config: RequestConfig, tags: Iterable[str]
    ) -> None:
        await self._astore_many([(key, value)], config, tags)

    async def _acached(
        self,
        key: CacheKey,
        fn: Callable[[], T | Awaitable[T]],
        config: RequestConfig,
        tags: Iterable[str],
    ) -> T:
        """Async `_cached`; ``fn`` may return a value or an awaitable."""
        if not config.writes:
            value = await self._alookup(key, config)
            if value is not MISS:
                return value  # type: ignore[no-any-return]
            self._count(computes=1)
            return await _maybe_await(fn())
        ran = []

        async def compute() -> T:
            ran.append(True)
            value = await _maybe_await(fn())
            self._check_value(value)
            return value

        value = await self._backend.aget_or_compute(key, compute, **self._write_args(config, tags))
        self._count_flight(bool(ran))
        return value  # type: ignore[no-any-return]

    # -- batch access by ready keys (the warmer's path) ----------------------------------

    def get_keys(
        self,
        keys: Sequence[CacheKey],
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> list[Any]:
        """Return the values of ready keys (from ``key_for``) in one batch, fail-open."""
        values = self._lookup_many(list(keys), config_of(config))
        return [self._or(default) if v is MISS else v for v in values]

    def set_keys(
        self,
        items: Sequence[tuple[CacheKey, Any]],
        *,
        tags: Iterable[str] = (),
        config: RequestConfig | None = None,
    ) -> None:
        """Store values under ready keys in one batch (one call per shard).

        Unlike the other writes this one raises, so bulk loaders can report rows.

        Raises:
            TypeError: a value cannot be encoded (nothing is stored).
            ValueTooLarge: a value is over the size limit.
            OmnicacheError: the cluster could not store the batch.
        """
        config = config_of(config)
        if config.writes and items:
            self._backend.set_many(list(items), **self._write_args(config, tags))
            self._count(stores=len(items))

    async def aget_keys(
        self,
        keys: Sequence[CacheKey],
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> list[Any]:
        """Async `get_keys`."""
        values = await self._alookup_many(list(keys), config_of(config))
        return [self._or(default) if v is MISS else v for v in values]

    async def aset_keys(
        self,
        items: Sequence[tuple[CacheKey, Any]],
        *,
        tags: Iterable[str] = (),
        config: RequestConfig | None = None,
    ) -> None:
        """Async `set_keys`."""
        config = config_of(config)
        if config.writes and items:
            await self._backend.aset_many(list(items), **self._write_args(config, tags))
            self._count(stores=len(items))

    # -- the generic calls of the keyed layers (response, retrieval, context) ---------------

    def _get_value(self, key_obj: Any, default: Any, config: RequestConfig | None) -> Any:
        value = self._lookup(self._key(key_obj), config_of(config))
        return self._or(default) if value is MISS else value

    async def _aget_value(self, key_obj: Any, default: Any, config: RequestConfig | None) -> Any:
        value = await self._alookup(self._key(key_obj), config_of(config))
        return self._or(default) if value is MISS else value

    def _set_value(
        self, key_obj: Any, value: Any, config: RequestConfig, tags: Iterable[str]
    ) -> None:
        self._store(self._key(key_obj), value, config, tags)

    async def _aset_value(
        self, key_obj: Any, value: Any, config: RequestConfig, tags: Iterable[str]
    ) -> None:
        await self._astore(self._key(key_obj), value, config, tags)

    # -- invalidation ----------------------------------------------------------------------

    def _invalidate(self, tag: str) -> int:
        return int(self._backend.invalidate(tag))

    async def _ainvalidate(self, tag: str) -> int:
        return int(await self._backend.ainvalidate(tag))


async def _maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value  # type: ignore[no-any-return]
    return value


def config_of(config: RequestConfig | None) -> RequestConfig:
    """Return ``config``, or the default config for ``None``.

    Raises:
        TypeError: ``config`` is not a `RequestConfig`.
    """
    if config is None:
        return DEFAULT_REQUEST
    if not isinstance(config, RequestConfig):
        raise TypeError(f"config must be a RequestConfig, got {type(config).__qualname__}")
    return config


def with_overrides(
    config: RequestConfig | None, ttl: float | None, tags: Iterable[str] | None
) -> RequestConfig:
    """Return ``config`` with the seed-style ``ttl=`` and ``tags=`` arguments folded in."""
    base = config_of(config)
    if ttl is None and not tags:
        return base
    return replace(
        base, ttl=base.ttl if ttl is None else ttl, tags=(*base.tags, *_tag_list(tags or ()))
    )


def merged(params: Mapping[str, Any] | None, **named: Any) -> dict[str, Any]:
    """Return ``params`` with the ``named`` values that are not ``None`` added.

    Raises:
        ValueError: a name is given both ways, with different values.
    """
    out = dict(params or {})
    for name, value in named.items():
        if value is None:
            continue
        if name in out and out[name] != value:
            raise ValueError(f"{name} given twice, as an argument and in params, with other values")
        out[name] = value
    return out
