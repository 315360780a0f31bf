"""The durable byte stores on their own: the record format, Redis (a real server) and
disk (a real SQLite file, shared by two processes)."""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
import time

import msgpack
import pytest
import redis

from omnicache_cluster import MISS, CodecError, ConfigError, DiskBackend, L2Unavailable
from omnicache_cluster.backends.base import Record, decode_record, encode_record
from omnicache_cluster.backends.disk import DB_NAME, DiskStore
from omnicache_cluster.backends.redis import AsyncRedisStore, RedisBackend, RedisStore
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.testing import free_port
from tests.conftest import unique

ENVELOPE = Serializer().dumps({"answer": 42})


class _Boom:
    """Unpickling this creates a directory: proof that nobody unpickled it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# -- the record format ----------------------------------------------------------------


def test_record_round_trips():
    record = Record(ENVELOPE, 1234.5, ("ns:t:a", "ns:t:b"), "acme")
    assert decode_record(encode_record(record)) == record
    plain = Record(ENVELOPE)
    assert decode_record(encode_record(plain)) == plain


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not an omnicache L2 record"),
        (b"\x00garbage bytes", "not an omnicache L2 record"),
        (b"OL\x07" + msgpack.packb([ENVELOPE, None, [], "t"]), "version 7"),
        (encode_record(Record(ENVELOPE))[:-6], "corrupt"),
        (b"OL\x01" + msgpack.packb({"a": 1}), "corrupt"),
        (b"OL\x01" + msgpack.packb([ENVELOPE, None, []]), "4-field"),
        (b"OL\x01" + msgpack.packb(["str", None, [], "t"]), "value is not bytes"),
        (b"OL\x01" + msgpack.packb([ENVELOPE, "soon", [], "t"]), "expiry"),
        (b"OL\x01" + msgpack.packb([ENVELOPE, float("inf"), [], "t"]), "expiry"),
        (b"OL\x01" + msgpack.packb([ENVELOPE, None, [1], "t"]), "tags"),
        (b"OL\x01" + msgpack.packb([ENVELOPE, None, [], ""]), "tenant"),
        (b"OL\x01" + msgpack.packb([b"not an envelope", None, [], "t"]), "envelope"),
        (b"OL\x01" + msgpack.packb([ENVELOPE[:3], None, [], "t"]), "envelope"),
        (b"OL\x01" + msgpack.packb([b"OC\x09\x01\x00x", None, [], "t"]), "envelope version"),
        (
            b"OL\x01" + msgpack.packb([msgpack.ExtType(1, b"x"), None, [], "t"]),
            "extension",
        ),
    ],
)
def test_bad_records_raise_codec_error(data, match):
    with pytest.raises(CodecError, match=match):
        decode_record(data)


# -- Redis ------------------------------------------------------------------------------


@pytest.fixture
def prefix():
    return unique("l2") + ":"


@pytest.fixture
def raw(redis_server):
    client = redis.Redis.from_url(redis_server)
    yield client
    client.close()


def test_redis_store_keeps_ttl_in_redis_and_tag_sets_live_as_long_as_members(
    redis_server, raw, prefix
):
    store = RedisStore(redis_server, key_prefix=prefix)
    now = time.time()
    store.set_many(
        [
            ("ns:t:l:a", Record(ENVELOPE, now + 30, ("ns:t:x",), "t")),
            ("ns:t:l:b", Record(ENVELOPE, now + 100, ("ns:t:x",), "t")),
            ("ns:t:l:c", Record(ENVELOPE, None, ("ns:t:y",), "t")),
            ("ns:t:l:gone", Record(ENVELOPE, now - 1, ("ns:t:x",), "t")),
        ]
    )
    assert 29_000 < raw.pttl(f"{prefix}k:ns:t:l:a") <= 30_000
    assert raw.pttl(f"{prefix}k:ns:t:l:c") == -1
    assert raw.exists(f"{prefix}k:ns:t:l:gone") == 0
    assert 99_000 < raw.pttl(f"{prefix}t:ns:t:x") <= 100_000  # the longest member
    assert raw.pttl(f"{prefix}t:ns:t:y") == -1
    store.set_many([("ns:t:l:d", Record(ENVELOPE, None, ("ns:t:x",), "t"))])
    assert raw.pttl(f"{prefix}t:ns:t:x") == -1  # a member without expiry
    assert sorted(store.tagged("ns:t:x")) == ["ns:t:l:a", "ns:t:l:b", "ns:t:l:d"]
    assert sorted(store.keys("ns:t:")) == ["ns:t:l:a", "ns:t:l:b", "ns:t:l:c", "ns:t:l:d"]
    # Re-tagged and deleted members are not reported, and are dropped from the set.
    store.set_many([("ns:t:l:a", Record(ENVELOPE, None, ("ns:t:z",), "t"))])
    raw.delete(f"{prefix}k:ns:t:l:b")
    assert store.tagged("ns:t:x") == ["ns:t:l:d"]
    assert raw.smembers(f"{prefix}t:ns:t:x") == {b"ns:t:l:d"}
    assert store.delete_many(["ns:t:l:d", "ns:t:l:none"]) == [True, False]
    assert raw.exists(f"{prefix}t:ns:t:x") == 0
    store.close()


def test_redis_keys_with_glob_characters_are_matched_literally(redis_server, prefix):
    store = RedisStore(redis_server, key_prefix=prefix + "[*?]")
    store.set_many([("a*:1", Record(ENVELOPE)), ("ab:2", Record(ENVELOPE))])
    assert store.keys("a*") == ["a*:1"]
    store.close()


def test_corrupt_bytes_in_redis_are_a_miss_and_a_metric(redis_server, raw, prefix, tmp_path):
    backend = RedisBackend(redis_server, key_prefix=prefix)
    marker = str(tmp_path / "unpickled")
    garbage = {
        "garbage": b"\x93\x00garbage",
        "truncated": encode_record(Record(ENVELOPE))[:-4],
        "raw pickle": pickle.dumps(_Boom(marker)),
        "wrong version": b"OL\x02" + msgpack.packb([ENVELOPE, None, [], "default"]),
        # A well-formed record around an unsigned pickle envelope: the reader refuses it.
        "unsigned pickle envelope": encode_record(
            Record(b"OC\x01\x03\x00" + pickle.dumps(_Boom(marker)))
        ),
    }
    for name, data in garbage.items():
        raw.set(f"{prefix}k:{backend.key(name)}", data)
    assert backend.get_many(list(garbage)) == [MISS] * len(garbage)
    assert not os.path.exists(marker)
    stats = backend.stats()
    assert stats["corrupt"] == 4  # the record layer refused four ...
    assert stats["decode_errors"] == 1  # ... and the codec the unsigned pickle
    assert stats["misses"] == len(garbage)
    backend.set("garbage", "repaired")
    assert backend.get("garbage") == "repaired"
    backend.close()


def test_redis_down_raises_l2_unavailable_quickly_and_hides_the_password():
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    store = RedisStore(url, connect_timeout_s=0.2, socket_timeout_s=0.2)
    t0 = time.monotonic()
    with pytest.raises(L2Unavailable) as info:
        store.get_many(["k"])
    assert time.monotonic() - t0 < 2
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)
    assert "s3cret" not in repr(store)
    with pytest.raises(L2Unavailable):
        store.set_many([("k", Record(ENVELOPE))])


async def test_async_redis_store_matches_the_sync_one(redis_server, prefix):
    sync, store = (
        RedisStore(redis_server, key_prefix=prefix),
        AsyncRedisStore(redis_server, key_prefix=prefix),
    )
    await store.set_many([("ns:t:l:a", Record(ENVELOPE, None, ("tag",), "t"))])
    assert sync.get_many(["ns:t:l:a"]) == await store.get_many(["ns:t:l:a"])
    assert await store.tagged("tag") == ["ns:t:l:a"] == sync.tagged("tag")
    assert await store.keys("ns:") == ["ns:t:l:a"]
    assert await store.exists_many(["ns:t:l:a", "x"]) == [True, False]
    assert await store.delete_many(["ns:t:l:a"]) == [True]
    assert sync.get_many(["ns:t:l:a"]) == [None]
    await store.close()
    sync.close()


def test_redis_options_reach_the_connection():
    import redis.connection

    store = RedisStore(
        "redis://cache.example:6380/2",
        password="pw",  # noqa: S106 - a test value, no server behind it
        tls=True,
        tls_ca_certs="~/ca.pem",
        tls_verify=False,
        socket_timeout_s=0.3,
    )
    pool = store._redis().connection_pool
    assert pool.connection_class is redis.connection.SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.example", 6380, 2)
    assert kwargs["password"] == "pw"  # noqa: S105 - the test value above
    assert kwargs["ssl_ca_certs"].endswith("/ca.pem")
    assert "~" not in kwargs["ssl_ca_certs"]
    assert kwargs["ssl_cert_reqs"] == "none"
    assert kwargs["socket_timeout"] == 0.3
    store.close()
    with pytest.raises(ConfigError, match="redis://"):
        RedisStore("http://localhost:6379")
    with pytest.raises(ConfigError, match="socket_timeout_s"):
        RedisStore("redis://localhost", socket_timeout_s=0)


# -- disk -------------------------------------------------------------------------------


def test_disk_survives_a_restart_with_tags_and_ttls(tmp_path):
    first = DiskBackend(tmp_path)
    first.set_many({"a": 1, "b": 2}, tags=["t"])
    first.set("short", "s", ttl=0.2)
    first.set("long", "l", ttl=60)
    first.close()
    time.sleep(0.3)
    again = DiskBackend(tmp_path)  # a new process would open the file the same way
    assert again.get_many(["a", "b", "short", "long"]) == [1, 2, MISS, "l"]
    assert again.invalidate("t") == 2
    assert again.get("a") is MISS
    again.close()


def test_disk_is_shared_safely_by_two_processes(tmp_path, python_env):
    script = f"""
