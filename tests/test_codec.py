"""Value codecs and the envelope: round trips, compression, refusals and the pickle gate."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import lz4.frame
import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from omnicache_cluster.core import codec as codec_module
from omnicache_cluster.core.codec import (
    CODEC_JSON,
    CODEC_MSGPACK,
    CODEC_PICKLE,
    ENVELOPE_VERSION,
    JsonCodec,
    MsgpackCodec,
    PickleCodec,
    Serializer,
)
from omnicache_cluster.errors import CodecError, PermanentError

HEADER = 5
KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def _same(a: Any, b: Any) -> None:
    """Assert ``a`` and ``b`` are equal *and* of the same types, recursively."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert len(a) == len(b)
        for (ka, va), (kb, vb) in zip(
            sorted(a.items(), key=lambda kv: repr(kv[0])),
            sorted(b.items(), key=lambda kv: repr(kv[0])),
            strict=True,
        ):
            _same(ka, kb)
            _same(va, vb)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        _same_array(a, b)
    else:
        assert a == b, (a, b)


def _same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert isinstance(b, np.ndarray)
    assert b.dtype == a.dtype
    assert b.shape == a.shape
    # Byte comparison: exact for NaN payloads and -0.0 too.
    assert np.ascontiguousarray(b).tobytes() == np.ascontiguousarray(a).tobytes()


def _round_trip(value: Any, serializer: Serializer | None = None) -> Any:
    s = serializer if serializer is not None else Serializer()
    return s.loads(s.dumps(value))


# -- msgpack round trips ------------------------------------------------------------------

msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
hashables = st.integers(-1000, 1000) | st.text(max_size=5)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=5)
        | st.dictionaries(st.integers(-(2**63), 2**63 - 1), children, max_size=5)
        | st.sets(hashables, max_size=5)
        | st.frozensets(hashables, max_size=5)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "héllo wörld ✓",
        b"",
        b"\x00\xff" * 10,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        0.0,
        -0.0,
        1.5,
        float("inf"),
        float("-inf"),
        None,
        True,
        False,
        [],
        (),
        {},
        {"a": 1, "b": [1, 2, (3, 4)]},
        {1: "one", 2: "two"},
        {"t": (1, (2, (3,)))},
        [(), [()], {"x": ()}],
        {1, 2, 3},
        frozenset({"a", "b"}),
    ],
    ids=repr,
)
def test_msgpack_round_trip_examples(value: Any) -> None:
    _same(_round_trip(value), value)


@settings(max_examples=150, deadline=None)
@given(msgpack_values)
def test_msgpack_round_trip_hypothesis(value: Any) -> None:
    _same(_round_trip(value), value)


def test_bool_stays_bool_and_tuple_stays_tuple() -> None:
    out = _round_trip([True, 1, (1,), [1]])
    assert type(out[0]) is bool
    assert type(out[1]) is int
    assert type(out[2]) is tuple
    assert type(out[3]) is list


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1], ids=["too-big", "too-small"])
def test_msgpack_out_of_range_int_is_type_error(value: int) -> None:
    with pytest.raises(TypeError):
        Serializer().dumps(value)


# -- numpy --------------------------------------------------------------------------------

DTYPES = ["float32", "float64", "int8", "int64", "uint16", "bool", "complex64"]


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.dtype(d) for d in DTYPES]),
        shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6),
    )
)
def test_numpy_array_round_trip_hypothesis(arr: np.ndarray) -> None:
    out = _round_trip(arr)
    _same_array(arr, out)
    assert out.flags.writeable


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(), (1,), (5,), (0,), (2, 3), (0, 4), (3, 0)], ids=lambda s: f"shape{s}"
)
def test_numpy_array_round_trip_dtype_and_shape(dtype: str, shape: tuple[int, ...]) -> None:
    size = int(np.prod(shape, dtype=np.int64))
    arr = (np.arange(size) % 7).astype(dtype).reshape(shape)
    out = _round_trip(arr)
    _same_array(arr, out)


def test_zero_dim_array_keeps_its_shape() -> None:
    out = _round_trip(np.array(5, dtype=np.int64))
    assert out.shape == ()
    assert out.ndim == 0
    assert out[()] == 5


