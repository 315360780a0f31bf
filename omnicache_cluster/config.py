"""Settings: the seed's ``OMNICACHE_*`` variables, the cluster's own, and the L2 spec.

`OmnicacheSettings.from_env()` reads the environment; every invalid value raises a
`ConfigError` that names the variable. `L2Config` is what a shard actor is given to
reach its durable L2 (Redis or a disk file); it is a frozen dataclass, so it pickles
into the actor and a restarted shard reconnects with it by itself.

Importing this module imports neither Ray nor Redis.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from omnicache_cluster.core.keys import validate_part
from omnicache_cluster.errors import ConfigError

if TYPE_CHECKING:
    from omnicache_cluster.backends.base import AsyncByteStore, ByteStore
    from omnicache_cluster.protocols import CacheBackend

__all__ = ["L2_KINDS", "WRITE_MODES", "L2Config", "OmnicacheSettings", "redact_url"]

L2_KINDS: Final = ("redis", "disk")
WRITE_MODES: Final = ("write_through", "write_behind")
_BACKENDS: Final = ("memory", "disk", "redis")
_VECTOR_BACKENDS: Final = ("none", "faiss", "chroma")
_UNSET: Final[Any] = object()
# The seed's per-layer ttl fields (``ttl_response=`` ...) and their layers.
_TTL_FIELDS: Final = ("embedding", "retrieval", "context", "response")
# The seed's per-layer TTL defaults (seconds).
_LAYER_TTLS: Final = {
    "embedding": 86400.0,
    "retrieval": 3600.0,
    "context": 1800.0,
    "response": 600.0,
}
_DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"
_DEFAULT_DISK_PATH: Final = "/tmp/omnicache"  # noqa: S108 - the seed's documented default


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        what = "int" if integer else "number"
        raise ConfigError(f"{name} must be a positive {what}, got {value!r}")
    if not integer and not math.isfinite(value):  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class L2Config:
    """Where and how a shard keeps its durable copy.

    Attributes:
        kind: ``"redis"`` (shared by every node) or ``"disk"`` (one SQLite file per
            machine: single-node clusters only).
        url: the Redis URL (``redis://``, ``rediss://`` for TLS, ``unix://``).
        path: the directory of the disk database.
        key_prefix: prefix of the Redis keys (two clusters on one Redis need two).
        write_mode: ``"write_through"`` (a write is acknowledged once L2 has it) or
            ``"write_behind"`` (acknowledged at once, flushed in batches).
        queue_max: the most dirty entries kept in memory: past it a write-behind
            writer waits for a flush, and while L2 is down the oldest are dropped
            (counted as ``l2_dropped``).
        flush_interval_s: how often write-behind flushes.
        retry_interval_s: after an L2 error, how long L2 is left alone before the
            next try (reads and writes are served from L1 meanwhile).
        socket_timeout_s: Redis command timeout.
        connect_timeout_s: Redis connect timeout.
        password: the Redis password (never shown in ``repr``).
        tls: use TLS to Redis.
        tls_ca_certs: CA bundle for TLS.
        tls_certfile: client certificate for mutual TLS.
        tls_keyfile: key of the client certificate.
        tls_verify: verify the server's certificate.
        synchronous: SQLite durability, ``"normal"`` or ``"full"``.
        log_interval_s: the least time between two L2 fault log lines of a shard.

    Raises:
        ConfigError: a bad value (names the field).
    """

    kind: Literal["redis", "disk"] = "redis"
    url: str = field(default=_DEFAULT_REDIS_URL, repr=False)
    path: str = _DEFAULT_DISK_PATH
    key_prefix: str = "oc:"
    write_mode: Literal["write_through", "write_behind"] = "write_through"
    queue_max: int = 10_000
    flush_interval_s: float = 0.25
    retry_interval_s: float = 1.0
    socket_timeout_s: float = 0.5
    connect_timeout_s: float = 0.5
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_certs: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    tls_verify: bool = True
    synchronous: Literal["normal", "full"] = "normal"
    log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in L2_KINDS:
            raise ConfigError(f"L2 kind must be one of {', '.join(L2_KINDS)}, got {self.kind!r}")
        if self.write_mode not in WRITE_MODES:
            raise ConfigError(
                f"write_mode must be one of {', '.join(WRITE_MODES)}, got {self.write_mode!r}"
            )
        _positive("queue_max", self.queue_max, integer=True)
        for name in (
            "flush_interval_s",
            "retry_interval_s",
            "socket_timeout_s",
            "connect_timeout_s",
            "log_interval_s",
        ):
            _positive(name, getattr(self, name))
        if self.synchronous not in ("normal", "full"):
            raise ConfigError(f"synchronous must be 'normal' or 'full', got {self.synchronous!r}")
        if not isinstance(self.key_prefix, str):
            raise ConfigError(f"key_prefix must be a str, got {self.key_prefix!r}")
        if self.kind == "redis" and not str(self.url).startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                f"url must start with redis://, rediss:// or unix://, got {redact_url(self.url)!r}"
            )

    def where(self) -> str:
        """Return where the data lives, for logs (a Redis password is masked)."""
        return self.path if self.kind == "disk" else redact_url(self.url)

    def redis_options(self) -> dict[str, Any]:
        """Return the `RedisStore` keyword arguments of this spec."""
        return {
            "password": self.password,
            "tls": self.tls,
            "tls_ca_certs": self.tls_ca_certs,
            "tls_certfile": self.tls_certfile,
            "tls_keyfile": self.tls_keyfile,
            "tls_verify": self.tls_verify,
            "key_prefix": self.key_prefix,
            "socket_timeout_s": self.socket_timeout_s,
            "connect_timeout_s": self.connect_timeout_s,
        }

    def open(self) -> ByteStore:
        """Return a blocking byte store on this L2."""
        if self.kind == "disk":
            from omnicache_cluster.backends.disk import DiskStore

            return DiskStore(self.path, synchronous=self.synchronous)
        from omnicache_cluster.backends.redis import RedisStore

        return RedisStore(self.url, **self.redis_options())

    def open_async(self) -> AsyncByteStore:
        """Return an async byte store on this L2 (what a shard uses)."""
        if self.kind == "disk":
            from omnicache_cluster.backends.disk import AsyncDiskStore, DiskStore

            return AsyncDiskStore(DiskStore(self.path, synchronous=self.synchronous))
        from omnicache_cluster.backends.redis import AsyncRedisStore

        return AsyncRedisStore(self.url, **self.redis_options())


@dataclass(frozen=True)
class OmnicacheSettings:
    """Every setting of a cache: the seed's and the cluster's (see `from_env`).

    Attributes:
        backend: ``"memory"``, ``"disk"`` or ``"redis"``: the `CacheManager` backend,
            and the shards' L2 for `CacheCluster.start` (``"memory"``: no L2).
        redis_url: the Redis URL.
        disk_path: the disk backend's directory.
        default_ttl: seconds to live of entries set without a ttl (``None``: no expiry).
        namespace: the key namespace.
        semantic_threshold: the semantic cache's similarity threshold, in [0, 1].
        layer_ttls: per-layer ttl overrides (``embedding``, ``response``, ...).
        num_shards: how many shard actors `CacheCluster.start` creates.
        ray_namespace: the Ray namespace of the cluster's actors.
        max_bytes_per_shard: each shard's L1 byte budget.
        l2_write_mode: ``"write_through"`` or ``"write_behind"``.
        l2_queue_max: see `L2Config.queue_max`.
        l2_flush_interval_s: see `L2Config.flush_interval_s`.
        redis_key_prefix: see `L2Config.key_prefix`.
        redis_password: the Redis password (never shown in ``repr``).
        redis_tls: use TLS to Redis.
        redis_tls_ca_certs: CA bundle for TLS.
        max_memory_entries: the entry bound of the memory backend (LRU past it).
        vector_backend: ``"none"``, ``"faiss"`` or ``"chroma"``: the vector store of
            `CacheManager.from_settings` (``get(semantic=True, vector=)``).
        embedding_dim: the dimension of that vector store.
        key_hash_algo: only ``"blake2b"``: keys are a 128-bit BLAKE2b digest of a
            canonical encoding; the seed's ``"sha256"`` / ``"md5"`` are refused with
            a `ConfigError` (see `CacheKeyBuilder`).
        ttl_embedding: the seed's field for ``layer_ttls["embedding"]`` (likewise
            ``ttl_retrieval``, ``ttl_context``, ``ttl_response``); reading one gives
            the layer's ttl.
    """

    backend: Literal["memory", "disk", "redis"] = "memory"
    redis_url: str = field(default=_DEFAULT_REDIS_URL, repr=False)
    disk_path: str = _DEFAULT_DISK_PATH
    default_ttl: float | None = 3600.0
    namespace: str = "omnicache"
    semantic_threshold: float = 0.95
    layer_ttls: Mapping[str, float | None] = field(default_factory=lambda: dict(_LAYER_TTLS))
    num_shards: int = 2
    ray_namespace: str = "omnicache"
    max_bytes_per_shard: int = 256 * 1024 * 1024
    l2_write_mode: Literal["write_through", "write_behind"] = "write_through"
    l2_queue_max: int = 10_000
    l2_flush_interval_s: float = 0.25
    redis_key_prefix: str = "oc:"
    redis_password: str | None = field(default=None, repr=False)
    redis_tls: bool = False
    redis_tls_ca_certs: str | None = None
    max_memory_entries: int | None = 10_000
    vector_backend: Literal["none", "faiss", "chroma"] = "none"
    embedding_dim: int = 1536
    key_hash_algo: str = "blake2b"
    ttl_embedding: float | None = _UNSET
    ttl_retrieval: float | None = _UNSET
    ttl_context: float | None = _UNSET
    ttl_response: float | None = _UNSET

    def __post_init__(self) -> None:
        self._merge_layer_ttls()
        if self.backend not in _BACKENDS:
            raise ConfigError(
                f"backend must be one of {', '.join(_BACKENDS)}, got {self.backend!r}"
            )
        if self.default_ttl is not None:
            _positive("default_ttl", self.default_ttl)
        for layer, ttl in self.layer_ttls.items():
            validate_part("layer", layer)
            if ttl is not None:
                _positive(f"layer_ttls[{layer!r}]", ttl)
        if isinstance(self.semantic_threshold, bool) or not (
            isinstance(self.semantic_threshold, int | float) and 0 <= self.semantic_threshold <= 1
        ):
            raise ConfigError(
                f"semantic_threshold must be a number in [0, 1], got {self.semantic_threshold!r}"
            )
        _positive("num_shards", self.num_shards, integer=True)
        _positive("max_bytes_per_shard", self.max_bytes_per_shard, integer=True)
        for name in ("namespace", "ray_namespace"):
            try:
                validate_part(name, getattr(self, name))
            except (TypeError, ValueError) as exc:
                raise ConfigError(str(exc)) from None
        self.l2_config()  # validates the L2 fields
        if self.max_memory_entries is not None:
            _positive("max_memory_entries", self.max_memory_entries, integer=True)
        if self.vector_backend not in _VECTOR_BACKENDS:
            raise ConfigError(
                f"vector_backend must be one of {', '.join(_VECTOR_BACKENDS)}, "
                f"got {self.vector_backend!r}"
            )
        _positive("embedding_dim", self.embedding_dim, integer=True)
        if self.key_hash_algo != "blake2b":
            from omnicache_cluster.core.keys import algo_error

            raise ConfigError(algo_error("key_hash_algo", self.key_hash_algo))

    def _merge_layer_ttls(self) -> None:
        ttls = dict(self.layer_ttls)
        for layer in _TTL_FIELDS:
            value = getattr(self, f"ttl_{layer}")
            if value is not _UNSET:
                ttls[layer] = None if value == 0 else value
        object.__setattr__(self, "layer_ttls", ttls)
        for layer in _TTL_FIELDS:
            object.__setattr__(self, f"ttl_{layer}", ttls.get(layer, self.default_ttl))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OmnicacheSettings:
        """Read the settings from ``OMNICACHE_*`` environment variables.

        The seed's: ``OMNICACHE_BACKEND`` (memory|disk|redis), ``OMNICACHE_REDIS_URL``,
        ``OMNICACHE_DISK_PATH``, ``OMNICACHE_DEFAULT_TTL`` (seconds, 0 = no expiry),
        ``OMNICACHE_NAMESPACE``, ``OMNICACHE_SEMANTIC_THRESHOLD`` (0-1) and
        ``OMNICACHE_TTL_<LAYER>`` per layer (0 = no expiry). The cluster's:
        ``OMNICACHE_NUM_SHARDS``, ``OMNICACHE_RAY_NAMESPACE``,
        ``OMNICACHE_MAX_BYTES_PER_SHARD``, ``OMNICACHE_L2_WRITE_MODE``
        (write_through|write_behind), ``OMNICACHE_L2_QUEUE_MAX``,
        ``OMNICACHE_L2_FLUSH_INTERVAL`` (seconds), ``OMNICACHE_REDIS_KEY_PREFIX``,
        ``OMNICACHE_REDIS_PASSWORD``, ``OMNICACHE_REDIS_TLS`` (true|false) and
        ``OMNICACHE_REDIS_TLS_CA_CERTS``. The seed's ``OMNICACHE_MAX_MEMORY_ENTRIES``,
        ``OMNICACHE_VECTOR_BACKEND`` (none|faiss|chroma), ``OMNICACHE_EMBEDDING_DIM``
        and ``OMNICACHE_KEY_HASH_ALGO`` (only blake2b; the seed's sha256 and md5 are
        refused, naming the fix) are read too. Unset variables keep their defaults.

        Args:
            environ: the variables to read (``os.environ`` by default).

        Raises:
            ConfigError: a variable has an invalid value; the message names it.
        """
        env = os.environ if environ is None else environ
        return cls(**_Env(env).read())

    def ttl_for(self, layer: str) -> float | None:
        """Return the ttl of entries of ``layer`` set without one."""
        return self.layer_ttls.get(layer, self.default_ttl)

    def l2_config(self) -> L2Config | None:
        """Return the shards' L2 spec (``None`` for the memory backend)."""
        if self.backend == "memory":
            return None
        return L2Config(
            kind="disk" if self.backend == "disk" else "redis",
            url=self.redis_url,
            path=self.disk_path,
            key_prefix=self.redis_key_prefix,
            write_mode=self.l2_write_mode,
            queue_max=self.l2_queue_max,
            flush_interval_s=self.l2_flush_interval_s,
            password=self.redis_password,
            tls=self.redis_tls,
            tls_ca_certs=self.redis_tls_ca_certs,
        )

    def make_vector_backend(self) -> Any:
        """Return the vector store ``vector_backend`` names (``None`` for ``"none"``).

        Raises:
            ImportError: its optional dependency is not installed (names the extra).
        """
        if self.vector_backend == "faiss":
            from omnicache_cluster.backends.vector.faiss import FAISSBackend

            return FAISSBackend(self.embedding_dim)
        if self.vector_backend == "chroma":
            from omnicache_cluster.backends.vector.chroma import ChromaBackend

            return ChromaBackend()
        return None

    def make_backend(self) -> CacheBackend:
        """Return the single-process backend these settings name."""
        if self.backend == "disk":
            from omnicache_cluster.backends.disk import DiskBackend

            return DiskBackend(self.disk_path, namespace=self.namespace)
        l2 = self.l2_config()
        if self.backend == "redis" and l2 is not None:
            from omnicache_cluster.backends.redis import RedisBackend

            return RedisBackend(self.redis_url, namespace=self.namespace, **l2.redis_options())
        from omnicache_cluster.backends.memory import InMemoryBackend

        return InMemoryBackend(max_size=self.max_memory_entries, namespace=self.namespace)


