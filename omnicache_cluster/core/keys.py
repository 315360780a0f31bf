"""Cache keys: ``namespace:tenant:layer:digest`` over a canonical encoding of the inputs.

The digest is the 128-bit BLAKE2b hex digest of a type-tagged canonical byte encoding.
Canonical means that things a user would call "the same request" give the same key:

* dict order does not matter (pairs are sorted by their encoded key);
* strings are NFC-normalised, so a composed and a decomposed "é" are one key;
* ``1`` and ``1.0`` are one key, and floats are written with 15 significant digits,
  so ``0.1 + 0.2`` and ``0.3`` are one key (arithmetic drift is not a new request);
* lists and tuples are the same sequence; sets are sorted.

Anything without a canonical form raises ``TypeError`` naming its type. We never fall
back to ``str()`` or ``repr()``: a default ``repr`` holds a memory address, so such a
key would differ in every process and the cache would silently never hit.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import hashlib
import math
import re
import sys
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KEY_ALGO",
    "MAX_PART_LEN",
    "CacheKey",
    "CacheKeyBuilder",
    "algo_error",
    "canonical_bytes",
    "digest",
    "validate_part",
]

MAX_PART_LEN = 128
#: The one key digest: 128-bit BLAKE2b of the canonical encoding.
KEY_ALGO = "blake2b"
_SEED_ALGOS = frozenset({"sha256", "md5", "sha1", "sha512", "blake2b"})
_PART_RE = re.compile(r"[A-Za-z0-9_.@+=/\-]+")
_DIGEST_RE = re.compile(r"[0-9a-f]{32}")


def algo_error(name: str, algo: object) -> str:
    """Return the message refusing a key hash algorithm other than ``blake2b``."""
    return (
        f"{name}={algo!r} is not supported: every key is the 128-bit BLAKE2b digest of a "
        f"canonical encoding, identical in every process of the cluster (the seed's "
        f"sha256/md5 of json.dumps(default=str), cut to 64 bits, was not); drop the "
        f"setting or use {name}='blake2b'"
    )


def validate_part(name: str, value: object) -> str:
    """Check one key part (namespace, tenant or layer) and return it.

    Raises:
        TypeError: the part is not a ``str``.
        ValueError: the part is empty, longer than ``MAX_PART_LEN`` or holds a
            character outside ``[A-Za-z0-9_.@+=/-]`` (``:`` separates the parts).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__qualname__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > MAX_PART_LEN:
        raise ValueError(f"{name} must be at most {MAX_PART_LEN} characters, got {len(value)}")
    if not _PART_RE.fullmatch(value):
        raise ValueError(f"{name} may only hold letters, digits and _.@+=/-, got {value!r}")
    return value


def _encode_float(x: float, out: list[bytes]) -> None:
    if math.isnan(x):
        out.append(b"fnan;")
    elif math.isinf(x):
        out.append(b"f+inf;" if x > 0 else b"f-inf;")
    elif x.is_integer() and abs(x) < 2**53:
        out.append(b"i%d;" % int(x))
    else:
        out.append(b"f" + format(x, ".15g").encode() + b";")


def _encode_str(s: str, out: list[bytes]) -> None:
    data = unicodedata.normalize("NFC", s).encode("utf-8")
    out.append(b"s%d:" % len(data))
    out.append(data)


def _encode(obj: Any, out: list[bytes]) -> None:
    # Exact type checks first: they are the common case and bool must not pass as int.
    t = type(obj)
    if t is str:
        _encode_str(obj, out)
    elif obj is None:
        out.append(b"N")
    elif t is bool:
        out.append(b"T" if obj else b"F")
    elif t is int:
        out.append(b"i%d;" % obj)
    elif t is float:
        _encode_float(obj, out)
    elif t is bytes or t is bytearray or t is memoryview:
        data = bytes(obj)
        out.append(b"b%d:" % len(data))
        out.append(data)
    elif t is list or t is tuple:
        out.append(b"l%d[" % len(obj))
        for item in obj:
            _encode(item, out)
        out.append(b"]")
    elif isinstance(obj, Mapping):
        pairs = sorted((canonical_bytes(k), canonical_bytes(v)) for k, v in obj.items())
        out.append(b"d%d{" % len(pairs))
        for k, v in pairs:
            out.append(k)
            out.append(v)
        out.append(b"}")
    else:
        _encode_other(obj, out)


