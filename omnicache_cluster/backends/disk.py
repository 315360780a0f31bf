"""`DiskBackend`: an embedded, process-safe cache file that survives restarts.

`DiskStore` keeps records in one SQLite database (Python's own ``sqlite3``: no extra
dependency) in WAL mode, so several processes on one machine (the shards of a
single-node cluster, or workers sharing a `DiskBackend`) read and write the same file
safely; writers wait for each other up to ``busy_timeout_s``. Each row holds the
durable record bytes (`omnicache_cluster.backends.base.encode_record`) plus its
expiry, and a second table indexes tags. Expired rows are never returned and are
purged in small batches as writes go on.

Durability: with ``synchronous="normal"`` (the default) a committed write survives the
death of the writing process, which is what a preempted worker needs; ``"full"`` also
survives a power cut, at the cost of an fsync per write batch.

A file belongs to one machine: with a multi-node Ray cluster use Redis as L2.
`AsyncDiskStore` runs the blocking SQLite calls in a worker thread
(``asyncio.to_thread``), so an async caller's event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omnicache_cluster.backends._local_flight import LocalSingleFlight
from omnicache_cluster.backends._scoped import ScopedBackend
from omnicache_cluster.backends.base import Record, encode_record, parse_records
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.core.scope import DEFAULT_LAYER
from omnicache_cluster.errors import ConfigError, L2Unavailable

__all__ = ["DB_NAME", "AsyncDiskStore", "DiskBackend", "DiskStore"]

_log = logging.getLogger(__name__)

DB_NAME = "omnicache.sqlite3"
_CHUNK = 500  # SQLite's bound on host parameters is 999 in old builds
_PURGE_EVERY = 1024
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, record BLOB NOT NULL, expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_expiry ON entries(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tags (tag TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (tag, key))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_key ON tags(key);
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def _chunks(seq: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(seq), _CHUNK):
        yield seq[i : i + _CHUNK]


def _sql(template: str, n: int = 0) -> str:
    """Fill ``{marks}`` with ``n`` placeholders and ``{live}`` with the live-row test.

    Only these constants are formatted into SQL; every value is a bound parameter.
    """
    return template.format(marks=",".join("?" * n), live=_LIVE)


class DiskStore:
    """A `ByteStore` in a SQLite file (see the module docstring).

    Args:
        path: a directory (the database is ``omnicache.sqlite3`` in it, created with
            its parents) or the path of a ``.sqlite3`` / ``.db`` file.
        synchronous: ``"normal"`` (survives a process crash) or ``"full"`` (also a
            power cut).
        busy_timeout_s: how long a writer waits for another process's lock.
        clock: wall-clock seconds, injectable for tests.

    Raises:
        ConfigError: the path cannot be created or opened, or a bad option.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "normal",
        busy_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ConfigError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        p = Path(path).expanduser()
        self.path = p if p.suffix in (".sqlite3", ".db") else p / DB_NAME
        self._clock = clock
        self._lock = threading.Lock()
        self._writes = 0
        self.faults = FaultLog(f"disk store {self.path}", _log)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            with self._tx() as db:
                for statement in _split(_SCHEMA):
                    db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the disk store at {self.path}: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a lock of another process is waited for."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise L2Unavailable(f"disk store {self.path} is closed")
        return self._db

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the connection's lock; map SQLite errors to `L2Unavailable`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise L2Unavailable(f"disk store {self.path}: {exc}") from exc

    # -- ByteStore ----------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Return the live record of each key (``None``: absent, expired or corrupt)."""
        found: dict[str, bytes] = {}
        now = self._clock()
        with self._guard():
            db = self._conn()
            for part in _chunks(keys):
                sql = _sql(
                    "SELECT key, record FROM entries WHERE key IN ({marks}) AND {live}", len(part)
                )
                found.update(db.execute(sql, (*part, now)).fetchall())
        return parse_records([found.get(k) for k in keys], now, self.faults)

    def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Store each record in one transaction, replacing the old ones and their tags."""
        rows = [(k, encode_record(r), r.expires_at) for k, r in items]
        tag_rows = [(t, k) for k, r in items for t in r.tags]
        with self._guard(), self._tx() as db:
            for part in _chunks([k for k, _ in items]):
                db.execute(_sql("DELETE FROM tags WHERE key IN ({marks})", len(part)), part)
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", rows)
            db.executemany("INSERT OR IGNORE INTO tags VALUES (?, ?)", tag_rows)
            self._writes += len(rows)
            if self._writes >= _PURGE_EVERY:
                self._writes = 0
                self._purge(db)

    def _purge(self, db: sqlite3.Connection, limit: int = 2000) -> None:
        expired = [
            k
            for (k,) in db.execute(
                "SELECT key FROM entries WHERE expires_at <= ? LIMIT ?", (self._clock(), limit)
            )
        ]
        for part in _chunks(expired):
            db.execute(_sql("DELETE FROM entries WHERE key IN ({marks})", len(part)), part)
            db.execute(_sql("DELETE FROM tags WHERE key IN ({marks})", len(part)), part)

    def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Remove keys; return, per key, whether a live record was there."""
        live: set[str] = set()
        now = self._clock()
        with self._guard(), self._tx() as db:
            for part in _chunks(keys):
                n = len(part)
                sql = _sql("SELECT key FROM entries WHERE key IN ({marks}) AND {live}", n)
                live.update(k for (k,) in db.execute(sql, (*part, now)))
                db.execute(_sql("DELETE FROM entries WHERE key IN ({marks})", n), part)
                db.execute(_sql("DELETE FROM tags WHERE key IN ({marks})", n), part)
        return [k in live for k in keys]

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Return, per key, whether a readable live record is there."""
        return [r is not None for r in self.get_many(keys)]

    def tagged(self, tag: str) -> list[str]:
        """Return the keys of the live records carrying ``tag``."""
        sql = (
            "SELECT t.key FROM tags t JOIN entries e ON e.key = t.key WHERE t.tag = ? AND "
            "(e.expires_at IS NULL OR e.expires_at > ?)"
        )
        with self._guard():
            return [k for (k,) in self._conn().execute(sql, (tag, self._clock()))]

    def keys(self, prefix: str = "") -> list[str]:
        """Return the keys of the live records starting with ``prefix``."""
        now = self._clock()
        with self._guard():
            db = self._conn()
            if not prefix:
                rows = db.execute(_sql("SELECT key FROM entries WHERE {live}"), (now,))
            else:
                # A range, not LIKE: a key may hold LIKE's wildcards, and the range
                # uses the primary key's index.
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                rows = db.execute(
                    _sql("SELECT key FROM entries WHERE key >= ? AND key < ? AND {live}"),
                    (prefix, upper, now),
                )
            return [k for (k,) in rows]

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Return the number of rows (all tenants) and the corrupt records seen."""
        with self._guard():
            (rows,) = self._conn().execute("SELECT COUNT(*) FROM entries").fetchone()
        out: dict[str, Any] = {"corrupt": self.faults.by_kind.get("decode", 0)}
        if tenant is None:
            out["entries"] = int(rows)
        return out

    def close(self) -> None:
        """Close the database connection (the file stays)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class AsyncDiskStore:
    """The async twin of `DiskStore`: each call runs in a worker thread.

    Args:
        store: the `DiskStore` to use (its lock serialises the threads).
    """

    def __init__(self, store: DiskStore) -> None:
        self._s = store

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Async `DiskStore.get_many`."""
        return await asyncio.to_thread(self._s.get_many, keys)

    async def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Async `DiskStore.set_many`."""
        await asyncio.to_thread(self._s.set_many, items)

    async def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `DiskStore.delete_many`."""
        return await asyncio.to_thread(self._s.delete_many, keys)

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `DiskStore.exists_many`."""
        return await asyncio.to_thread(self._s.exists_many, keys)

    async def tagged(self, tag: str) -> list[str]:
        """Async `DiskStore.tagged`."""
        return await asyncio.to_thread(self._s.tagged, tag)

    async def keys(self, prefix: str = "") -> list[str]:
        """Async `DiskStore.keys`."""
        return await asyncio.to_thread(self._s.keys, prefix)

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """`DiskStore.stats` (corrupt records only: counting rows would block)."""
        return {"corrupt": self._s.faults.by_kind.get("decode", 0)}

    async def close(self) -> None:
        """Async `DiskStore.close`."""
        await asyncio.to_thread(self._s.close)


class DiskBackend(LocalSingleFlight, ScopedBackend):
    """A cache in a file on this machine that survives restarts (see module docstring).

    Args:
        path: a directory (or ``.sqlite3`` file) for the database.
        directory: the seed's name of ``path``.
        size_limit: the seed's byte bound (diskcache culled past it): refused with a
            `ConfigError` naming the alternatives, since this store has no size bound.
        namespace: the key namespace.
        serializer: the value serializer (msgpack + lz4 by default).
        max_value_bytes: the largest encoded value accepted.
        synchronous: ``"normal"`` or ``"full"`` (see `DiskStore`).
        clock: wall-clock seconds, injectable for tests.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     DiskBackend(d).set("q", {"a": 1}, tags=["t"])
        ...     DiskBackend(d).get("q")  # another instance, as after a restart
        {'a': 1}
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        directory: str | Path | None = None,
        size_limit: int | None = None,
        namespace: str = "omnicache",
        serializer: Serializer | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
        synchronous: str = "normal",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if path is not None and directory is not None:
            raise ConfigError("give path or directory (the seed's name), not both")
        if size_limit is not None:
            raise ConfigError(
                "DiskBackend(size_limit=) is not supported: the disk store is bounded by "
                "its entries' ttls (OMNICACHE_DEFAULT_TTL, TTLPolicy), not by size. For a "
                "size-bounded cache use InMemoryBackend(max_bytes=...) or Redis with "
                "maxmemory; drop size_limit to keep this one"
            )
        path = path if path is not None else directory
        if path is None:
            path = "/tmp/omnicache"  # noqa: S108 - the seed's documented default
        store = DiskStore(path, synchronous=synchronous, clock=clock)
        super().__init__(
            store,
            AsyncDiskStore(store),
            namespace=namespace,
            serializer=serializer,
            max_value_bytes=max_value_bytes,
            clock=clock,
        )

    def set(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        *,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store ``value`` under ``key`` (``ttl`` may be positional, as in the seed)."""
        self.set_many([(key, value)], ttl=ttl, tags=tags, layer=layer)