class _Env:
    """Reads and checks ``OMNICACHE_*`` variables; errors name the variable."""

    PREFIX: Final = "OMNICACHE_"

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _get(self, name: str) -> str | None:
        value = self.env.get(self.PREFIX + name)
        return None if value is None else value.strip()

    def _fail(self, name: str, expected: str, raw: str) -> ConfigError:
        return ConfigError(f"{self.PREFIX}{name} must be {expected}, got {raw!r}")

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        raw = self._get(name)
        if raw is None:
            return None
        if raw.lower() not in options:
            raise self._fail(name, f"one of {', '.join(options)}", raw)
        return raw.lower()

    def number(self, name: str, *, integer: bool = False, zero_ok: bool = False) -> Any:
        raw = self._get(name)
        if raw is None:
            return None
        if zero_ok and raw.lower() == "none":  # the seed's spelling of "no expiry"
            return 0
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            raise self._fail(name, "an integer" if integer else "a number", raw) from None
        if zero_ok and value == 0:
            return 0
        if not (math.isfinite(value) and value > 0):
            raise self._fail(name, "positive" + (" or 0" if zero_ok else ""), raw)
        return value

    def flag(self, name: str) -> bool | None:
        raw = self._get(name)
        if raw is None:
            return None
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise self._fail(name, "true or false", raw)

    def part(self, name: str) -> str | None:
        raw = self._get(name)
        if raw is None:
            return None
        try:
            return validate_part(name.lower(), raw)
        except ValueError as exc:
            raise self._fail(name, f"a valid name ({exc})", raw) from None

    def text(self, name: str) -> str | None:
        raw = self._get(name)
        if raw is not None and not raw:
            raise self._fail(name, "non-empty", raw)
        return raw

    def algo(self) -> str | None:
        raw = self._get("KEY_HASH_ALGO")
        if raw is None:
            return None
        if raw.lower() != "blake2b":
            from omnicache_cluster.core.keys import algo_error

            raise ConfigError(algo_error(self.PREFIX + "KEY_HASH_ALGO", raw))
        return "blake2b"

    def threshold(self) -> float | None:
        value = self.number("SEMANTIC_THRESHOLD", zero_ok=True)
        if value is not None and not 0 <= value <= 1:
            raise self._fail("SEMANTIC_THRESHOLD", "a number in [0, 1]", str(value))
        return None if value is None else float(value)

    def layer_ttls(self) -> dict[str, float | None]:
        ttls: dict[str, float | None] = dict(_LAYER_TTLS)
        for var in self.env:
            if var.startswith(self.PREFIX + "TTL_"):
                name = var[len(self.PREFIX) :]
                layer = name[len("TTL_") :].lower()
                try:
                    validate_part("layer", layer)
                except ValueError:
                    raise self._fail(name, "named after a layer", layer) from None
                value = self.number(name, zero_ok=True)
                ttls[layer] = None if value == 0 else float(value)
        return ttls

    def read(self) -> dict[str, Any]:
        default_ttl = self.number("DEFAULT_TTL", zero_ok=True)
        values: dict[str, Any] = {
            "backend": self.choice("BACKEND", _BACKENDS),
            "redis_url": self.text("REDIS_URL"),
            "disk_path": self.text("DISK_PATH"),
            "namespace": self.part("NAMESPACE"),
            "semantic_threshold": self.threshold(),
            "num_shards": self.number("NUM_SHARDS", integer=True),
            "ray_namespace": self.part("RAY_NAMESPACE"),
            "max_bytes_per_shard": self.number("MAX_BYTES_PER_SHARD", integer=True),
            "l2_write_mode": self.choice("L2_WRITE_MODE", WRITE_MODES),
            "l2_queue_max": self.number("L2_QUEUE_MAX", integer=True),
            "l2_flush_interval_s": self.number("L2_FLUSH_INTERVAL"),
            "redis_key_prefix": self.env.get(self.PREFIX + "REDIS_KEY_PREFIX"),
            "redis_password": self.env.get(self.PREFIX + "REDIS_PASSWORD"),
            "redis_tls": self.flag("REDIS_TLS"),
            "redis_tls_ca_certs": self.text("REDIS_TLS_CA_CERTS"),
            "max_memory_entries": self.number("MAX_MEMORY_ENTRIES", integer=True),
            "vector_backend": self.choice("VECTOR_BACKEND", _VECTOR_BACKENDS),
            "embedding_dim": self.number("EMBEDDING_DIM", integer=True),
            "key_hash_algo": self.algo(),
        }
        out = {k: v for k, v in values.items() if v is not None}
        if default_ttl is not None:
            out["default_ttl"] = None if default_ttl == 0 else float(default_ttl)
        out["layer_ttls"] = self.layer_ttls()
        url = out.get("redis_url")
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise self._fail("REDIS_URL", "a redis://, rediss:// or unix:// URL", redact_url(url))
        return out
