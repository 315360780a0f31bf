"""The byte-store seam under every backend, and the durable record format.

Two levels of API live in ``backends``:

* the user-facing `CacheBackend` (``omnicache_cluster.protocols``): keys are user keys,
  values are Python objects, a miss is `MISS`; `InMemoryBackend`, `DiskBackend`,
  `RedisBackend`, `TieredBackend` and `CacheCluster` all satisfy it;
* the `ByteStore` below (with its async twin `AsyncByteStore`): stored key strings
  (``namespace:tenant:layer:digest``) map to a `Record`, the encoded value envelope
  plus its absolute expiry, tags and tenant. Each user-facing backend is a thin scope
  and codec wrapper over one byte store, and a shard's L2 is a byte store too.

A durable store writes a record as ``b"OL" | version | msgpack([value, expires_at,
tags, tenant])``. `decode_record` parses it with msgpack only (never pickle), checks
every field's type and the value's envelope header, and raises `CodecError` on
anything else: a corrupt, truncated, foreign or newer-version record is a miss for
the reader, never a crash and never code execution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

import msgpack

from omnicache_cluster.core.codec import check_header
from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.errors import CodecError

__all__ = [
    "RECORD_MAGIC",
    "RECORD_VERSION",
    "AsyncByteStore",
    "ByteStore",
    "Record",
    "decode_record",
    "encode_record",
    "parse_records",
]

RECORD_MAGIC: Final = b"OL"
RECORD_VERSION: Final = 1
_RECORD_HEADER: Final = RECORD_MAGIC + bytes((RECORD_VERSION,))
# Bounds for the msgpack parser: a record is one value envelope and a few tags.
_MAX_TAGS: Final = 4096
_MAX_STR: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One stored entry: an encoded value envelope and what is known about it.

    Attributes:
        value: the value envelope (`omnicache_cluster.core.codec`), never decoded here.
        expires_at: absolute expiry in wall-clock seconds, or ``None`` for never.
        tags: scoped tags (``namespace:tenant:tag``).
        tenant: the tenant charged for the entry.
    """

    value: bytes
    expires_at: float | None = None
    tags: tuple[str, ...] = ()
    tenant: str = "default"

    def live(self, now: float) -> bool:
        """Return whether the record has not expired at wall time ``now``."""
        return self.expires_at is None or self.expires_at > now


def encode_record(record: Record) -> bytes:
    """Return the durable bytes of ``record``."""
    body = [record.value, record.expires_at, list(record.tags), record.tenant]
    return _RECORD_HEADER + msgpack.packb(body, use_bin_type=True)


def _refuse_ext(code: int, _data: bytes) -> Any:
    raise CodecError(f"msgpack extension type {code} in an L2 record")


def decode_record(data: bytes) -> Record:
    """Parse bytes made by `encode_record`, checking every field.

    Raises:
        CodecError: the bytes are not a record of this version, a field has the wrong
            type, or the value does not start with a valid envelope header.
    """
    if not isinstance(data, bytes) or data[:3] != _RECORD_HEADER:
        if isinstance(data, bytes) and data[:2] == RECORD_MAGIC and len(data) >= 3:
            raise CodecError(f"unsupported L2 record version {data[2]}")
        raise CodecError("not an omnicache L2 record (bad magic or truncated)")
    try:
        body = msgpack.unpackb(
            data[3:],
            raw=False,
            ext_hook=_refuse_ext,
            max_str_len=_MAX_STR,
            max_array_len=_MAX_TAGS,
            max_map_len=0,
        )
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CodecError(f"corrupt L2 record: {type(exc).__name__}: {exc}") from None
    if not isinstance(body, list) or len(body) != 4:
        raise CodecError("corrupt L2 record: not a 4-field array")
    value, expires_at, tags, tenant = body
    if not isinstance(value, bytes):
        raise CodecError("corrupt L2 record: value is not bytes")
    if expires_at is not None and (
        isinstance(expires_at, bool)
        or not isinstance(expires_at, int | float)
        or not math.isfinite(expires_at)
    ):
        raise CodecError("corrupt L2 record: bad expiry")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CodecError("corrupt L2 record: tags are not a list of str")
    if not isinstance(tenant, str) or not tenant:
        raise CodecError("corrupt L2 record: bad tenant")
    check_header(value)
    expiry = None if expires_at is None else float(expires_at)
    return Record(value, expiry, tuple(tags), tenant)


def parse_records(raw: Sequence[bytes | None], now: float, faults: FaultLog) -> list[Record | None]:
    """Decode raw durable bytes; expired, absent and corrupt ones become ``None``.

    Corrupt ones are counted in ``faults`` under ``"decode"`` (and logged sparingly).
    """
    out: list[Record | None] = []
    for data in raw:
        if data is None:
            out.append(None)
            continue
        try:
            record = decode_record(bytes(data))
        except CodecError as exc:
            faults.record("decode", exc)
            out.append(None)
            continue
        out.append(record if record.live(now) else None)
    return out


@runtime_checkable
class ByteStore(Protocol):
    """Stored key string → `Record`, the seam under every backend (blocking calls).

    Reads never return an expired record. Implementations are thread-safe.
    """

    def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Return the live record of each key, ``None`` where absent or unreadable."""
        ...

    def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Store each ``(key, record)``, replacing what was there."""
        ...

    def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Remove keys; return, per key, whether a live record was there."""
        ...

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Return, per key, whether a live record is there (recency unchanged)."""
        ...

    def tagged(self, tag: str) -> list[str]:
        """Return the keys of the live records carrying ``tag``."""
        ...

    def keys(self, prefix: str = "") -> list[str]:
        """Return the keys of the live records that start with ``prefix``."""
        ...

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Return the store's levels and fault counters (``tenant``'s where it can)."""
        ...

    def close(self) -> None:
        """Release connections and files; the data stays."""
        ...


@runtime_checkable
class AsyncByteStore(Protocol):
    """The async twin of `ByteStore`: the same methods as coroutines (``stats`` aside)."""

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Async `ByteStore.get_many`."""
        ...

    async def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Async `ByteStore.set_many`."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `ByteStore.delete_many`."""
        ...

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `ByteStore.exists_many`."""
        ...

    async def tagged(self, tag: str) -> list[str]:
        """Async `ByteStore.tagged`."""
        ...

    async def keys(self, prefix: str = "") -> list[str]:
        """Async `ByteStore.keys`."""
        ...

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """`ByteStore.stats` (no I/O, so not a coroutine)."""
        ...

    async def close(self) -> None:
        """Async `ByteStore.close`."""
        ...


def __getattr__(name: str) -> Any:
    # The seed's protocols lived here (``omnicache_ai.backends.base``); they are in
    # `omnicache_cluster.backends.custom` (which imports this module, hence lazily).
    if name in ("CacheBackend", "VectorBackend"):
        from omnicache_cluster.backends import custom

        return getattr(custom, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
