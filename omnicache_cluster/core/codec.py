"""Value codecs: a versioned envelope around msgpack, JSON or (opt-in, signed) pickle.

Envelope layout (5 bytes of header, then the payload)::

    b"OC" | version (1) | codec id (1) | flags (1) | payload
                                          bit 0: payload is an lz4 frame

The default codec is msgpack with extension types for tuples, sets, numpy arrays
(raw bytes + dtype + shape, no pickle), and dataclasses and pydantic models (their
fields as plain data plus the class's name; see `allow_types`). Payloads above
``compress_threshold`` bytes are lz4-compressed when that makes them smaller.

Pickle runs code when it loads, so bytes read back from shared storage (Redis, disk)
are a code-execution risk. `PickleCodec` therefore exists only when the user builds
one with a secret, and every blob carries an HMAC-SHA256 tag over its payload; a blob
whose tag does not verify is rejected before ``pickle.loads`` is ever reached. A reader
without that codec refuses pickle envelopes outright.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import pickle
import sys
import threading
from typing import Any, Final, Protocol

import msgpack

from omnicache_cluster.errors import CodecError

__all__ = [
    "CODEC_JSON",
    "CODEC_MSGPACK",
    "CODEC_PICKLE",
    "ENVELOPE_VERSION",
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "PickleCodec",
    "Serializer",
    "allow_types",
    "check_encodable",
    "check_header",
]

MAGIC: Final = b"OC"
ENVELOPE_VERSION: Final = 1
CODEC_MSGPACK: Final = 1
CODEC_JSON: Final = 2
CODEC_PICKLE: Final = 3
_FLAG_LZ4: Final = 0x01
_HEADER_LEN: Final = 5

# msgpack extension type codes
_EXT_NDARRAY: Final = 1
_EXT_TUPLE: Final = 2
_EXT_SET: Final = 3
_EXT_FROZENSET: Final = 4
_EXT_NPSCALAR: Final = 5
_EXT_OBJECT: Final = 6

# Pydantic models of these provider SDKs decode without `allow_types` (once the SDK
# is imported in the reading process: decoding never imports a module).
_SDK_MODULES: Final = (
    "openai.types.",
    "anthropic.types.",
    "google.genai.types",
    "mistralai.models.",
    "langchain_core.",
)
_allowed: dict[str, type] = {}
_allowed_lock = threading.Lock()


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_pydantic_class(cls: Any) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


def _is_data_class(cls: Any) -> bool:
    return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or _is_pydantic_class(cls))


def allow_types(*classes: type) -> None:
    """Allow values of ``classes`` (dataclasses or pydantic models) to be decoded here.

    A dataclass or pydantic model is stored as its fields (plain data) plus its class
    name, never pickled. Reading it back rebuilds it only if the name is on this
    process's allow-list: the classes given here, every class this process has
    encoded, and the pydantic models of the provider SDKs (``openai.types``,
    ``anthropic.types``...) once imported. Another name is refused (a miss for the
    reader, counted as a decode error), so bytes in shared storage can name no other
    class. Call this in a process that reads values another process wrote.

    Raises:
        TypeError: a class is neither a dataclass nor a pydantic model.
    """
    for cls in classes:
        if not _is_data_class(cls):
            raise TypeError(f"allow_types takes dataclasses and pydantic models, got {cls!r}")
    with _allowed_lock:
        for cls in classes:
            _allowed[_type_name(cls)] = cls


def _resolve_type(name: str) -> type:
    cls = _allowed.get(name)
    if cls is not None:
        return cls
    module, _, qualname = name.partition(":")
    mod = sys.modules.get(module)  # never import: importing runs a module's code
    sdk = module.startswith(_SDK_MODULES) or f"{module}." in _SDK_MODULES
    if mod is not None and sdk:
        obj: Any = mod
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if _is_pydantic_class(obj):
            return obj  # type: ignore[no-any-return]
    raise CodecError(
        f"stored value of type {module}.{qualname} refused: the type is not on this "
        f"process's allow-list; call omnicache_cluster.allow_types({qualname.split('.')[-1]}) "
        f"in the reading process"
    )


def _object_fields(obj: Any) -> tuple[type, dict[str, Any]] | None:
    """Return ``(class, fields as plain data)`` of a dataclass or pydantic model."""
    cls = type(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return cls, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if _is_pydantic_class(cls):
        return cls, obj.model_dump(mode="json")
    return None


def _rebuild(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise CodecError(f"corrupt stored {cls.__qualname__}: fields are not a map")
    try:
        if _is_pydantic_class(cls):
            return cls.model_validate(data)  # type: ignore[attr-defined]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise CodecError(f"stored {cls.__qualname__} has unknown fields {sorted(unknown)}")
        obj = cls(**{k: v for k, v in data.items() if fields[k].init})
        for k, v in data.items():
            if not fields[k].init:
                object.__setattr__(obj, k, v)
        return obj
    except CodecError:
        raise
    except Exception as exc:  # the class's own validation refused the stored fields
        raise CodecError(f"cannot rebuild a stored {cls.__qualname__}: {exc}") from None


class Codec(Protocol):
    """Turns a Python value into payload bytes and back."""

    codec_id: int

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise ``TypeError`` naming the type if it cannot."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes made by `dumps`; raise `CodecError` on bad bytes."""
        ...