from omnicache_cluster import DiskBackend
b = DiskBackend({str(tmp_path)!r})
for i in range(200):
    b.set_many({{f"child-{{i}}-{{j}}": j for j in range(5)}}, tags=["child"])
"""
    child = subprocess.Popen([sys.executable, "-c", script], env=python_env)
    mine = DiskBackend(tmp_path)
    for i in range(200):
        mine.set_many({f"parent-{i}-{j}": j for j in range(5)}, tags=["parent"])
    assert child.wait(timeout=120) == 0
    keys = [f"{who}-{i}-{j}" for who in ("child", "parent") for i in range(200) for j in range(5)]
    assert mine.get_many(keys) == [int(k.rsplit("-", 1)[1]) for k in keys]
    assert mine.invalidate("child") == 1000
    mine.close()


def test_corrupt_rows_on_disk_are_a_miss_and_counted(tmp_path):
    backend = DiskBackend(tmp_path)
    backend.set_many({"good": 1, "bad": 2})
    db = sqlite3.connect(tmp_path / DB_NAME)  # a damaged file, as far as one row goes
    with db:
        db.execute("UPDATE entries SET record = ? WHERE key = ?", (b"\xff\x00", backend.key("bad")))
    db.close()
    assert backend.get_many(["good", "bad"]) == [1, MISS]
    assert backend.stats()["corrupt"] == 1
    backend.close()


def test_disk_path_errors_are_config_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot open"):
        DiskStore(blocker / "sub")
    with pytest.raises(ConfigError, match="synchronous"):
        DiskStore(tmp_path, synchronous="sometimes")
