"""The seed's command line on a single-process cache: ``omnicache stats / inspect / flush``
on the backend ``OMNICACHE_*`` configures, run as a subprocess against a real disk
backend and a real redis-server."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnicache_cluster import DiskBackend, RedisBackend
from tests.conftest import unique

BIN = Path(sys.executable).parent


def _run(
    env: dict[str, str], *args: str, command: str = "omnicache"
) -> subprocess.CompletedProcess:
    exe = BIN / command
    assert exe.exists(), f"the {command} entry point is not installed"
    return subprocess.run(
        [str(exe), *args],
        env=env,
        stdin=subprocess.DEVNULL,  # not a terminal: flush asks for --yes
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _fill(backend) -> None:
    """What a seed application left behind: two tenants, two layers, tags, a ttl."""
    backend.set("my_key", {"result": 42}, ttl=60, tags=["model:gpt-4o"])
    backend.set("other", "text value", layer="response")
    backend.for_tenant("acme").set("my_key", "acme's")


@pytest.fixture(params=["disk", "redis"])
def seeded_env(request, tmp_path, python_env):
    """The environment of a seed app whose OMNICACHE_* backend holds `_fill`'s entries."""
    namespace = unique("app")
    env = {**python_env, "OMNICACHE_BACKEND": request.param, "OMNICACHE_NAMESPACE": namespace}
    if request.param == "disk":
        env["OMNICACHE_DISK_PATH"] = str(tmp_path / "cache")
        backend = DiskBackend(tmp_path / "cache", namespace=namespace)
    else:
        url = request.getfixturevalue("redis_server")
        env["OMNICACHE_REDIS_URL"] = url
        backend = RedisBackend(url, namespace=namespace)  # the default key prefix, as from env
    _fill(backend)
    backend.close()
    return env


def test_stats_reads_the_store(seeded_env):
    proc = _run(seeded_env, "stats")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["backend"] == seeded_env["OMNICACHE_BACKEND"]
    assert stats["namespace"] == seeded_env["OMNICACHE_NAMESPACE"]
    assert stats["entries"] == 3
    assert stats["tenants"] == {"acme": 1, "default": 2}
    assert stats["layers"] == {"default": 2, "response": 1}
    # The cluster command line offers the same with --local.
    same = _run(seeded_env, "stats", "--local", command="omnicache-cluster")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout) == stats


def test_inspect_shows_the_seeds_fields_and_more(seeded_env):
    proc = _run(seeded_env, "inspect", "my_key")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["key"], info["exists"], info["value_type"], info["value_size_bytes"]) == (
        "my_key",
        True,
        "dict",
        "n/a",
    )
    assert info["value"] == "{'result': 42}"
    assert info["tags"] == ["model:gpt-4o"]
    assert 0 < info["ttl_remaining_s"] <= 60
    acme = json.loads(_run(seeded_env, "inspect", "my_key", "--tenant", "acme").stdout)
    assert (acme["value"], acme["value_size_bytes"]) == ('"acme\'s"', 6)
    # A stored key is accepted as is.
    again = json.loads(_run(seeded_env, "inspect", info["stored_key"]).stdout)
    assert again["value"] == info["value"]
    missing = _run(seeded_env, "inspect", "nope")
    assert missing.returncode == 1
    assert "Key not found: nope" in missing.stderr


def test_flush_asks_then_removes_one_tenant_then_all(seeded_env):
    refused = _run(seeded_env, "flush")
    assert refused.returncode == 1
    assert "pass --yes" in refused.stderr
    assert json.loads(_run(seeded_env, "stats").stdout)["entries"] == 3  # nothing lost
    tagged = _run(seeded_env, "flush", "--tag", "model:gpt-4o", "--yes")
    assert tagged.returncode == 0, tagged.stderr
    assert "removed 1 entries" in tagged.stdout
    done = _run(seeded_env, "flush", "--yes")  # the seed's manager.clear(): the default tenant
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Cache flushed: removed 1 entries")
    assert json.loads(_run(seeded_env, "stats").stdout)["tenants"] == {"acme": 1}
    everything = _run(seeded_env, "flush", "--all-tenants", "--yes", "--json")
    assert json.loads(everything.stdout)["removed"] == 1
    assert json.loads(_run(seeded_env, "stats").stdout)["entries"] == 0


def test_flush_leaves_other_namespaces(tmp_path, python_env):
    path = tmp_path / "shared"
    mine, theirs = DiskBackend(path, namespace="mine"), DiskBackend(path, namespace="theirs")
    mine.set("a", 1)
    theirs.set("a", 2)
    env = {
        **python_env,
        "OMNICACHE_BACKEND": "disk",
        "OMNICACHE_DISK_PATH": str(path),
        "OMNICACHE_NAMESPACE": "mine",
    }
    assert _run(env, "flush", "--all-tenants", "--yes").returncode == 0
    assert theirs.get("a") == 2
    assert mine.get("a", None) is None
    mine.close()
    theirs.close()


def test_memory_backend_and_bad_values_fail_with_the_variable_named(python_env):
    env = {**python_env, "OMNICACHE_BACKEND": "memory"}
    proc = _run(env, "stats")
    assert proc.returncode == 1
    assert "OMNICACHE_BACKEND=disk" in proc.stderr
    bad = _run({**python_env, "OMNICACHE_BACKEND": "mongo"}, "stats")
    assert bad.returncode == 1
    assert "OMNICACHE_BACKEND" in bad.stderr


def test_omnicache_offers_the_cluster_commands_too(python_env):
    proc = _run(python_env, "--help")
    assert proc.returncode == 0
    for command in ("start", "status", "stats", "inspect", "flush", "warm", "stop"):
        assert command in proc.stdout
    helped = _run(python_env, "stats", "--help")
    assert "--cluster" in helped.stdout
    assert "(the default)" in helped.stdout


def test_entry_point_is_ours_and_unique():
    scripts = [
        (ep.dist.name if ep.dist else None, ep.value)
        for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.name == "omnicache"
    ]
    assert scripts == [("omnicache-cluster", "omnicache_cluster.cli:seed_main")]
