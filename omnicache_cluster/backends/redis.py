"""`RedisBackend`: a cache shared by every process that reaches one Redis server.

`RedisStore` (redis-py) and its async twin `AsyncRedisStore` (``redis.asyncio``) keep
each record under ``{key_prefix}k:{key}`` as the durable record bytes
(`omnicache_cluster.backends.base.encode_record`, msgpack, never pickle), with the TTL
given to Redis as ``PX`` so Redis expires it too. Batches are one ``MGET`` or one
pipeline. A tag is a Redis set ``{key_prefix}t:{tag}`` of keys; it lives as long as its
longest-lived member (a small Lua script keeps its ``PTTL``), members whose record is
gone or re-tagged are filtered out, and dropped, when the tag is read.

Every Redis or socket error is raised as `L2Unavailable` (a `TransientError`). Sockets
have short timeouts and one retry, so a dead server fails a call in about the timeout,
not after redis-py's default ten retries. Redis Cluster is not supported (multi-key
commands span slots); use one Redis (with replicas) per cache cluster.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.backoff import NoBackoff

from omnicache_cluster.backends._local_flight import LocalSingleFlight
from omnicache_cluster.backends._scoped import ScopedBackend
from omnicache_cluster.backends.base import Record, encode_record, parse_records
from omnicache_cluster.config import redact_url
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.errors import ConfigError, L2Unavailable

__all__ = ["AsyncRedisStore", "RedisBackend", "RedisStore"]

_log = logging.getLogger(__name__)

_BATCH = 1000
# KEYS[1] = the tag's set; ARGV[1] = PX of the new members (0: no expiry), ARGV[2..]
# = the members. The set lives as long as its longest-lived member.
_TAG_SCRIPT = """
local existed = redis.call('EXISTS', KEYS[1])
local cur = redis.call('PTTL', KEYS[1])
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
local px = tonumber(ARGV[1])
if px == 0 then
  if cur >= 0 then redis.call('PERSIST', KEYS[1]) end
elseif existed == 0 or (cur >= 0 and cur < px) then
  redis.call('PEXPIRE', KEYS[1], px)
end
return 1
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _batches(seq: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), _BATCH):
        yield seq[i : i + _BATCH]


class _Layout:
    """Key naming and command batches, shared by the sync and the async store."""

    def __init__(self, key_prefix: str, clock: Callable[[], float]) -> None:
        if not isinstance(key_prefix, str):
            raise ConfigError(f"key_prefix must be a str, got {type(key_prefix).__qualname__}")
        self.entry = f"{key_prefix}k:"
        self.tag = f"{key_prefix}t:"
        self.clock = clock

    def match(self, prefix: str) -> str:
        return _glob_escape(self.entry + prefix) + "*"

    def queue_set(self, pipe: Any, items: Sequence[tuple[str, Record]]) -> None:
        now = self.clock()
        by_tag: dict[str, tuple[list[str], int]] = {}
        for key, record in items:
            rkey = self.entry + key
            if record.expires_at is None:
                px = 0
                pipe.set(rkey, encode_record(record))
            else:
                px = math.ceil((record.expires_at - now) * 1000)
                if px <= 0:  # already expired: a write of it is a delete
                    pipe.delete(rkey)
                    continue
                pipe.set(rkey, encode_record(record), px=px)
            for tag in record.tags:
                members, longest = by_tag.get(tag, ([], -1))
                members.append(key)
                # 0 (never expires) wins over any positive PX.
                by_tag[tag] = (members, 0 if 0 in (px, longest) else max(px, longest))
        for tag, (members, px) in by_tag.items():
            for part in _batches(members):
                pipe.eval(_TAG_SCRIPT, 1, self.tag + tag, px, *part)

    def queue_delete(
        self, pipe: Any, keys: Sequence[str], records: Sequence[Record | None]
    ) -> None:
        for key in keys:
            pipe.delete(self.entry + key)
        tags: dict[str, list[str]] = {}
        for key, record in zip(keys, records, strict=True):
            for tag in record.tags if record is not None else ():
                tags.setdefault(tag, []).append(key)
        for tag, members in tags.items():
            pipe.srem(self.tag + tag, *members)


