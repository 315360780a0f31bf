"""The seams: what a cache backend offers to `CacheManager` and the layers.

`CacheCluster` (the Ray cluster) and `InMemoryBackend` (one process) both satisfy
`CacheBackend`; code written against it runs on either. Keys are anything with a
canonical encoding, or a `CacheKey`; a miss returns ``default`` (`MISS` unless given),
so a cached ``None`` is a hit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["CacheBackend"]


@runtime_checkable
class CacheBackend(Protocol):
    """A tenant- and namespace-scoped cache with sync and async methods."""

    @property
    def tenant(self) -> str:
        """The tenant of this view's keys."""
        ...

    @property
    def key_namespace(self) -> str:
        """The namespace part of this view's keys."""
        ...

    def for_tenant(self, tenant: str) -> CacheBackend:
        """Return a view scoped to ``tenant``."""
        ...

    def with_key_namespace(self, key_namespace: str) -> CacheBackend:
        """Return a view under another key namespace."""
        ...

    def key(self, key: Any, layer: str = ...) -> str:
        """Return the stored key string of ``key`` in ``layer``."""
        ...

    def get(self, key: Any, default: Any = ..., *, layer: str = ...) -> Any:
        """Return the value of ``key`` or ``default``."""
        ...

    def get_many(self, keys: Iterable[Any], default: Any = ..., *, layer: str = ...) -> list[Any]:
        """Return the values of ``keys`` in order."""
        ...

    def set(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = ...,
    ) -> None:
        """Store ``value`` under ``key``."""
        ...

    def set_many(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = ...,
    ) -> None:
        """Store several values."""
        ...

    def delete(self, key: Any, *, layer: str = ...) -> bool:
        """Remove ``key``."""
        ...

    def exists(self, key: Any, *, layer: str = ...) -> bool:
        """Return whether ``key`` is present."""
        ...

    def invalidate(self, tag: str) -> int:
        """Remove every entry tagged ``tag``."""
        ...

    def clear(self, *, all_tenants: bool = False) -> int:
        """Remove this view's entries."""
        ...

    def stats(self) -> dict[str, Any]:
        """Return counters and levels."""
        ...

    async def aget(self, key: Any, default: Any = ..., *, layer: str = ...) -> Any:
        """Async `get`."""
        ...

    async def aset(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = ...,
    ) -> None:
        """Async `set`."""
        ...

    async def adelete(self, key: Any, *, layer: str = ...) -> bool:
        """Async `delete`."""
        ...

    async def aexists(self, key: Any, *, layer: str = ...) -> bool:
        """Async `exists`."""
        ...

    async def ainvalidate(self, tag: str) -> int:
        """Async `invalidate`."""
        ...
