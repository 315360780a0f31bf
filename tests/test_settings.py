"""`OmnicacheSettings.from_env`, `L2Config` and `CacheManager.from_settings`."""

from __future__ import annotations

import time

import pytest

from omnicache_cluster import (
    MISS,
    CacheManager,
    ConfigError,
    DiskBackend,
    InMemoryBackend,
    L2Config,
    OmnicacheSettings,
    RedisBackend,
)


def test_defaults_are_the_seeds():
    s = OmnicacheSettings.from_env({})
    assert s.backend == "memory"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.disk_path == "/tmp/omnicache"
    assert s.default_ttl == 3600
    assert s.namespace == "omnicache"
    assert s.semantic_threshold == 0.95
    assert s.ttl_for("embedding") == 86400
    assert s.ttl_for("response") == 600
    assert s.ttl_for("default") == 3600
    assert (s.num_shards, s.ray_namespace, s.l2_write_mode) == (2, "omnicache", "write_through")
    assert s.l2_config() is None


def test_every_variable_is_read():
    env = {
        "OMNICACHE_BACKEND": "Redis",
        "OMNICACHE_REDIS_URL": "redis://:pw@10.0.0.5:6380/3",
        "OMNICACHE_DISK_PATH": "/var/cache/oc",
        "OMNICACHE_DEFAULT_TTL": "0",
        "OMNICACHE_NAMESPACE": "myapp",
        "OMNICACHE_SEMANTIC_THRESHOLD": "0.9",
        "OMNICACHE_TTL_RESPONSE": "30",
        "OMNICACHE_TTL_CONTEXT": "0",
        "OMNICACHE_TTL_AGENT_STEP": "5",
        "OMNICACHE_NUM_SHARDS": "4",
        "OMNICACHE_RAY_NAMESPACE": "prod",
        "OMNICACHE_MAX_BYTES_PER_SHARD": "1048576",
        "OMNICACHE_L2_WRITE_MODE": "write_behind",
        "OMNICACHE_L2_QUEUE_MAX": "500",
        "OMNICACHE_L2_FLUSH_INTERVAL": "0.5",
        "OMNICACHE_REDIS_KEY_PREFIX": "app1:",
        "OMNICACHE_REDIS_PASSWORD": "hunter2",
        "OMNICACHE_REDIS_TLS": "yes",
        "OMNICACHE_REDIS_TLS_CA_CERTS": "/etc/ca.pem",
    }
    s = OmnicacheSettings.from_env(env)
    assert s.backend == "redis"
    assert s.default_ttl is None
    assert (s.ttl_for("response"), s.ttl_for("context"), s.ttl_for("agent_step")) == (30, None, 5)
    assert s.ttl_for("embedding") == 86400
    assert (s.namespace, s.semantic_threshold, s.num_shards) == ("myapp", 0.9, 4)
    assert (s.ray_namespace, s.max_bytes_per_shard) == ("prod", 1048576)
    l2 = s.l2_config()
    assert l2 is not None
    assert (l2.kind, l2.url, l2.key_prefix) == ("redis", "redis://:pw@10.0.0.5:6380/3", "app1:")
    assert (l2.write_mode, l2.queue_max, l2.flush_interval_s) == ("write_behind", 500, 0.5)
    assert (l2.password, l2.tls, l2.tls_ca_certs) == ("hunter2", True, "/etc/ca.pem")
    for text in (repr(s), repr(l2), l2.where()):
        assert "hunter2" not in text
        assert ":pw@" not in text


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("BACKEND", "memcached"),
        ("DEFAULT_TTL", "an hour"),
        ("DEFAULT_TTL", "-5"),
        ("DEFAULT_TTL", "nan"),
        ("SEMANTIC_THRESHOLD", "1.5"),
        ("NUM_SHARDS", "0"),
        ("NUM_SHARDS", "2.5"),
        ("NAMESPACE", "has:colon"),
        ("RAY_NAMESPACE", ""),
        ("L2_WRITE_MODE", "eventually"),
        ("L2_QUEUE_MAX", "-1"),
        ("L2_FLUSH_INTERVAL", "soon"),
        ("REDIS_URL", "http://localhost:6379"),
        ("REDIS_TLS", "maybe"),
        ("TTL_RESPONSE", "ten"),
        ("TTL_BAD*LAYER", "10"),
        ("MAX_BYTES_PER_SHARD", "lots"),
    ],
)
def test_invalid_values_name_the_variable(var, value):
    with pytest.raises(ConfigError, match=f"OMNICACHE_{var}".replace("*", r"\*")):
        OmnicacheSettings.from_env({f"OMNICACHE_{var}": value})


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match="backend"):
        OmnicacheSettings(backend="mongo")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="write_mode"):
        OmnicacheSettings(backend="disk", l2_write_mode="later")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="queue_max"):
        L2Config(queue_max=0)
    with pytest.raises(ConfigError, match="kind"):
        L2Config(kind="s3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="url"):
        L2Config(url="memcached://x")


def test_make_backend_follows_the_backend_setting(tmp_path, redis_server):
    assert isinstance(OmnicacheSettings().make_backend(), InMemoryBackend)
    disk = OmnicacheSettings(backend="disk", disk_path=str(tmp_path)).make_backend()
    assert isinstance(disk, DiskBackend)
    redis_backend = OmnicacheSettings(
        backend="redis", redis_url=redis_server, namespace="setting-ns", redis_key_prefix="st:"
    ).make_backend()
    assert isinstance(redis_backend, RedisBackend)
    assert redis_backend.key_namespace == "setting-ns"
    redis_backend.set("k", 1)
    assert redis_backend.get("k") == 1
    disk.close()
    redis_backend.close()


def test_manager_from_settings_uses_namespace_and_layer_ttls(tmp_path):
    env = {
        "OMNICACHE_BACKEND": "disk",
        "OMNICACHE_DISK_PATH": str(tmp_path),
        "OMNICACHE_NAMESPACE": "fromenv",
        "OMNICACHE_DEFAULT_TTL": "60",
        "OMNICACHE_TTL_RESPONSE": "0.2",
    }
    manager = CacheManager.from_settings(OmnicacheSettings.from_env(env))
    assert isinstance(manager.backend, DiskBackend)
    assert manager.key_builder.namespace == "fromenv"
    manager.set("q", "answer", layer="response")
    manager.set("e", [0.1], layer="embedding")
    manager.set("d", "default layer", cache_type="default")
    manager.set("seed", "no ttl, no cache_type: the response ttl, as in the seed")
    assert manager.get("q", layer="response") == "answer"
    time.sleep(0.3)
    assert manager.get("q", default=MISS, layer="response") is MISS
    assert manager.get("seed", default=MISS) is MISS
    assert manager.get("e", layer="embedding") == [0.1]
    assert manager.get("d") == "default layer"
    # A second manager on the same settings (a restarted process) sees the entries.
    again = CacheManager.from_settings(OmnicacheSettings.from_env(env))
    assert again.get("d") == "default layer"


def test_manager_from_settings_reads_the_environment(monkeypatch):
    monkeypatch.setenv("OMNICACHE_NAMESPACE", "envns")
    monkeypatch.setenv("OMNICACHE_DEFAULT_TTL", "0")
    manager = CacheManager.from_settings()
    assert manager.key_builder.namespace == "envns"
    manager.set("k", "v")
    assert manager.get("k") == "v"
    monkeypatch.setenv("OMNICACHE_BACKEND", "nope")
    with pytest.raises(ConfigError, match="OMNICACHE_BACKEND"):
        CacheManager.from_settings()
