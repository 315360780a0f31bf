"""The seed's compressors: `Compressor`, `GzipCompressor`, `NoopCompressor`.

Every stored value is already lz4-compressed by the codec when that makes it smaller
(`omnicache_cluster.core.codec`); these exist for code written against the seed,
where ``CacheManager(compressor=GzipCompressor(level=6))`` compresses the ``bytes``
values a manager stores and decompresses them on read. That is what `CacheManager`
does with them here too.
"""

from __future__ import annotations

import gzip
from typing import Protocol, runtime_checkable

__all__ = ["Compressor", "GzipCompressor", "NoopCompressor"]

_GZIP_MAGIC = b"\x1f\x8b"


@runtime_checkable
class Compressor(Protocol):
    """Turns bytes into smaller bytes and back."""

    def compress(self, data: bytes) -> bytes:
        """Return ``data`` compressed."""
        ...

    def decompress(self, data: bytes) -> bytes:
        """Return the bytes `compress` was given."""
        ...


class NoopCompressor:
    """Stores bytes as they are (the seed's default)."""

    def compress(self, data: bytes) -> bytes:
        """Return ``data`` unchanged."""
        return data

    def decompress(self, data: bytes) -> bytes:
        """Return ``data`` unchanged."""
        return data


class GzipCompressor:
    """gzip at a chosen level.

    Args:
        level: 1 (fastest) to 9 (smallest).

    Raises:
        ValueError: ``level`` is not an int from 1 to 9.

    Example:
        >>> c = GzipCompressor(level=6)
        >>> c.decompress(c.compress(b"a" * 100)) == b"a" * 100
        True
    """

    def __init__(self, level: int = 6) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
            raise ValueError(f"level must be an int from 1 to 9, got {level!r}")
        self.level = level

    def compress(self, data: bytes) -> bytes:
        """Return ``data`` gzip-compressed."""
        return gzip.compress(data, compresslevel=self.level)

    def decompress(self, data: bytes) -> bytes:
        """Return ``data`` decompressed (bytes that are not gzip come back unchanged).

        Raises:
            ValueError: ``data`` starts like gzip but is corrupt.
        """
        if not data.startswith(_GZIP_MAGIC):
            return data
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"corrupt gzip data: {exc}") from None