def _encode_other(obj: Any, out: list[bytes]) -> None:
    t = type(obj)
    np = sys.modules.get("numpy")  # only if the caller already imported it
    hook = getattr(obj, "__omnicache_key__", None)
    if hook is not None and callable(hook):
        out.append(b"K")
        _encode(hook(), out)
    elif isinstance(obj, enum.Enum):
        out.append(b"E")
        _encode_str(f"{t.__module__}.{t.__qualname__}", out)
        _encode(obj.value, out)
    elif isinstance(obj, bool):
        out.append(b"T" if obj else b"F")
    elif isinstance(obj, int):
        out.append(b"i%d;" % int(obj))
    elif isinstance(obj, float):
        _encode_float(float(obj), out)
    elif isinstance(obj, str):
        _encode_str(str(obj), out)
    elif isinstance(obj, (list, tuple)):
        _encode(list(obj), out)
    elif isinstance(obj, (set, frozenset)):
        items = sorted(canonical_bytes(x) for x in obj)
        out.append(b"S%d[" % len(items))
        out.extend(items)
        out.append(b"]")
    elif np is not None and isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("cannot build a canonical cache key from a numpy array of dtype object")
        arr = np.ascontiguousarray(obj)
        out.append(b"a" + arr.dtype.str.encode() + b"%r:" % (obj.shape,))
        out.append(arr.tobytes())
    elif np is not None and isinstance(obj, np.generic):
        _encode(obj.item(), out)
    elif isinstance(obj, _dt.datetime | _dt.date | _dt.time):
        out.append(b"t")
        _encode_str(obj.isoformat(), out)
    elif isinstance(obj, uuid.UUID):
        out.append(b"u" + obj.bytes)
    elif isinstance(obj, decimal.Decimal):
        out.append(b"m")
        _encode_str(str(obj.normalize()), out)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out.append(b"D")
        _encode_str(f"{t.__module__}.{t.__qualname__}", out)
        _encode({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, out)
    elif callable(getattr(obj, "model_dump", None)):  # pydantic v2 models
        out.append(b"P")
        _encode_str(f"{t.__module__}.{t.__qualname__}", out)
        _encode(obj.model_dump(mode="python"), out)
    else:
        raise TypeError(
            f"cannot build a canonical cache key from a value of type "
            f"{t.__module__}.{t.__qualname__}; use str, bytes, numbers, None, lists, dicts, "
            f"sets, numpy arrays, dataclasses, enums, or define __omnicache_key__()"
        )


def canonical_bytes(obj: Any) -> bytes:
    """Return the canonical byte encoding of ``obj``.

    Raises:
        TypeError: ``obj`` (or something inside it) has no canonical form.
    """
    out: list[bytes] = []
    _encode(obj, out)
    return b"".join(out)


def digest(obj: Any) -> str:
    """Return the 128-bit hex digest (32 characters) of ``obj``'s canonical encoding."""
    return hashlib.blake2b(canonical_bytes(obj), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheKey:
    """A fully qualified cache key: ``namespace:tenant:layer:digest``.

    Build one with `CacheKeyBuilder` rather than by hand; the constructor validates
    every part.
    """

    namespace: str
    tenant: str
    layer: str
    digest: str

    def __post_init__(self) -> None:
        validate_part("namespace", self.namespace)
        validate_part("tenant", self.tenant)
        validate_part("layer", self.layer)
        if not isinstance(self.digest, str) or not _DIGEST_RE.fullmatch(self.digest):
            raise ValueError(f"digest must be 32 lowercase hex characters, got {self.digest!r}")

    def __str__(self) -> str:
        return f"{self.namespace}:{self.tenant}:{self.layer}:{self.digest}"

    @classmethod
    def parse(cls, text: str) -> CacheKey:
        """Parse ``namespace:tenant:layer:digest`` back into a `CacheKey`.

        Raises:
            ValueError: ``text`` does not have four valid parts.
        """
        parts = text.split(":")
        if len(parts) != 4:
            raise ValueError(f"a cache key has four ':'-separated parts, got {text!r}")
        return cls(*parts)


class CacheKeyBuilder:
    """Builds `CacheKey` objects for one namespace and tenant.

    Args:
        namespace: the key namespace (an application or cache name).
        tenant: the tenant every key carries; ``"default"`` when there is one.
        algo: the seed's hash choice: only ``"blake2b"`` (the default) is accepted;
            ``"sha256"`` and ``"md5"`` raise ``ValueError`` naming the fix.

    The seed's call form ``build(cache_type, content, extra={...})`` works: ``extra``
    is one more field of the key. It returns a `CacheKey`, not a str (``str(key)``
    gives the text; every cache call takes either).

    Example:
        >>> kb = CacheKeyBuilder(namespace="app")
        >>> k = kb.build("response", {"model": "m", "temperature": 1})
        >>> k == kb.build("response", {"temperature": 1.0, "model": "m"})
        True
        >>> str(k).startswith("app:default:response:")
        True
    """

    __slots__ = ("_namespace", "_tenant")

    def __init__(
        self, namespace: str = "omnicache", tenant: str = "default", *, algo: str = KEY_ALGO
    ) -> None:
        if algo != KEY_ALGO:
            raise ValueError(algo_error("algo", algo))
        if tenant in _SEED_ALGOS:  # the seed's second positional argument was algo
            raise ValueError(algo_error("algo", tenant))
        self._namespace = validate_part("namespace", namespace)
        self._tenant = validate_part("tenant", tenant)

    @property
    def namespace(self) -> str:
        """The key namespace."""
        return self._namespace

    @property
    def tenant(self) -> str:
        """The tenant every key built here carries."""
        return self._tenant

    def for_tenant(self, tenant: str) -> CacheKeyBuilder:
        """Return a builder for the same namespace and another tenant."""
        return CacheKeyBuilder(self._namespace, tenant)

    def build(self, layer: str, *parts: Any, **fields: Any) -> CacheKey:
        """Build the key of ``parts`` and ``fields`` in ``layer``.

        Raises:
            TypeError: an input has no canonical encoding.
            ValueError: ``layer`` is not a valid key part.
        """
        payload: Any
        if fields:
            payload = (list(parts), fields)
        elif len(parts) == 1:
            payload = parts[0]
        else:
            payload = list(parts)
        return CacheKey(
            self._namespace, self._tenant, validate_part("layer", layer), digest(payload)
        )

    def __repr__(self) -> str:
        return f"CacheKeyBuilder(namespace={self._namespace!r}, tenant={self._tenant!r})"