def _unencodable(obj: object) -> TypeError:
    t = type(obj)
    return TypeError(
        f"cannot encode a value of type {t.__module__}.{t.__qualname__}: store plain data "
        f"(dict, list, str, numbers, bytes, numpy arrays), a dataclass or a pydantic model "
        f"(e.g. response.model_dump() for an SDK object that is neither)"
    )


class MsgpackCodec:
    """msgpack, with numpy arrays as raw bytes + dtype + shape, and tuples and sets kept."""

    codec_id = CODEC_MSGPACK

    def _default(self, obj: Any) -> msgpack.ExtType:
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(obj, np.ndarray):
                if obj.dtype.hasobject:
                    raise TypeError("cannot encode a numpy array of dtype object")
                arr = np.ascontiguousarray(obj)
                body = msgpack.packb([arr.dtype.str, list(obj.shape), arr.tobytes()])
                return msgpack.ExtType(_EXT_NDARRAY, body)
            if isinstance(obj, np.generic) and not obj.dtype.hasobject:
                return msgpack.ExtType(_EXT_NPSCALAR, msgpack.packb([obj.dtype.str, obj.tobytes()]))
        if isinstance(obj, tuple):
            return msgpack.ExtType(_EXT_TUPLE, self._pack(list(obj)))
        typed = _object_fields(obj)
        if typed is not None:
            cls, fields = typed
            name = _type_name(cls)
            if name not in _allowed:
                with _allowed_lock:  # what this process writes, it may read back
                    _allowed[name] = cls
            return msgpack.ExtType(_EXT_OBJECT, self._pack([name, fields]))
        # strict_types sends subclasses here too (OrderedDict, str enums, ...): give
        # msgpack the plain base type.
        for base in (dict, list, str, bool, int, float):
            if isinstance(obj, base):
                return base(obj)  # type: ignore[return-value]
        if isinstance(obj, bytearray | memoryview):
            return bytes(obj)  # type: ignore[return-value]
        if isinstance(obj, frozenset):
            return msgpack.ExtType(_EXT_FROZENSET, self._pack(list(obj)))
        if isinstance(obj, set):
            return msgpack.ExtType(_EXT_SET, self._pack(list(obj)))
        raise _unencodable(obj)

    def _pack(self, value: Any) -> bytes:
        # strict_types so that tuples reach ``_default`` instead of becoming lists.
        return msgpack.packb(value, default=self._default, strict_types=True, use_bin_type=True)

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_NDARRAY:
            import numpy as np

            dtype, shape, raw = msgpack.unpackb(data)
            return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
        if code == _EXT_NPSCALAR:
            import numpy as np

            dtype, raw = msgpack.unpackb(data)
            return np.frombuffer(raw, dtype=np.dtype(dtype))[0]
        if code == _EXT_OBJECT:
            body = self._unpack(data)
            if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)):
                raise CodecError("corrupt stored object: not [type name, fields]")
            return _rebuild(_resolve_type(body[0]), body[1])
        if code in (_EXT_TUPLE, _EXT_SET, _EXT_FROZENSET):
            items = self._unpack(data)
            return {_EXT_TUPLE: tuple, _EXT_SET: set, _EXT_FROZENSET: frozenset}[code](items)
        raise CodecError(f"unknown msgpack extension type {code}")

    def _unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self._ext_hook, raw=False, strict_map_key=False)

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``.

        Raises:
            TypeError: ``value`` holds an object msgpack cannot encode (named).
        """
        try:
            return self._pack(value)
        except TypeError:
            raise
        except (ValueError, OverflowError) as exc:
            raise TypeError(f"cannot encode value: {exc}") from None

    def loads(self, data: bytes) -> Any:
        """Decode msgpack bytes.

        Raises:
            CodecError: the bytes are not valid msgpack of this codec.
        """
        try:
            return self._unpack(data)
        except CodecError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            raise CodecError(f"corrupt msgpack payload: {exc}") from None


class JsonCodec:
    """Plain JSON (UTF-8): readable by any language, lossy for tuples, bytes and arrays."""

    codec_id = CODEC_JSON

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as compact JSON.

        Raises:
            TypeError: ``value`` is not JSON-serialisable (names the type).
        """
        try:
            return json.dumps(
                value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
        except TypeError as exc:
            raise TypeError(f"cannot encode value as JSON: {exc}") from None
        except ValueError as exc:
            raise TypeError(f"cannot encode value as JSON: {exc}") from None

    def loads(self, data: bytes) -> Any:
        """Decode JSON bytes.

        Raises:
            CodecError: the bytes are not valid UTF-8 JSON.
        """
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CodecError(f"corrupt JSON payload: {exc}") from None


class PickleCodec:
    """Pickle, signed with HMAC-SHA256. Only for users who opt in with a secret key.

    Args:
        secret_key: at least 16 bytes shared by every process that reads or writes.

    Raises:
        ValueError: the key is shorter than 16 bytes.
    """

    codec_id = CODEC_PICKLE
    _TAG_LEN = 32

    def __init__(self, secret_key: bytes) -> None:
        if not isinstance(secret_key, bytes) or len(secret_key) < 16:
            raise ValueError("PickleCodec needs a secret_key of at least 16 bytes")
        self._key = secret_key

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` and prefix the HMAC tag."""
        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(f"cannot pickle value: {exc}") from None
        return self._tag(payload) + payload

    def loads(self, data: bytes) -> Any:
        """Verify the tag, then unpickle.

        Raises:
            CodecError: the blob is unsigned, truncated or its tag does not verify.
        """
        if len(data) < self._TAG_LEN:
            raise CodecError("pickle blob is shorter than its signature")
        tag, payload = data[: self._TAG_LEN], data[self._TAG_LEN :]
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise CodecError("pickle blob signature does not verify; refusing to unpickle")
        try:
            return pickle.loads(payload)  # noqa: S301 - signature verified above
        except Exception as exc:
            raise CodecError(f"corrupt pickle payload: {exc}") from None


class Serializer:
    """Encodes values into envelopes and decodes envelopes of any known codec.

    Args:
        codec: the codec new values are written with (msgpack by default).
        compress_threshold: payloads larger than this many bytes are lz4-compressed
            when that makes them smaller; ``None`` turns compression off.
        pickle_codec: a `PickleCodec` to accept signed pickle envelopes on read. A
            serializer whose ``codec`` is a `PickleCodec` accepts them anyway.
    """

    __slots__ = ("_codec", "_codecs", "_threshold", "builtin_codecs")

    def __init__(
        self,
        codec: Codec | None = None,
        *,
        compress_threshold: int | None = 1024,
        pickle_codec: PickleCodec | None = None,
    ) -> None:
        self._codec: Codec = codec if codec is not None else MsgpackCodec()
        self._threshold = compress_threshold
        self._codecs: dict[int, Codec] = {CODEC_MSGPACK: MsgpackCodec(), CODEC_JSON: JsonCodec()}
        if pickle_codec is not None:
            self._codecs[CODEC_PICKLE] = pickle_codec
        self._codecs[self._codec.codec_id] = self._codec
        #: Whether the built-in ids decode with the built-in codecs (a value decoded
        #: by one such serializer is what any other would decode).
        self.builtin_codecs = type(self._codecs[CODEC_MSGPACK]) is MsgpackCodec and (
            type(self._codecs[CODEC_JSON]) is JsonCodec
        )

    @property
    def codec(self) -> Codec:
        """The codec new values are written with."""
        return self._codec

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` into an envelope.

        Raises:
            TypeError: the value cannot be encoded by the codec (names the type).
        """
        payload = self._codec.dumps(value)
        flags = 0
        if self._threshold is not None and len(payload) > self._threshold:
            import lz4.frame

            packed = lz4.frame.compress(payload)
            if len(packed) < len(payload):
                payload, flags = packed, _FLAG_LZ4
        return MAGIC + bytes((ENVELOPE_VERSION, self._codec.codec_id, flags)) + payload

    def loads(self, data: bytes) -> Any:
        """Decode an envelope.

        Raises:
            CodecError: bad magic, unknown version or codec, a pickle envelope this
                serializer was not given a key for, or a corrupt payload.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CodecError(f"an envelope is bytes, got {type(data).__qualname__}")
        data = bytes(data)
        check_header(data)
        codec_id, flags = data[3], data[4]
        codec = self._codecs.get(codec_id)
        if codec is None:
            if codec_id == CODEC_PICKLE:
                raise CodecError("pickle envelope refused: pickle is not enabled for this reader")
            raise CodecError(f"unknown codec id {codec_id}")
        payload = data[_HEADER_LEN:]
        if flags & _FLAG_LZ4:
            import lz4.frame

            try:
                payload = lz4.frame.decompress(payload)
            except RuntimeError as exc:
                raise CodecError(f"corrupt lz4 frame: {exc}") from None
        return codec.loads(payload)


_CHECKER = MsgpackCodec()


def check_encodable(value: Any) -> None:
    """Raise the `TypeError` the default codec would raise for ``value`` (naming its
    type), so a value that cannot be cached fails where it is stored, not later."""
    _CHECKER.dumps(value)


def check_header(data: bytes) -> None:
    """Check the envelope header of ``data`` without decoding its payload.

    This is the check a store that never decodes values (a shard reading bytes back
    from L2) can make: magic, version, a codec id (any non-zero one: users may
    register their own codecs; the reader refuses ids it does not know) and known
    flags. A pickle envelope passes it; whether pickle may be loaded, and only with a
    valid signature, is the reader's decision.

    Raises:
        CodecError: truncated header, bad magic, unknown version, codec id 0 or
            unknown flags.
    """
    if len(data) < _HEADER_LEN or data[:2] != MAGIC:
        raise CodecError("not an omnicache envelope (bad magic or truncated header)")
    version, codec_id, flags = data[2], data[3], data[4]
    if version != ENVELOPE_VERSION:
        raise CodecError(f"unsupported envelope version {version}")
    if codec_id == 0:
        raise CodecError("envelope codec id 0 is not a codec")
    if flags & ~_FLAG_LZ4:
        raise CodecError(f"unknown envelope flags {flags:#x}")
