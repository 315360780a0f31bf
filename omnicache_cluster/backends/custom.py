"""The seed's backend protocols, and `CustomBackend`: any object with the seed's six
methods (``get, set, delete, exists, clear, close``) under the cluster's API.

The seed's `CacheBackend` protocol is structural: a class with those six methods is
a backend. `CacheManager` still takes one: it wraps it in a `CustomBackend`, which
gives it the key scoping (namespaces, tenants), the codec (values are stored as
encoded bytes, never pickled), the expiry, tags and single-flight of every other
backend. What the six methods cannot say is kept in this process: the tag index and
the list of keys written (for ``invalidate`` and ``clear``). Two processes sharing
one custom store therefore invalidate only the entries they wrote themselves; use
`RedisBackend` or the cluster to share tags.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from omnicache_cluster.backends._local_flight import LocalSingleFlight
from omnicache_cluster.backends._scoped import ScopedBackend
from omnicache_cluster.backends.base import Record, decode_record, encode_record
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.errors import CodecError

__all__ = [
    "AsyncCacheBackend",
    "CacheBackend",
    "CustomBackend",
    "SeedByteStore",
    "VectorBackend",
    "is_seed_backend",
]

_log = logging.getLogger(__name__)
_SIX = ("get", "set", "delete", "exists", "clear", "close")


@runtime_checkable
class CacheBackend(Protocol):
    """The seed's backend protocol: six methods, ``get`` returning ``None`` on a miss.

    Every backend of this package has them too (its ``get`` returns `MISS` on a miss:
    pass ``default=None`` for the seed's behaviour, or go through `CacheManager`).
    """

    def get(self, key: str) -> Any:
        """Return the value of ``key``, or ``None``."""
        ...

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds (``None``: no expiry)."""
        ...

    def delete(self, key: str) -> Any:
        """Remove ``key``."""
        ...

    def exists(self, key: str) -> bool:
        """Return whether ``key`` is present."""
        ...

    def clear(self) -> Any:
        """Remove every entry."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


@runtime_checkable
class AsyncCacheBackend(Protocol):
    """The seed's async backend protocol (`AsyncInMemoryBackend` has it)."""

    async def get(self, key: str) -> Any:
        """Async ``get``."""
        ...

    async def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        """Async ``set``."""
        ...

    async def delete(self, key: str) -> Any:
        """Async ``delete``."""
        ...

    async def exists(self, key: str) -> bool:
        """Async ``exists``."""
        ...

    async def clear(self) -> Any:
        """Async ``clear``."""
        ...

    async def close(self) -> None:
        """Async ``close``."""
        ...


@runtime_checkable
class VectorBackend(Protocol):
    """The seed's vector protocol (`FAISSBackend`, `ChromaBackend`, `QdrantBackend`)."""

    def add(self, key: str, vector: Any, metadata: dict[str, Any] | None = None) -> None:
        """Add (or replace) the vector of ``key``."""
        ...

    def search(self, vector: Any, top_k: int = 1) -> list[tuple[str, float]]:
        """Return up to ``top_k`` ``(key, cosine score)``, best first."""
        ...

    def delete(self, key: str) -> Any:
        """Remove the vector of ``key``."""
        ...

    def clear(self) -> None:
        """Remove every vector."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


def is_seed_backend(obj: Any) -> bool:
    """Return whether ``obj`` has the seed's six backend methods (sync ones)."""
    return all(callable(getattr(obj, name, None)) for name in _SIX) and not any(
        asyncio.iscoroutinefunction(getattr(obj, name)) for name in _SIX
    )


class SeedByteStore:
    """A `ByteStore` over an object with the seed's six methods.

    Records are stored as their durable bytes (`encode_record`), so anything the
    object returns is parsed as data and checked; what it cannot say (tags, the
    keys written) is indexed in this process.

    Args:
        backend: the six-method object.
        clock: wall-clock seconds, injectable for tests.
    """

    def __init__(self, backend: Any, clock: Callable[[], float] = time.time) -> None:
        if not is_seed_backend(backend):
            missing = [n for n in _SIX if not callable(getattr(backend, n, None))]
            raise TypeError(
                f"{type(backend).__qualname__} is not a backend: it needs the methods "
                f"get, set, delete, exists, clear and close (missing {', '.join(missing)}); "
                f"an async backend goes through AsyncInMemoryBackend's API, not CacheManager"
            )
        self._b = backend
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: set[str] = set()
        self._tags: dict[str, set[str]] = {}
        self.faults = FaultLog(f"custom backend {type(backend).__qualname__}", _log)

    def _read(self, key: str, now: float) -> Record | None:
        raw = self._b.get(key)
        if raw is None:
            return None
        try:
            record = decode_record(bytes(raw) if isinstance(raw, bytearray) else raw)
        except CodecError as exc:
            self.faults.record("decode", exc)
            return None
        return record if record.live(now) else None

    def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Return the live record of each key."""
        now = self._clock()
        return [self._read(k, now) for k in keys]

    def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Store each record (with its remaining ttl, in whole seconds) and index it."""
        now = self._clock()
        for key, record in items:
            ttl = None
            if record.expires_at is not None:
                ttl = max(1, math.ceil(record.expires_at - now))
            self._b.set(key, encode_record(record), ttl)
            with self._lock:
                self._keys.add(key)
                for tags in self._tags.values():
                    tags.discard(key)
                for tag in record.tags:
                    self._tags.setdefault(tag, set()).add(key)

    def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Remove keys; return, per key, whether a live record was there."""
        now = self._clock()
        out = []
        for key in keys:
            out.append(self._read(key, now) is not None)
            self._b.delete(key)
            with self._lock:
                self._keys.discard(key)
                for tags in self._tags.values():
                    tags.discard(key)
        return out

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Return, per key, whether a live record is there."""
        return [r is not None for r in self.get_many(keys)]

    def tagged(self, tag: str) -> list[str]:
        """Return the keys written here that carry ``tag``."""
        with self._lock:
            return sorted(self._tags.get(tag, ()))

    def keys(self, prefix: str = "") -> list[str]:
        """Return the keys written here that start with ``prefix``."""
        with self._lock:
            return sorted(k for k in self._keys if k.startswith(prefix))

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Return the keys written here and the unreadable records seen."""
        with self._lock:
            entries = len(self._keys)
        return {"entries": entries, "corrupt": self.faults.by_kind.get("decode", 0)}

    def close(self) -> None:
        """Close the wrapped backend."""
        self._b.close()


class _AsyncSeedByteStore:
    """The async twin of `SeedByteStore`: each call runs in a worker thread."""

    def __init__(self, store: SeedByteStore) -> None:
        self._s = store

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        return await asyncio.to_thread(self._s.get_many, keys)

    async def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        await asyncio.to_thread(self._s.set_many, items)

    async def delete_many(self, keys: Sequence[str]) -> list[bool]:
        return await asyncio.to_thread(self._s.delete_many, keys)

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        return await asyncio.to_thread(self._s.exists_many, keys)

    async def tagged(self, tag: str) -> list[str]:
        return self._s.tagged(tag)

    async def keys(self, prefix: str = "") -> list[str]:
        return self._s.keys(prefix)

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        return self._s.stats(tenant)

    async def close(self) -> None:
        await asyncio.to_thread(self._s.close)


class CustomBackend(LocalSingleFlight, ScopedBackend):
    """The cluster's backend API over an object with the seed's six methods.

    Args:
        backend: the six-method object (see the module docstring).
        namespace: the key namespace.
        serializer: the value serializer (msgpack + lz4 by default).
        max_value_bytes: the largest encoded value accepted.
        clock: wall-clock seconds, injectable for tests.

    Raises:
        TypeError: ``backend`` lacks one of the six methods (named).
    """

    def __init__(
        self,
        backend: Any,
        *,
        namespace: str = "omnicache",
        serializer: Serializer | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        store = SeedByteStore(backend, clock)
        super().__init__(
            store,
            _AsyncSeedByteStore(store),
            namespace=namespace,
            serializer=serializer,
            max_value_bytes=max_value_bytes,
            clock=clock,
        )
