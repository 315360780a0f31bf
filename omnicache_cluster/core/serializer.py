"""The seed's serializer names: `JsonSerializer` and `PickleSerializer`.

In the seed a layer took ``serializer=`` and stored ``serializer.dumps(value)``; the
default was pickle, so anything a cache read back from shared storage could run code.
Here the codec of the backend encodes every value (msgpack; dataclasses and pydantic
models as plain data plus an allow-listed type name), so a layer needs no serializer.
The two names remain, as `omnicache_cluster.core.codec.Serializer` instances:

* ``JsonSerializer()`` writes JSON envelopes (readable from any language; a value
  JSON cannot hold raises ``TypeError`` where it is stored);
* ``PickleSerializer(secret_key=...)`` writes HMAC-signed pickle and reads only
  blobs whose signature verifies. Without a key it refuses to exist.

Pass either to a backend (``InMemoryBackend(serializer=...)``, ``DiskBackend``,
``RedisBackend``) or to a layer (``ResponseCache(manager, serializer=...)``, which
then checks values against it; see `CacheLayer`).
"""

from __future__ import annotations

from typing import Any

from omnicache_cluster.core.codec import JsonCodec, PickleCodec, Serializer

__all__ = ["JsonSerializer", "PickleSerializer", "Serializer"]


def JsonSerializer(*, compress_threshold: int | None = 1024) -> Serializer:
    """Return a `Serializer` that writes JSON envelopes.

    Example:
        >>> s = JsonSerializer()
        >>> s.loads(s.dumps({"a": [1, 2]}))
        {'a': [1, 2]}
    """
    return Serializer(JsonCodec(), compress_threshold=compress_threshold)


def PickleSerializer(
    secret_key: bytes | None = None, *, compress_threshold: int | None = 1024, **kwargs: Any
) -> Serializer:
    """Return a `Serializer` that writes HMAC-signed pickle (opt-in, signed only).

    Args:
        secret_key: at least 16 bytes, the same in every process that reads or
            writes the cache.

    Raises:
        ValueError: no ``secret_key``, or a short one: unsigned pickle read back
            from shared storage runs whatever code the bytes name.
    """
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")
    if secret_key is None:
        raise ValueError(
            "PickleSerializer() without secret_key= is refused: unsigned pickle read from "
            "shared storage runs code. Use the default codec (dicts, lists, numpy, "
            "dataclasses and pydantic models round-trip without pickle), JsonSerializer(), "
            "or PickleSerializer(secret_key=<16+ bytes shared by every process>)"
        )
    return Serializer(PickleCodec(secret_key), compress_threshold=compress_threshold)
