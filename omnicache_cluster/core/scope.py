"""Key and tag scoping shared by every client: ``namespace:tenant:layer:digest`` keys,
``namespace:tenant:tag`` tags, and argument checks done before anything is sent."""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Iterable
from typing import Any

from omnicache_cluster.core.keys import CacheKey, digest, validate_part

__all__ = ["DEFAULT_LAYER", "MAX_TAG_LEN", "KeyScope", "check_ttl"]

DEFAULT_LAYER = "default"
MAX_TAG_LEN = 256
#: Stored keys remembered per scope (of str keys up to ``MEMO_MAX_KEY_LEN`` characters,
#: and ints), so that a hot key is hashed once.
MEMO_ENTRIES = 65_536
MEMO_MAX_KEY_LEN = 1024


def check_ttl(ttl: float | None) -> float | None:
    """Return ``ttl`` as a float, or ``None`` for no expiry.

    Raises:
        TypeError: ``ttl`` is not a number (``bool`` is refused too).
        ValueError: ``ttl`` is not positive and finite.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds or None, got {type(ttl).__qualname__}")
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive, finite number of seconds, got {ttl!r}")
    return float(ttl)


class KeyScope:
    """Builds stored keys and tags for one key namespace and tenant.

    A scope cannot produce a key or tag of another tenant: that is how a tenant-scoped
    client is kept away from other tenants' entries.
    """

    __slots__ = ("_memo", "namespace", "prefix", "tenant")

    def __init__(self, namespace: str, tenant: str) -> None:
        self.namespace = validate_part("namespace", namespace)
        self.tenant = validate_part("tenant", tenant)
        self.prefix = f"{namespace}:{tenant}:"
        # Stored keys of recent str / int keys: hot keys repeat, hashing them does not.
        self._memo: dict[tuple[str, Any], str] = {}

    def key(self, key: Any, layer: str = DEFAULT_LAYER) -> str:
        """Return the stored key of ``key`` in ``layer``.

        ``key`` is a `CacheKey` of this scope, or anything with a canonical encoding.

        Raises:
            ValueError: a `CacheKey` of another namespace or tenant, or a bad layer.
            TypeError: ``key`` has no canonical encoding.
        """
        if isinstance(key, CacheKey):
            if key.tenant != self.tenant or key.namespace != self.namespace:
                raise ValueError(
                    f"{key!s} is not a key of namespace {self.namespace!r} and tenant "
                    f"{self.tenant!r}; use a client scoped to its tenant"
                )
            return str(key)
        kind = type(key)
        if kind is str or kind is int:
            memo = (layer, key)
            try:
                return self._memo[memo]
            except KeyError:
                pass
        if layer is not DEFAULT_LAYER:
            validate_part("layer", layer)
        if kind is str:  # the hot path: the same bytes as digest(key), without the walk
            data = unicodedata.normalize("NFC", key).encode()
            d = hashlib.blake2b(b"s%d:" % len(data) + data, digest_size=16).hexdigest()
        else:
            d = digest(key)
        stored = f"{self.prefix}{layer}:{d}"
        if (kind is str and len(key) <= MEMO_MAX_KEY_LEN) or kind is int:
            if len(self._memo) >= MEMO_ENTRIES:
                self._memo.clear()
            self._memo[(layer, key)] = stored
        return stored

    def tags(self, tags: Iterable[str] | None) -> tuple[str, ...]:
        """Return ``tags`` scoped to this namespace and tenant.

        Raises:
            TypeError: ``tags`` is a single ``str`` or holds a non-``str``.
            ValueError: a tag is empty or longer than ``MAX_TAG_LEN``.
        """
        if not tags:
            return ()
        if isinstance(tags, str):
            raise TypeError("tags must be a list of str, not a single str")
        out = []
        for tag in tags:
            if not isinstance(tag, str):
                raise TypeError(f"a tag must be a str, got {type(tag).__qualname__}")
            if not tag or len(tag) > MAX_TAG_LEN:
                raise ValueError(f"a tag must have 1 to {MAX_TAG_LEN} characters, got {tag!r}")
            out.append(self.prefix + tag)
        return tuple(out)
