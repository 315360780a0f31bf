"""Per-request and per-layer cache policy: `RequestConfig`, `TTLPolicy`, `InvalidationEngine`.

Every cache layer takes a `RequestConfig` per call (time to live, semantic threshold,
skip the cache, do not store) and a `TTLPolicy` per layer (a global default plus one
value per layer, read from the environment or the settings). `InvalidationEngine`
removes entries by tag across the whole cluster; the layers tag what they store with
the names built here (``model:<id>``, ``session:<id>``, ``retriever:<id>``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from omnicache_cluster.core.keys import validate_part
from omnicache_cluster.core.scope import check_ttl

__all__ = [
    "DEFAULT_REQUEST",
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

    Example:
        >>> RequestConfig(ttl=30, no_store=True).ttl
        30.0
    """

    ttl: float | None = None
    threshold: float | None = None
    skip_cache: bool = False
    no_store: bool = False
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class TTLPolicy:
    """How long each layer's entries live: a global default plus per-layer values.

    A layer listed in ``per_layer`` uses its own value even when that is ``None``
    (never expires); other layers use ``default``. A `RequestConfig` ttl wins over both.

    Args:
        default: seconds for layers without their own value; ``None``: no expiry.
        per_layer: seconds (or ``None``) per layer name (``response``, ``embedding``...).

    Example:
        >>> p = TTLPolicy(default=3600, per_layer={"embedding": None})
        >>> p.ttl_for("response"), p.ttl_for("embedding"), p.ttl_for("response", 5)
        (3600.0, None, 5.0)
    """

    default: float | None = None
    per_layer: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", check_ttl(self.default))
        checked = {validate_part("layer", k): check_ttl(v) for k, v in self.per_layer.items()}
        object.__setattr__(self, "per_layer", MappingProxyType(checked))

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


class InvalidationEngine:
    """Removes entries by tag across the whole cluster, for one tenant.

    Tags are scoped to the backend's tenant, so an engine over a tenant-scoped client
    cannot touch another tenant's entries.

    Args:
        backend: a `CacheCluster`, an `InMemoryBackend` or another backend with
            ``invalidate``/``ainvalidate``; a `CacheManager` works too.

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