def test_numpy_non_contiguous_big_endian_and_nested() -> None:
    fortran = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    strided = np.arange(20, dtype=np.int64)[::3]
    big_endian = np.arange(4, dtype=">i4")
    value = {"f": fortran, "s": strided, "be": big_endian, "t": (np.zeros(2, np.float32),)}
    out = _round_trip(value)
    _same_array(fortran, out["f"])
    _same_array(strided, out["s"])
    _same_array(big_endian, out["be"])
    assert out["be"].dtype.str == ">i4"
    assert isinstance(out["t"], tuple)
    _same_array(value["t"][0], out["t"][0])


@pytest.mark.parametrize(
    "scalar",
    [
        np.float32(1.25),
        np.float64(-2.5),
        np.int8(-3),
        np.int64(2**40),
        np.uint16(65535),
        np.bool_(True),
        np.complex64(1 + 2j),
    ],
    ids=lambda s: type(s).__name__,
)
def test_numpy_scalar_round_trip(scalar: np.generic) -> None:
    out = _round_trip(scalar)
    assert type(out) is type(scalar)
    assert out.dtype == scalar.dtype
    assert out == scalar


# -- compression --------------------------------------------------------------------------


def test_lz4_above_threshold_sets_flag_and_shrinks() -> None:
    value = {"text": "the same sentence again. " * 400}
    raw = MsgpackCodec().dumps(value)
    s = Serializer(compress_threshold=1024)
    assert len(raw) > 1024
    env = s.dumps(value)
    assert env[:2] == b"OC"
    assert env[2] == ENVELOPE_VERSION
    assert env[3] == CODEC_MSGPACK
    assert env[4] & 0x01
    assert len(env) < len(raw)
    assert lz4.frame.decompress(env[HEADER:]) == raw
    assert s.loads(env) == value


def test_below_threshold_is_not_compressed() -> None:
    value = {"text": "short"}
    env = Serializer(compress_threshold=1024).dumps(value)
    assert env[4] == 0
    assert env[HEADER:] == MsgpackCodec().dumps(value)
    assert Serializer().loads(env) == value


def test_threshold_is_exclusive_and_configurable() -> None:
    value = b"a" * 200
    payload_len = len(MsgpackCodec().dumps(value))
    assert Serializer(compress_threshold=payload_len).dumps(value)[4] == 0
    assert Serializer(compress_threshold=payload_len - 1).dumps(value)[4] == 1
    assert Serializer(compress_threshold=None).dumps(b"a" * 100_000)[4] == 0


def test_incompressible_payload_is_stored_raw() -> None:
    value = os.urandom(8192)
    env = Serializer(compress_threshold=16).dumps(value)
    assert env[4] == 0
    assert Serializer().loads(env) == value


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=0, max_size=4000), st.integers(0, 3000))
def test_compressed_or_not_always_round_trips(data: bytes, threshold: int) -> None:
    s = Serializer(compress_threshold=threshold)
    value = [data, data]
    env = s.dumps(value)
    assert env[4] in (0, 1)
    assert Serializer().loads(env) == value


# -- JSON -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_json_round_trip(value: Any) -> None:
    s = Serializer(JsonCodec())
    env = s.dumps(value)
    assert env[3] == CODEC_JSON
    _same(s.loads(env), value)
    # Any serializer reads a JSON envelope: the codec id picks the decoder.
    _same(Serializer().loads(env), value)
    assert JsonCodec().loads(JsonCodec().dumps(value)) == value


def test_json_payload_is_plain_utf8_json() -> None:
    env = Serializer(JsonCodec(), compress_threshold=None).dumps({"k": "é", "n": [1, 2]})
    assert env[HEADER:].decode("utf-8") == '{"k":"é","n":[1,2]}'
    assert json.loads(env[HEADER:]) == {"k": "é", "n": [1, 2]}


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (b"bytes", "bytes"),
        ({1, 2}, "set"),
        (object(), "object"),
        ({"x": [object()]}, "object"),
        (float("nan"), "NaN|nan|float"),
        (np.zeros(2), "ndarray"),
    ],
    ids=["bytes", "set", "object", "nested", "nan", "ndarray"],
)
def test_json_refuses_non_json_values(value: Any, type_name: str) -> None:
    with pytest.raises(TypeError, match=type_name):
        JsonCodec().dumps(value)
    with pytest.raises(TypeError, match=type_name):
        Serializer(JsonCodec()).dumps(value)


# -- unencodable values ----------------------------------------------------------------------


