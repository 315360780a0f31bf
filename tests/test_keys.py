"""Canonical cache keys: stability, distinctness, refusals and `CacheKey` validation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import os
import re
import subprocess
import sys
import unicodedata
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnicache_cluster.core.keys import (
    MAX_PART_LEN,
    CacheKey,
    CacheKeyBuilder,
    canonical_bytes,
    digest,
    validate_part,
)

ROOT = Path(__file__).resolve().parents[1]
HEX32 = re.compile(r"[0-9a-f]{32}")

# -- strategies -------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


# -- canonical equality -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    items=st.dictionaries(st.text(max_size=10) | st.integers(), values, max_size=8),
    data=st.data(),
)
def test_dict_insertion_order_does_not_matter(items: dict, data: st.DataObject) -> None:
    pairs = list(items.items())
    shuffled = data.draw(st.permutations(pairs))
    a = dict(pairs)
    b = dict(shuffled)
    assert digest(a) == digest(b)
    # Nested dicts too.
    assert digest({"outer": a, "x": [a]}) == digest({"x": [b], "outer": b})


def test_dict_order_explicit() -> None:
    a = {"model": "m", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]}
    b = {"messages": [{"content": "hi", "role": "user"}], "temperature": 0.5, "model": "m"}
    assert list(a) != list(b)
    assert canonical_bytes(a) == canonical_bytes(b)
    assert digest(a) == digest(b)


@pytest.mark.parametrize("text", ["é", "café", "Ångström", "ñandú", "ﬁ", "한국어"])
def test_unicode_normalisation_nfc_vs_nfd(text: str) -> None:
    nfc = unicodedata.normalize("NFC", text)
    nfd = unicodedata.normalize("NFD", text)
    assert digest(nfc) == digest(nfd)
    assert digest({nfc: [nfc]}) == digest({nfd: [nfd]})


def test_composed_and_decomposed_e_are_different_strings_but_one_key() -> None:
    composed, decomposed = "\u00e9", "e\u0301"
    assert composed != decomposed
    assert digest(composed) == digest(decomposed)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_unicode_normal_forms_hypothesis(text: str) -> None:
    base = digest(text)
    assert digest(unicodedata.normalize("NFC", text)) == base
    assert digest(unicodedata.normalize("NFD", text)) == base


def test_int_and_integral_float_are_one_key() -> None:
    assert digest(1) == digest(1.0)
    assert digest(-7) == digest(-7.0)
    assert digest(0) == digest(-0.0)
    assert digest({"temperature": 1}) == digest({"temperature": 1.0})


def test_float_arithmetic_drift_is_one_key() -> None:
    assert 0.1 + 0.2 != 0.3
    assert digest(0.1 + 0.2) == digest(0.3)
    assert digest([0.1 + 0.2]) == digest([0.3])


def test_list_and_tuple_are_one_sequence() -> None:
    assert digest([1, "a"]) == digest((1, "a"))


def test_set_order_does_not_matter() -> None:
    assert digest({"b", "a", "c"}) == digest({"c", "a", "b"})
    assert digest(frozenset({3, 1, 2})) == digest({1, 2, 3})


# -- canonical distinctness ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("a", b"a"),
        ([1], {1}),
        (True, 1),
        (False, 0),
        (None, 0),
        (None, ""),
        (None, False),
        ("1", 1),
        ([], {}),
        ([], ""),
        ([[1], [2]], [[1, 2]]),
        (["ab"], ["a", "b"]),
        ({"a": 1, "b": 2}, {"a": 2, "b": 1}),
        ({"a": "b"}, ["a", "b"]),
        (0.1, 0.2),
        (1.5, 1),
        (float("inf"), float("-inf")),
        ("", b""),
    ],
    ids=repr,
)
def test_different_inputs_give_different_keys(a: object, b: object) -> None:
    assert canonical_bytes(a) != canonical_bytes(b)
    assert digest(a) != digest(b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(), min_size=2, max_size=2, unique=True))
def test_distinct_ints_differ(pair: list[int]) -> None:
    a, b = pair
    assert digest(a) != digest(b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=2, max_size=2))
def test_distinct_strings_differ_after_normalisation(pair: list[str]) -> None:
    a, b = pair
    same = unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b)
    assert (digest(a) == digest(b)) == same


def test_bool_and_int_are_distinct_even_inside_containers() -> None:
    assert digest([True, False]) != digest([1, 0])
    assert digest({"flag": True}) != digest({"flag": 1})


# -- digest shape and cross-process stability ----------------------------------------------


@settings(max_examples=50, deadline=None)
@given(values)
def test_digest_is_32_lowercase_hex(value: object) -> None:
    d = digest(value)
    assert isinstance(d, str)
    assert HEX32.fullmatch(d), d
    assert len(bytes.fromhex(d)) * 8 == 128


# Evaluated both here and in a child process with another hash seed. Sets of strings are
# the interesting case: their iteration order depends on PYTHONHASHSEED.
_STABLE_INPUTS_SRC = """[
    "hello",
    "café",
    b"\\x00\\xff",
    0, 1, -1, 2**70, 2.5, 0.1 + 0.2, 1e-300, float("inf"),
    True, False, None,
    [1, "a", b"b", None],
    {"model": "m", "temperature": 0.7, "stop": ["a", "b"]},
    {"zeta", "alpha", "mu", "beta", "omega", "kappa"},
    frozenset({"x", "y", "z", "w"}),
    {1: "one", "1": "string one"},
    [{"nested": {"deeper": [1, 2, {"k": "v"}]}}],
]"""

_CHILD_SCRIPT = f"""
import json
from omnicache_cluster.core.keys import digest
inputs = {_STABLE_INPUTS_SRC}
print(json.dumps([digest(x) for x in inputs]))
"""


def _child_digests(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_digests_stable_across_processes_and_hash_seeds() -> None:
    inputs = eval(_STABLE_INPUTS_SRC)  # noqa: S307 - our own literal source
    here = [digest(x) for x in inputs]
    assert len(set(here)) == len(here)
    assert _child_digests("123") == here
    assert _child_digests("98765") == here


# -- refusals ------------------------------------------------------------------------------


class Opaque:
    """No canonical form."""


class Loud:
    """Records any attempt to turn it into text."""

    calls: list[str] = []  # noqa: RUF012

    def __str__(self) -> str:
        Loud.calls.append("str")
        return "loud"

    def __repr__(self) -> str:
        Loud.calls.append("repr")
        return "Loud()"

    def __format__(self, spec: str) -> str:
        Loud.calls.append("format")
        return "loud"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        (Opaque(), "Opaque"),
        (lambda: None, "function"),
        ([1, {"x": Opaque()}], "Opaque"),
        ({"k": object()}, "object"),
        ({Opaque()}, "Opaque"),
    ],
    ids=["object", "custom", "lambda", "nested-custom", "nested-object", "in-set"],
)
def test_values_without_canonical_form_raise_type_error(value: object, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        digest(value)


def test_custom_type_error_names_module_and_qualname() -> None:
    with pytest.raises(TypeError) as info:
        canonical_bytes(Opaque())
    assert f"{Opaque.__module__}.{Opaque.__qualname__}" in str(info.value)


def test_refused_value_is_never_stringified() -> None:
    Loud.calls.clear()
    with pytest.raises(TypeError, match="Loud"):
        digest({"a": [Loud()]})
    assert Loud.calls == []


def test_numpy_object_array_is_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        digest(np.array([1, "a", None], dtype=object))


# -- supported rich types ------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class OtherPoint:
    x: int
    y: int


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1


class Prompt:
    def __init__(self, text: str, ignored: object = None) -> None:
        self.text = text
        self.ignored = ignored  # not part of the key, and has no canonical form

    def __omnicache_key__(self) -> object:
        return {"prompt": self.text}


def test_dataclass_keys() -> None:
    assert digest(Point(1, 2)) == digest(Point(1, 2))
    assert digest(Point(1, 2)) != digest(Point(2, 1))
    assert digest(Point(1, 2)) != digest(OtherPoint(1, 2))
    assert digest(Point(1, 2)) != digest({"x": 1, "y": 2})


def test_dataclass_class_itself_is_not_treated_as_instance() -> None:
    with pytest.raises(TypeError):
        digest(Point)


def test_enum_keys() -> None:
    assert digest(Color.RED) == digest(Color.RED)
    assert digest(Color.RED) != digest(Color.GREEN)
    assert digest(Color.RED) != digest(1)
    assert digest(Level.LOW) != digest(1)
    assert digest(Level.LOW) != digest(Color.RED)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.arange(6, dtype=np.int32), np.arange(6, dtype=np.int64)),
        (np.arange(6, dtype=np.float32), np.arange(6, dtype=np.float64)),
        (np.arange(6).reshape(2, 3), np.arange(6).reshape(3, 2)),
        (np.arange(6).reshape(2, 3), np.arange(6)),
        (np.array(5), np.array([5])),
        (np.zeros((0,)), np.zeros((0, 2))),
        (np.array([1, 2, 3]), np.array([1, 2, 4])),
    ],
    ids=["int-width", "float-width", "shape-2x3-3x2", "shape-2d-1d", "0d-vs-1d", "empty", "value"],
)
def test_numpy_dtype_shape_and_values_matter(a: np.ndarray, b: np.ndarray) -> None:
    assert digest(a) != digest(b)


def test_numpy_same_array_same_key_regardless_of_memory_layout() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert digest(a) == digest(a.copy())
    assert digest(a) == digest(np.asfortranarray(a))
    strided = np.arange(24, dtype=np.float64)[::2].reshape(3, 4)
    assert digest(strided) == digest(np.ascontiguousarray(strided))
    assert digest(strided) != digest(a)


def test_numpy_scalars_match_python_numbers() -> None:
    assert digest(np.int64(3)) == digest(3)
    assert digest(np.float64(0.25)) == digest(0.25)
    assert digest(np.bool_(True)) == digest(True)


def test_datetime_keys() -> None:
    t = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    assert digest(t) == digest(dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC))
    assert digest(t) != digest(t + dt.timedelta(microseconds=1))
    assert digest(t) != digest(t.replace(tzinfo=None))
    assert digest(dt.date(2024, 5, 1)) != digest(dt.datetime(2024, 5, 1))
    assert digest(dt.time(1, 2, 3)) != digest(dt.time(1, 2, 4))
    assert digest(dt.date(2024, 5, 1)) != digest("2024-05-01")


def test_uuid_keys() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert digest(u) == digest(uuid.UUID(str(u)))
    assert digest(u) != digest(uuid.UUID(int=u.int + 1))
    assert digest(u) != digest(str(u))
    assert digest(u) != digest(u.bytes)


def test_decimal_keys_are_normalised() -> None:
    assert digest(decimal.Decimal("1.0")) == digest(decimal.Decimal("1.00"))
    assert digest(decimal.Decimal("1.1")) != digest(decimal.Decimal("1.2"))


def test_omnicache_key_hook() -> None:
    a = Prompt("hi", ignored=object())
    b = Prompt("hi", ignored=Opaque())
    assert digest(a) == digest(b)
    assert digest(a) != digest(Prompt("bye"))
    # The hook is tagged: it is not the same key as its return value on its own.
    assert digest(a) != digest({"prompt": "hi"})


def test_omnicache_key_hook_result_must_be_canonical() -> None:
    class Bad:
        def __omnicache_key__(self) -> object:
            return Opaque()

    with pytest.raises(TypeError, match="Opaque"):
        digest(Bad())


# -- key parts and CacheKey ----------------------------------------------------------------

DIGEST = "0123456789abcdef0123456789abcdef"
PARTS = ("namespace", "tenant", "layer")


def _key_kwargs(**override: object) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "namespace": "app",
        "tenant": "acme",
        "layer": "response",
        "digest": DIGEST,
    }
    kwargs.update(override)
    return kwargs


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize(
    "bad",
    ["", "x" * (MAX_PART_LEN + 1), "a:b", ":", "has space", "tab\t", "é", "new\nline", "a:"],
    ids=["empty", "129", "colon", "only-colon", "space", "tab", "non-ascii", "newline", "trail"],
)
def test_cache_key_rejects_bad_parts(part: str, bad: str) -> None:
    with pytest.raises(ValueError, match=part):
        CacheKey(**_key_kwargs(**{part: bad}))


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize("bad", [None, 1, b"app", ["app"]], ids=repr)
def test_cache_key_rejects_non_str_parts(part: str, bad: object) -> None:
    with pytest.raises(TypeError, match=part):
        CacheKey(**_key_kwargs(**{part: bad}))


def test_parts_at_the_length_limit_and_all_allowed_characters_are_accepted() -> None:
    longest = "a" * MAX_PART_LEN
    assert len(longest) == 128
    k = CacheKey(longest, "A-z_0.9@+=/-", "x", DIGEST)
    assert k.namespace == longest
    assert validate_part("layer", "emb/v2") == "emb/v2"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        DIGEST.upper(),
        DIGEST[:-1],
        DIGEST + "0",
        "g" * 32,
        DIGEST[:-1] + " ",
        None,
        int(DIGEST, 16),
    ],
    ids=["empty", "upper", "31", "33", "non-hex", "space", "none", "int"],
)
def test_cache_key_rejects_bad_digest(bad: object) -> None:
    with pytest.raises(ValueError, match="digest"):
        CacheKey(**_key_kwargs(digest=bad))


def test_cache_key_str_and_parse_round_trip() -> None:
    k = CacheKey("app", "acme", "emb/v2", DIGEST)
    text = str(k)
    assert text == f"app:acme:emb/v2:{DIGEST}"
    assert CacheKey.parse(text) == k


@settings(max_examples=50, deadline=None)
@given(
    parts=st.lists(
        st.text(alphabet="abcXYZ019_.@+=/-", min_size=1, max_size=MAX_PART_LEN),
        min_size=3,
        max_size=3,
    ),
    value=values,
)
def test_cache_key_parse_round_trip_hypothesis(parts: list[str], value: object) -> None:
    k = CacheKey(*parts, digest(value))
    assert CacheKey.parse(str(k)) == k


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a:b:c",
        f"a:b:c:d:{DIGEST}",
        f"a::c:{DIGEST}",
        f"a:b:c:{DIGEST.upper()}",
        "a:b:c:notahexdigest",
    ],
)
def test_cache_key_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - message varies by part
        CacheKey.parse(text)


def test_cache_key_is_frozen_and_hashable() -> None:
    k = CacheKey("app", "acme", "response", DIGEST)
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.tenant = "other"  # type: ignore[misc]
    assert {k: 1}[CacheKey("app", "acme", "response", DIGEST)] == 1


# -- CacheKeyBuilder -----------------------------------------------------------------------


def test_builder_defaults_and_build() -> None:
    kb = CacheKeyBuilder()
    assert (kb.namespace, kb.tenant) == ("omnicache", "default")
    k = kb.build("response", {"model": "m", "temperature": 1})
    assert isinstance(k, CacheKey)
    assert (k.namespace, k.tenant, k.layer) == ("omnicache", "default", "response")
    assert k.digest == digest({"model": "m", "temperature": 1})
    assert k == kb.build("response", {"temperature": 1.0, "model": "m"})
    assert str(k).startswith("omnicache:default:response:")


def test_builder_payload_shapes() -> None:
    kb = CacheKeyBuilder("app", "t1")
    assert kb.build("l", 1, 2).digest == digest([1, 2])
    assert kb.build("l", "a", x=1).digest == digest([["a"], {"x": 1}])
    assert kb.build("l", x=1, y=2) == kb.build("l", y=2, x=1)
    assert kb.build("l", x=1) != kb.build("l", x=2)
    assert kb.build("l", "q") != kb.build("m", "q")


def test_builder_validates_layer_and_inputs() -> None:
    kb = CacheKeyBuilder("app")
    with pytest.raises(ValueError, match="layer"):
        kb.build("bad:layer", "x")
    with pytest.raises(ValueError, match="layer"):
        kb.build("", "x")
    with pytest.raises(TypeError, match="layer"):
        kb.build(3, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Opaque"):
        kb.build("l", Opaque())


def test_builder_validates_namespace_and_tenant() -> None:
    with pytest.raises(ValueError, match="namespace"):
        CacheKeyBuilder("a:b")
    with pytest.raises(ValueError, match="tenant"):
        CacheKeyBuilder("app", "t" * (MAX_PART_LEN + 1))
    with pytest.raises(TypeError, match="tenant"):
        CacheKeyBuilder("app", None)  # type: ignore[arg-type]


def test_builder_for_tenant() -> None:
    kb = CacheKeyBuilder("app", "acme")
    other = kb.for_tenant("globex")
    assert isinstance(other, CacheKeyBuilder)
    assert (other.namespace, other.tenant) == ("app", "globex")
    assert (kb.namespace, kb.tenant) == ("app", "acme")  # unchanged
    a, b = kb.build("l", "same input"), other.build("l", "same input")
    assert a.digest == b.digest
    assert a != b
    assert str(b) == f"app:globex:l:{a.digest}"
    with pytest.raises(ValueError, match="tenant"):
        kb.for_tenant("bad tenant")
    assert "globex" in repr(other)
