"""Per-request and per-layer cache policy: `RequestConfig`, `TTLPolicy`, `EvictionPolicy`,
`InvalidationEngine`.

Every cache layer takes a `RequestConfig` per call (time to live, semantic threshold,
skip the cache, do not store) and a `TTLPolicy` per layer (a global default plus one
value per layer, read from the environment or the settings). `InvalidationEngine`
removes entries by tag across the whole cluster; the layers tag what they store with
the names built here (``model:<id>``, ``session:<id>``, ``retriever:<id>``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from omnicache_cluster.core.keys import validate_part
from omnicache_cluster.core.scope import check_ttl

__all__ = [
    "DEFAULT_REQUEST",
    "EvictionPolicy",
    "InvalidationEngine",
    "RequestConfig",
    "TTLPolicy",
    "model_tag",
    "retriever_tag",
    "session_tag",
]


def model_tag(model: str) -> str:
    """Return the tag every layer puts on entries produced by ``model``."""
    return f"model:{_tag_part('model', model)}"


def session_tag(session_id: str) -> str:
    """Return the tag `ContextCache` puts on every turn of ``session_id``."""
    return f"session:{_tag_part('session_id', session_id)}"


def retriever_tag(retriever_id: str) -> str:
    """Return the tag `RetrievalCache` puts on results of ``retriever_id``."""
    return f"retriever:{_tag_part('retriever_id', retriever_id)}"


_UNSET: Final[Any] = object()


def _tag_part(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return value


def _tag_list(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        raise TypeError("tags must be a list of str, not a single str")
    out = list(tags)
    for tag in out:
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"a tag must be a non-empty str, got {tag!r}")
    return out


@dataclass(frozen=True)
class RequestConfig:
    """Overrides for one cache call; every layer method takes ``config=``.

    Attributes:
        ttl: seconds the stored value lives, instead of the layer's `TTLPolicy` value.
        threshold: the similarity threshold of semantic layers (0..1); exact layers
            accept it and ignore it, so one config can be passed down a pipeline.
        skip_cache: neither read nor write the cache: call the provider.
        no_store: read the cache, but do not store what the provider returns.
        tags: extra tags for the stored entry (the layer's own tags are kept).
        semantic_threshold: the seed's name of ``threshold`` (either may be given).
        namespace_prefix: the seed's per-request key prefix: refused with a
            ``TypeError`` naming the replacement (``for_tenant``).

    Example:
        >>> RequestConfig(ttl=30, no_store=True).ttl
        30.0
        >>> RequestConfig(semantic_threshold=0.8).threshold
        0.8
    """

    ttl: float | None = None
    threshold: float | None = None
    skip_cache: bool = False
    no_store: bool = False
    tags: tuple[str, ...] = field(default=())
    semantic_threshold: float | None = field(default=None, repr=False, compare=False)
    namespace_prefix: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.namespace_prefix is not None:
            raise TypeError(
                "RequestConfig(namespace_prefix=) is not supported: scope keys with "
                "CacheManager.for_tenant(id) or layer.for_tenant(id) (tenants are isolated "
                "in every backend and in the cluster)"
            )
        if self.semantic_threshold is not None:
            if self.threshold is not None and self.threshold != self.semantic_threshold:
                raise ValueError("threshold and semantic_threshold given with different values")
            object.__setattr__(self, "threshold", self.semantic_threshold)
        object.__setattr__(self, "semantic_threshold", self.threshold)
        object.__setattr__(self, "ttl", check_ttl(self.ttl))
        t = self.threshold
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0
        ):
            raise ValueError(f"threshold must be a number from 0 to 1, got {t!r}")
        for name in ("skip_cache", "no_store"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        object.__setattr__(self, "tags", tuple(_tag_list(self.tags)))

    @property
    def reads(self) -> bool:
        """Whether this request may read the cache."""
        return not self.skip_cache

    @property
    def writes(self) -> bool:
        """Whether this request may store into the cache."""
        return not (self.skip_cache or self.no_store)


#: The config used when a call passes none.
DEFAULT_REQUEST = RequestConfig()


@dataclass(frozen=True, init=False)
class TTLPolicy:
    """How long each layer's entries live: a global default plus per-layer values.

    A layer listed in ``per_layer`` uses its own value even when that is ``None``
    (never expires); other layers use ``default``. A `RequestConfig` ttl wins over both.
    The seed's names work too: ``TTLPolicy(default_ttl=600, per_type={...})``, and
    the ``default_ttl`` / ``per_type`` attributes.

    Args:
        default: seconds for layers without their own value (3600, as in the seed);
            ``None``: no expiry.
        per_layer: seconds (or ``None``) per layer name (``response``, ``embedding``...).
        default_ttl: the seed's name of ``default``.
        per_type: the seed's name of ``per_layer``.

    Raises:
        ValueError: a bad ttl, or a value given under both of its names.

    Example:
        >>> p = TTLPolicy(default=3600, per_layer={"embedding": None})
        >>> p.ttl_for("response"), p.ttl_for("embedding"), p.ttl_for("response", 5)
        (3600.0, None, 5.0)
        >>> TTLPolicy(default_ttl=60, per_type={"response": 10}).ttl_for("response")
        10.0
    """

    default: float | None
    per_layer: Mapping[str, float | None]

    def __init__(
        self,
        default: float | None = _UNSET,
        per_layer: Mapping[str, float | None] | None = None,
        *,
        default_ttl: float | None = _UNSET,
        per_type: Mapping[str, float | None] | None = None,
    ) -> None:
        if default is not _UNSET and default_ttl is not _UNSET:
            raise ValueError("give default or default_ttl (the seed's name), not both")
        if per_layer is not None and per_type is not None:
            raise ValueError("give per_layer or per_type (the seed's name), not both")
        if default is _UNSET:
            default = 3600.0 if default_ttl is _UNSET else default_ttl
        layers = per_layer if per_layer is not None else (per_type or {})
        object.__setattr__(self, "default", check_ttl(default))
        checked = {validate_part("layer", k): check_ttl(v) for k, v in layers.items()}
        object.__setattr__(self, "per_layer", MappingProxyType(checked))

    @property
    def default_ttl(self) -> float | None:
        """The seed's name of `default`."""
        return self.default

    @property
    def per_type(self) -> Mapping[str, float | None]:
        """The seed's name of `per_layer`."""
        return self.per_layer

    def __reduce__(self) -> tuple[Any, ...]:
        # A layer sent to a Ray task takes its policy along; mappingproxy does not pickle.
        return (TTLPolicy, (self.default, dict(self.per_layer)))

    def ttl_for(self, layer: str, override: float | None = None) -> float | None:
        """Return the ttl of a write to ``layer`` (``override`` first, when given)."""
        if override is not None:
            return check_ttl(override)
        if layer in self.per_layer:
            return self.per_layer[layer]
        return self.default

    def with_layer(self, layer: str, ttl: float | None) -> TTLPolicy:
        """Return a copy with ``layer``'s ttl set to ``ttl``."""
        return TTLPolicy(self.default, {**self.per_layer, layer: ttl})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TTLPolicy:
        """Build the policy from the ``OMNICACHE_*`` settings (`OmnicacheSettings`):
        ``OMNICACHE_DEFAULT_TTL`` and ``OMNICACHE_TTL_<LAYER>`` (seconds, ``0``: no
        expiry), over the seed's per-layer defaults.

        Raises:
            ConfigError: an invalid setting (the message names the variable).
        """
        from omnicache_cluster.config import OmnicacheSettings

        return cls.from_settings(OmnicacheSettings.from_env(environ))

    @classmethod
    def from_settings(cls, settings: Any) -> TTLPolicy:
        """Build the policy from an `OmnicacheSettings` (``default_ttl`` and
        ``layer_ttls``)."""
        return cls(settings.default_ttl, dict(settings.layer_ttls))


@dataclass(frozen=True)
class EvictionPolicy:
    """The seed's eviction settings, for `InMemoryBackend` (``eviction_policy=``).

    Attributes:
        strategy: ``"lru"`` (least recently used first, past ``max_entries``) or
            ``"ttl_only"`` (no bound on the number of entries; they leave when they
            expire). The backend's byte budget (``max_bytes``) applies to both: it is
            what keeps one process's memory bounded.
        max_entries: the most entries (``"lru"`` only); ``None``: no count bound.
        max_bytes: the byte budget; ``None``: the backend's default.

    Raises:
        ValueError: an unknown strategy, or a bound that is not a positive int.

    Example:
        >>> EvictionPolicy("lru", max_entries=1000).max_entries
        1000
    """

    strategy: Literal["lru", "ttl_only"] = "lru"
    max_entries: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ("lru", "ttl_only"):
            raise ValueError(f"strategy must be 'lru' or 'ttl_only', got {self.strategy!r}")
        for name in ("max_entries", "max_bytes"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")


class InvalidationEngine:
    """Removes entries by tag across the whole cluster, for one tenant.

    Tags are scoped to the backend's tenant, so an engine over a tenant-scoped client
    cannot touch another tenant's entries. Every backend keeps its entries' tags
    itself, so a `CacheManager` needs no engine; the seed's calls work too:
    ``register(key, tags)`` records keys under tags in this process, and
    ``invalidate_tag(tag, backend)`` removes them (and the entries that carry the
    tag natively) from ``backend``.

    Args:
        backend: a `CacheCluster`, an `InMemoryBackend` or another backend with
            ``invalidate``/``ainvalidate``; a `CacheManager` works too (the seed's
            ``InvalidationEngine(InMemoryBackend())`` tag store is accepted).

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> b = InMemoryBackend()
        >>> b.set("q", "a", tags=[model_tag("gpt-4o")])
        >>> InvalidationEngine(b).invalidate_model("gpt-4o")
        1
    """

    def __init__(self, backend: Any) -> None:
        if not (hasattr(backend, "invalidate") and hasattr(backend, "ainvalidate")):
            raise TypeError(
                f"backend must have invalidate() and ainvalidate(), got {type(backend).__name__}"
            )
        self._backend = backend
        self._lock = threading.Lock()
        self._registered: dict[str, set[Any]] = {}

    def register(self, key: Any, tags: Iterable[str]) -> None:
        """Record ``key`` under each of ``tags`` (the seed's explicit tag index)."""
        checked = _tag_list(tags)
        with self._lock:
            for tag in checked:
                self._registered.setdefault(tag, set()).add(key)

    def registered(self, tag: str) -> list[Any]:
        """Return the keys `register` recorded under ``tag``."""
        with self._lock:
            return list(self._registered.get(tag, ()))

    def invalidate_tag(self, tag: str, backend: Any = None) -> int:
        """Remove from ``backend`` (this engine's when omitted) the keys registered
        under ``tag`` and the entries that carry it; return how many were removed."""
        target = self._backend if backend is None else backend
        with self._lock:
            keys = self._registered.pop(tag, set())
        removed = sum(1 for key in keys if _deleted(target.delete(key)))
        if hasattr(target, "invalidate"):
            removed += int(target.invalidate(tag))
        return removed

    def invalidate_key(self, key: Any, backend: Any = None) -> bool:
        """Remove ``key`` from ``backend`` (this engine's when omitted)."""
        target = self._backend if backend is None else backend
        with self._lock:
            for keys in self._registered.values():
                keys.discard(key)
        return _deleted(target.delete(key))

    def invalidate(self, tag: str) -> int:
        """Remove every entry tagged ``tag``; return how many."""
        return int(self._backend.invalidate(tag))

    def invalidate_many(self, tags: Iterable[str]) -> int:
        """Remove every entry carrying any of ``tags``; return how many."""
        return sum(self.invalidate(tag) for tag in _tag_list(tags))

    def invalidate_model(self, model: str) -> int:
        """Remove every entry produced by ``model`` (all layers)."""
        return self.invalidate(model_tag(model))

    def invalidate_session(self, session_id: str) -> int:
        """Remove every context turn of ``session_id``."""
        return self.invalidate(session_tag(session_id))

    def invalidate_retriever(self, retriever_id: str) -> int:
        """Remove every cached result of ``retriever_id``."""
        return self.invalidate(retriever_tag(retriever_id))

    async def ainvalidate(self, tag: str) -> int:
        """Async `invalidate`."""
        return int(await self._backend.ainvalidate(tag))

    async def ainvalidate_many(self, tags: Iterable[str]) -> int:
        """Async `invalidate_many`."""
        total = 0
        for tag in _tag_list(tags):
            total += await self.ainvalidate(tag)
        return total


def _deleted(result: Any) -> bool:
    # Our backends return whether the key was there; the seed's returned None.
    return True if result is None else bool(result)