class Custom:
    """A class msgpack knows nothing about."""


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (object(), r"builtins\.object"),
        ({object()}, r"builtins\.object"),
        (frozenset({Custom()}), "Custom"),
        (Custom(), "Custom"),
        ({"deep": [1, (2, Custom())]}, "Custom"),
        (np.array([1, "a"], dtype=object), "dtype object"),
        ({"arr": np.array([None], dtype=object)}, "dtype object"),
    ],
    ids=["object", "set-of-object", "frozenset", "custom", "nested", "np-object", "np-nested"],
)
def test_unencodable_value_is_type_error_naming_the_type(value: Any, pattern: str) -> None:
    with pytest.raises(TypeError, match=pattern):
        Serializer().dumps(value)


# -- pickle -----------------------------------------------------------------------------------

DETONATIONS: list[str] = []


def _detonate(path: str) -> str:
    """What a malicious pickle would run: a visible side effect in memory and on disk."""
    DETONATIONS.append(path)
    Path(path).mkdir()
    return path


class Bomb:
    """Unpickling this calls `_detonate`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_detonate, (self.path,))


class Payload:
    """An arbitrary user object only pickle can carry."""

    def __init__(self, name: str, items: list[int]) -> None:
        self.name = name
        self.items = items
        self.cycle = self

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Payload)
            and (self.name, self.items) == (other.name, other.items)
            and other.cycle is other
        )

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def bomb_path(tmp_path: Path) -> Path:
    DETONATIONS.clear()
    path = tmp_path / "detonated"
    assert not path.exists()
    return path


@pytest.fixture
def loads_spy(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every call of ``pickle.loads`` made through the codec module."""
    calls: list[bytes] = []
    real = pickle.loads

    def spy(data: bytes, *args: Any, **kwargs: Any) -> Any:
        calls.append(bytes(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(codec_module.pickle, "loads", spy)
    return calls


def _assert_not_detonated(path: Path) -> None:
    assert DETONATIONS == []
    assert not path.exists()


@pytest.mark.parametrize("key", [b"", b"short", b"x" * 15, "s" * 32, None], ids=repr)
def test_pickle_codec_needs_a_16_byte_key(key: Any) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        PickleCodec(key)


def test_pickle_codec_accepts_16_byte_key() -> None:
    assert PickleCodec(b"x" * 16).codec_id == CODEC_PICKLE


def test_pickle_round_trip_of_arbitrary_object() -> None:
    value = Payload("p", [1, 2, 3])
    writer = Serializer(PickleCodec(KEY))
    env = writer.dumps(value)
    assert env[3] == CODEC_PICKLE
    out = writer.loads(env)
    assert isinstance(out, Payload)
    assert out == value
    # A reader given the same key through ``pickle_codec`` also accepts it.
    assert Serializer(pickle_codec=PickleCodec(KEY)).loads(env) == value


def test_pickle_probe_is_live(bomb_path: Path, loads_spy: list[bytes]) -> None:
    """Control: a correctly signed bomb does go off, so the negative tests below mean something."""
    env = Serializer(PickleCodec(KEY), compress_threshold=None).dumps(Bomb(bomb_path))
    assert Serializer(PickleCodec(KEY)).loads(env) == str(bomb_path)
    assert DETONATIONS
    assert DETONATIONS[0] == str(bomb_path)
    assert len(DETONATIONS) == 1
    assert bomb_path.is_dir()
    assert len(loads_spy) == 1


def test_tampered_pickle_is_rejected_before_unpickling(
    bomb_path: Path, loads_spy: list[bytes]
) -> None:
    s = Serializer(PickleCodec(KEY), compress_threshold=None)
    env = s.dumps(Bomb(bomb_path))
    assert env[4] == 0
    tag_len = 32
    marker = str(bomb_path).encode()
    assert marker in env[HEADER + tag_len :]  # the pickle body is in the clear
    for i in range(HEADER, len(env)):
        tampered = bytearray(env)
        tampered[i] ^= 0x01
        with pytest.raises(CodecError):
            s.loads(bytes(tampered))
    # A change that leaves the pickle itself valid (a different target path) is caught too.
    other = bomb_path.with_name("detonateD")
    rewritten = env.replace(marker, str(other).encode())
    assert rewritten != env
    with pytest.raises(CodecError, match="signature"):
        s.loads(rewritten)
    assert loads_spy == []
    _assert_not_detonated(bomb_path)
    assert not other.exists()


def test_truncated_pickle_blob_is_rejected(bomb_path: Path, loads_spy: list[bytes]) -> None:
    s = Serializer(PickleCodec(KEY), compress_threshold=None)
    env = s.dumps(Bomb(bomb_path))
    for cut in (HEADER, HEADER + 1, HEADER + 31, HEADER + 32, len(env) - 1):
        with pytest.raises(CodecError):
            s.loads(env[:cut])
    assert loads_spy == []
    _assert_not_detonated(bomb_path)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "lz4"])