def _client_kwargs(
    password: str | None,
    tls: bool,
    tls_ca_certs: str | None,
    tls_certfile: str | None,
    tls_keyfile: str | None,
    tls_verify: bool,
    socket_timeout_s: float,
    connect_timeout_s: float,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "health_check_interval": 0,
    }
    if password is not None:
        kwargs["password"] = password
    if tls:
        kwargs["ssl_cert_reqs"] = "required" if tls_verify else "none"
        for name, value in (
            ("ssl_ca_certs", tls_ca_certs),
            ("ssl_certfile", tls_certfile),
            ("ssl_keyfile", tls_keyfile),
        ):
            if value is not None:
                kwargs[name] = str(Path(value).expanduser())
    return kwargs


class _RedisBase:
    """Options, URL checks and error mapping shared by the sync and async stores."""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        password: str | None = None,
        tls: bool = False,
        tls_ca_certs: str | None = None,
        tls_certfile: str | None = None,
        tls_keyfile: str | None = None,
        tls_verify: bool = True,
        key_prefix: str = "oc:",
        socket_timeout_s: float = 1.0,
        connect_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(url, str):
            raise ConfigError(f"the Redis URL must be a str, got {type(url).__qualname__}")
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"the Redis URL must start with redis://, rediss:// or unix://, "
                f"got {redact_url(url)!r}"
            )
        for name, value in (
            ("socket_timeout_s", socket_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        self.tls = tls or scheme == "rediss"
        if tls and scheme == "redis":
            url = "rediss" + url[len("redis") :]
        self.url = url
        self._layout = _Layout(key_prefix, clock)
        self._kwargs = _client_kwargs(
            password,
            self.tls,
            tls_ca_certs,
            tls_certfile,
            tls_keyfile,
            tls_verify,
            socket_timeout_s,
            connect_timeout_s,
        )
        self.faults = FaultLog(f"redis store {redact_url(url)}", _log)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r})"

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, OSError) as exc:
            raise L2Unavailable(f"redis {redact_url(self.url)}: {what}: {exc}") from exc

    def _parse(self, raw: Sequence[bytes | None]) -> list[Record | None]:
        return parse_records(raw, self._layout.clock(), self.faults)

    def _live_tagged(self, tag: str, members: Sequence[str], raw: Sequence[Any]) -> list[str]:
        records = self._parse(raw)
        return [k for k, r in zip(members, records, strict=True) if r and tag in r.tags]

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Return the corrupt records seen (Redis cannot count one tenant cheaply)."""
        return {"corrupt": self.faults.by_kind.get("decode", 0)}


class RedisStore(_RedisBase):
    """A `ByteStore` in Redis, with blocking redis-py calls (see module docstring).

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
            ``unix://path``. A password in the URL wins over ``password``.
        password: the server's password (``AUTH``).
        tls: use TLS (a ``redis://`` URL is then used as ``rediss://``).
        tls_ca_certs: CA bundle to verify the server with.
        tls_certfile: client certificate (mutual TLS).
        tls_keyfile: client certificate's key.
        tls_verify: verify the server certificate (``False`` only for testing).
        key_prefix: prefix of every Redis key this store writes.
        socket_timeout_s: read / write timeout of one command.
        connect_timeout_s: connect timeout.
        clock: wall-clock seconds (expiry times are absolute).

    Raises:
        ConfigError: a bad URL scheme or option (the password is never shown).
    """

    _client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            from redis.retry import Retry

            self._client = redis.Redis.from_url(
                self.url, retry=Retry(NoBackoff(), 1), **self._kwargs
            )
        return self._client

    def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Return the live record of each key (``None``: absent, expired or corrupt)."""
        raw: list[bytes | None] = []
        with self._mapped("MGET"):
            for part in _batches(keys):
                raw.extend(self._redis().mget([self._layout.entry + k for k in part]))
        return self._parse(raw)

    def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Store each record (one pipeline), with its TTL as ``PX`` and its tags."""
        with self._mapped("SET"):
            pipe = self._redis().pipeline(transaction=False)
            self._layout.queue_set(pipe, items)
            pipe.execute()

    def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Remove keys and their tag memberships; return which were there."""
        if not keys:
            return []
        records = self.get_many(keys)
        with self._mapped("DEL"):
            pipe = self._redis().pipeline(transaction=False)
            self._layout.queue_delete(pipe, keys, records)
            replies = pipe.execute()
        return [bool(n) for n in replies[: len(keys)]]

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Return, per key, whether a readable live record is there."""
        return [r is not None for r in self.get_many(keys)]

    def tagged(self, tag: str) -> list[str]:
        """Return the keys of the live records carrying ``tag``; drop stale members."""
        with self._mapped("SMEMBERS"):
            members = sorted(m.decode() for m in self._redis().smembers(self._layout.tag + tag))
        if not members:
            return []
        live = self._live_tagged(tag, members, self._raw(members))
        stale = set(members) - set(live)
        if stale:
            with self._mapped("SREM"):
                self._redis().srem(self._layout.tag + tag, *stale)
        return live

    def _raw(self, keys: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        with self._mapped("MGET"):
            for part in _batches(keys):
                out.extend(self._redis().mget([self._layout.entry + k for k in part]))
        return out

    def keys(self, prefix: str = "") -> list[str]:
        """Return the keys starting with ``prefix`` (one ``SCAN`` over the database)."""
        skip = len(self._layout.entry)
        with self._mapped("SCAN"):
            it = self._redis().scan_iter(match=self._layout.match(prefix), count=1000)
            return [k.decode()[skip:] for k in it]

    def ping(self) -> bool:
        """Return whether the server answers."""
        with self._mapped("PING"):
            return bool(self._redis().ping())

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None


class AsyncRedisStore(_RedisBase):
    """The async twin of `RedisStore`, on ``redis.asyncio`` (same arguments).

    Its connection pool belongs to the event loop of the first call.
    """

    _client: redis.asyncio.Redis | None = None

    def _redis(self) -> redis.asyncio.Redis:
        if self._client is None:
            from redis.asyncio.retry import Retry

            self._client = redis.asyncio.Redis.from_url(
                self.url, retry=Retry(NoBackoff(), 1), **self._kwargs
            )
        return self._client

    async def _raw(self, keys: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        with self._mapped("MGET"):
            for part in _batches(keys):
                out.extend(await self._redis().mget([self._layout.entry + k for k in part]))
        return out

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Async `RedisStore.get_many`."""
        return self._parse(await self._raw(keys))

    async def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Async `RedisStore.set_many`."""
        with self._mapped("SET"):
            pipe = self._redis().pipeline(transaction=False)
            self._layout.queue_set(pipe, items)
            await pipe.execute()

    async def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `RedisStore.delete_many`."""
        if not keys:
            return []
        records = await self.get_many(keys)
        with self._mapped("DEL"):
            pipe = self._redis().pipeline(transaction=False)
            self._layout.queue_delete(pipe, keys, records)
            replies = await pipe.execute()
        return [bool(n) for n in replies[: len(keys)]]

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `RedisStore.exists_many`."""
        return [r is not None for r in await self.get_many(keys)]

    async def tagged(self, tag: str) -> list[str]:
        """Async `RedisStore.tagged`."""
        with self._mapped("SMEMBERS"):
            raw_members = await self._redis().smembers(self._layout.tag + tag)
        members = sorted(m.decode() for m in raw_members)
        if not members:
            return []
        live = self._live_tagged(tag, members, await self._raw(members))
        stale = set(members) - set(live)
        if stale:
            with self._mapped("SREM"):
                await self._redis().srem(self._layout.tag + tag, *stale)
        return live

    async def keys(self, prefix: str = "") -> list[str]:
        """Async `RedisStore.keys`."""
        skip = len(self._layout.entry)
        with self._mapped("SCAN"):
            it = self._redis().scan_iter(match=self._layout.match(prefix), count=1000)
            return [k.decode()[skip:] async for k in it]

    async def ping(self) -> bool:
        """Async `RedisStore.ping`."""
        with self._mapped("PING"):
            return bool(await self._redis().ping())

    async def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class RedisBackend(LocalSingleFlight, ScopedBackend):
    """A cache in Redis, shared by every process that reaches the server.

    Takes the arguments of `RedisStore` (``url``, ``password``, the ``tls*`` options,
    ``key_prefix``, timeouts) plus the ones below. The blocking methods and the async
    ones have a connection pool each: `close` closes the first, ``aclose`` the second.

    Args:
        url: the server's URL (see `RedisStore`).
        namespace: the key namespace.
        serializer: the value serializer (msgpack + lz4 by default).
        max_value_bytes: the largest encoded value accepted.
        **options: `RedisStore` options.

    Raises:
        ConfigError: a bad URL or option.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        namespace: str = "omnicache",
        serializer: Serializer | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
        **options: Any,
    ) -> None:
        self._url = url
        super().__init__(
            RedisStore(url, **options),
            AsyncRedisStore(url, **options),
            namespace=namespace,
            serializer=serializer,
            max_value_bytes=max_value_bytes,
        )

    def __repr__(self) -> str:
        return f"RedisBackend({redact_url(self._url)!r})"
