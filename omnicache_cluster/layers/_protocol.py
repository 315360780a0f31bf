"""`LayerBackend`: what a cache layer needs from its backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

__all__ = ["LayerBackend"]


@runtime_checkable
class LayerBackend(Protocol):
    """What a layer needs from a backend (`CacheCluster` and `InMemoryBackend` have it)."""

    @property
    def tenant(self) -> str:
        """The tenant of this view's keys."""
        ...

    def key(self, key: Any, layer: str = ...) -> str:
        """Return the stored key string of ``key`` in ``layer``."""
        ...

    def for_tenant(self, tenant: str) -> Any:
        """Return a view scoped to ``tenant``."""
        ...

    def get(self, key: Any, default: Any = ..., *, layer: str = ...) -> Any:
        """Return the value of ``key`` or ``default``."""
        ...

    def get_many(self, keys: Iterable[Any], default: Any = ..., *, layer: str = ...) -> list[Any]:
        """Return the values of ``keys`` in order."""
        ...

    def set(
        self, key: Any, value: Any, *, ttl: Any = ..., tags: Any = ..., layer: str = ...
    ) -> None:
        """Store ``value`` under ``key``."""
        ...

    def set_many(self, items: Any, *, ttl: Any = ..., tags: Any = ..., layer: str = ...) -> None:
        """Store several values."""
        ...

    def delete(self, key: Any, *, layer: str = ...) -> bool:
        """Remove ``key``."""
        ...

    def get_or_compute(self, key: Any, fn: Callable[[], Any], **kwargs: Any) -> Any:
        """Return the cached value of ``key`` or compute it once (single-flight)."""
        ...

    def invalidate(self, tag: str) -> int:
        """Remove every entry tagged ``tag``."""
        ...

    async def aget(self, key: Any, default: Any = ..., *, layer: str = ...) -> Any:
        """Async `get`."""
        ...

    async def aget_many(
        self, keys: Iterable[Any], default: Any = ..., *, layer: str = ...
    ) -> list[Any]:
        """Async `get_many`."""
        ...

    async def aset(
        self, key: Any, value: Any, *, ttl: Any = ..., tags: Any = ..., layer: str = ...
    ) -> None:
        """Async `set`."""
        ...

    async def aset_many(
        self, items: Any, *, ttl: Any = ..., tags: Any = ..., layer: str = ...
    ) -> None:
        """Async `set_many`."""
        ...

    async def adelete(self, key: Any, *, layer: str = ...) -> bool:
        """Async `delete`."""
        ...

    async def aget_or_compute(self, key: Any, fn: Callable[[], Any], **kwargs: Any) -> Any:
        """Async `get_or_compute`."""
        ...

    async def ainvalidate(self, tag: str) -> int:
        """Async `invalidate`."""
        ...