def test_unsigned_pickle_envelope_is_refused(
    bomb_path: Path, loads_spy: list[bytes], compressed: bool
) -> None:
    raw = pickle.dumps(Bomb(bomb_path))
    body = lz4.frame.compress(raw) if compressed else raw
    env = b"OC" + bytes((ENVELOPE_VERSION, CODEC_PICKLE, 1 if compressed else 0)) + body
    with pytest.raises(CodecError, match="pickle"):
        Serializer().loads(env)
    with pytest.raises(CodecError, match="pickle"):
        Serializer(JsonCodec()).loads(env)
    # A reader with pickle enabled still refuses it: there is no valid signature.
    with pytest.raises(CodecError):
        Serializer(pickle_codec=PickleCodec(KEY)).loads(env)
    with pytest.raises(CodecError):
        Serializer(PickleCodec(KEY)).loads(env)
    assert loads_spy == []
    _assert_not_detonated(bomb_path)


def test_pickle_signed_with_another_key_is_refused(bomb_path: Path, loads_spy: list[bytes]) -> None:
    env = Serializer(PickleCodec(KEY)).dumps(Bomb(bomb_path))
    with pytest.raises(CodecError, match="signature"):
        Serializer(PickleCodec(OTHER_KEY)).loads(env)
    with pytest.raises(CodecError, match="signature"):
        Serializer(pickle_codec=PickleCodec(OTHER_KEY)).loads(env)
    with pytest.raises(CodecError, match="pickle"):
        Serializer().loads(env)
    assert loads_spy == []
    _assert_not_detonated(bomb_path)


def test_pickle_codec_direct_loads_checks_signature(
    bomb_path: Path, loads_spy: list[bytes]
) -> None:
    raw = pickle.dumps(Bomb(bomb_path))
    codec = PickleCodec(KEY)
    with pytest.raises(CodecError):
        codec.loads(raw)
    with pytest.raises(CodecError):
        codec.loads(b"\x00" * 32 + raw)
    with pytest.raises(CodecError):
        codec.loads(b"")
    assert loads_spy == []
    _assert_not_detonated(bomb_path)


def test_signed_but_corrupt_pickle_is_codec_error() -> None:
    codec = PickleCodec(KEY)
    junk = b"definitely not a pickle"
    blob = codec._tag(junk) + junk
    with pytest.raises(CodecError, match="corrupt pickle"):
        codec.loads(blob)


def test_unpicklable_value_is_type_error() -> None:
    with pytest.raises(TypeError):
        Serializer(PickleCodec(KEY)).dumps(lambda: None)


# -- corrupt envelopes ------------------------------------------------------------------------


def _env(codec_id: int, payload: bytes, flags: int = 0, version: int = ENVELOPE_VERSION) -> bytes:
    return b"OC" + bytes((version, codec_id, flags)) + payload


GOOD = Serializer(compress_threshold=None).dumps({"a": [1, 2, 3], "b": "text" * 10})
GOOD_LZ4 = Serializer(compress_threshold=0).dumps(["repeat me"] * 200)
assert GOOD_LZ4[4] == 1

CORRUPT = {
    "empty": b"",
    "garbage": b"this is not an envelope at all",
    "one-byte": b"O",
    "magic-only": b"OC",
    "header-short": b"OC\x01\x01",
    "bad-magic": b"XX" + GOOD[2:],
    "lowercase-magic": b"oc" + GOOD[2:],
    "empty-payload": _env(CODEC_MSGPACK, b""),
    "empty-json": _env(CODEC_JSON, b""),
    "truncated": GOOD[:-1],
    "truncated-half": GOOD[: len(GOOD) // 2],
    "extra-bytes": GOOD + b"\x00",
    "version-0": _env(CODEC_MSGPACK, GOOD[HEADER:], version=0),
    "version-2": _env(CODEC_MSGPACK, GOOD[HEADER:], version=2),
    "version-255": _env(CODEC_MSGPACK, GOOD[HEADER:], version=255),
    "codec-0": _env(0, GOOD[HEADER:]),
    "codec-4": _env(4, GOOD[HEADER:]),
    "codec-255": _env(255, GOOD[HEADER:]),
    "flags-unknown": _env(CODEC_MSGPACK, GOOD[HEADER:], flags=0x02),
    "flags-high": _env(CODEC_MSGPACK, GOOD[HEADER:], flags=0x80),
    "flags-lz4-plus-unknown": GOOD_LZ4[:4] + b"\x03" + GOOD_LZ4[HEADER:],
    "lz4-flag-on-raw": _env(CODEC_MSGPACK, GOOD[HEADER:], flags=0x01),
    "lz4-garbage": _env(CODEC_MSGPACK, b"not an lz4 frame", flags=0x01),
    "lz4-empty": _env(CODEC_MSGPACK, b"", flags=0x01),
    "lz4-truncated": GOOD_LZ4[:-4],
    "lz4-truncated-header": GOOD_LZ4[: HEADER + 3],
    "lz4-of-garbage": _env(CODEC_MSGPACK, lz4.frame.compress(b"\xc1\xc1\xc1"), flags=0x01),
    "msgpack-reserved-byte": _env(CODEC_MSGPACK, b"\xc1"),
    "msgpack-unknown-ext": _env(CODEC_MSGPACK, msgpack.packb(msgpack.ExtType(99, b"x"))),
    "msgpack-bad-ndarray": _env(
        CODEC_MSGPACK, msgpack.packb(msgpack.ExtType(1, msgpack.packb(["<f8", [3], b"12"])))
    ),
    "msgpack-bad-dtype": _env(
        CODEC_MSGPACK, msgpack.packb(msgpack.ExtType(1, msgpack.packb(["nope", [1], b"1"])))
    ),
    "msgpack-object-dtype": _env(
        CODEC_MSGPACK, msgpack.packb(msgpack.ExtType(1, msgpack.packb(["|O", [1], b"\0" * 8])))
    ),
    "msgpack-bad-scalar": _env(
        CODEC_MSGPACK, msgpack.packb(msgpack.ExtType(5, msgpack.packb(["<f8", b""])))
    ),
    "msgpack-ext-not-msgpack": _env(CODEC_MSGPACK, msgpack.packb(msgpack.ExtType(2, b"\xc1"))),
    "msgpack-unhashable-set": _env(
        CODEC_MSGPACK, msgpack.packb(msgpack.ExtType(3, msgpack.packb([[1], [2]])))
    ),
    "msgpack-deep": _env(CODEC_MSGPACK, b"\x91" * 100_000 + b"\xc0"),
    "json-bad": _env(CODEC_JSON, b"{not json"),
    "json-bad-utf8": _env(CODEC_JSON, b'"\xff\xfe\xfa"'),
    "json-deep": _env(CODEC_JSON, b"[" * 100_000 + b"]" * 100_000),
}


@pytest.mark.parametrize("data", list(CORRUPT.values()), ids=list(CORRUPT))
def test_corrupt_envelope_is_codec_error(data: bytes) -> None:
    for s in (Serializer(), Serializer(JsonCodec()), Serializer(pickle_codec=PickleCodec(KEY))):
        with pytest.raises(CodecError):
            s.loads(data)


@pytest.mark.parametrize(
    "data", [None, "OC\x01\x01\x00\xc0", 12345, ["OC"], {"a": 1}, 1.5], ids=repr
)
def test_non_bytes_input_is_codec_error(data: Any) -> None:
    with pytest.raises(CodecError, match="bytes"):
        Serializer().loads(data)


def test_bytes_like_inputs_are_accepted() -> None:
    s = Serializer()
    assert s.loads(bytearray(GOOD)) == s.loads(GOOD)
    assert s.loads(memoryview(GOOD)) == s.loads(GOOD)


def test_codec_error_is_permanent() -> None:
    assert issubclass(CodecError, PermanentError)


@settings(max_examples=300, deadline=None)
@given(
    codec_id=st.sampled_from([CODEC_MSGPACK, CODEC_JSON, CODEC_PICKLE]),
    flags=st.sampled_from([0, 1]),
    payload=st.binary(max_size=200),
)
def test_fuzzed_payloads_decode_or_raise_codec_error(
    codec_id: int, flags: int, payload: bytes
) -> None:
    data = _env(codec_id, payload, flags)
    for s in (Serializer(), Serializer(pickle_codec=PickleCodec(KEY))):
        with contextlib.suppress(CodecError):
            s.loads(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_fuzzed_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        Serializer().loads(data)


def test_direct_codec_loads_raise_codec_error() -> None:
    with pytest.raises(CodecError):
        MsgpackCodec().loads(b"\xc1")
    with pytest.raises(CodecError):
        JsonCodec().loads(b"{")
    with pytest.raises(CodecError):
        JsonCodec().loads(b"\xff")
