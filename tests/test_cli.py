"""The command line against a live cluster: in-process commands and a real subprocess."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest

from omnicache_cluster import MISS, ConfigError
from omnicache_cluster.admin import (
    cmd_flush,
    cmd_inspect,
    cmd_stats,
    cmd_status,
    connect,
)
from omnicache_cluster.cli import main
from omnicache_cluster.layers import ResponseCache
from tests.conftest import unique

pytestmark = pytest.mark.ray

MSGS = [{"role": "user", "content": "What is RAG?"}]


@pytest.fixture
def started(ray_session, capsys):
    """A detached cluster started by ``omnicache-cluster start``, stopped afterwards."""
    namespace = unique("cli")
    assert main(["start", "--namespace", namespace, "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "cache cluster started" in out
    assert namespace in out
    yield namespace
    with contextlib.suppress(ConfigError):  # unless the test stopped it
        connect(namespace).shutdown(stop_ray=False)


def _json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_match_what_the_test_did(started, capsys):
    admin = connect(started)
    tenant = unique("tenant")
    rc = ResponseCache(admin.for_tenant(tenant))
    other = ResponseCache(admin.for_tenant(unique("other")))
    for i in range(2):  # 2 misses, 2 sets, 3 hits in the response layer
        assert rc.get([{"role": "user", "content": f"q{i}"}], "gpt-4o") is MISS
        rc.set([{"role": "user", "content": f"q{i}"}], f"a{i}", "gpt-4o")
    for i in (0, 1, 1):
        assert rc.get([{"role": "user", "content": f"q{i}"}], "gpt-4o") == f"a{i}"
    other.set(MSGS, "not counted for the tenant", "gpt-4o")

    data = _json(capsys, ["stats", "--namespace", started, "--tenant", tenant])
    assert data["layers"] == [
        {"tenant": tenant, "layer": "response", "hits": 3, "misses": 2, "sets": 2, "hit_rate": 0.6}
    ]
    (row,) = data["tenants"]
    assert (row["tenant"], row["entries"], row["hits"], row["misses"]) == (tenant, 2, 3, 2)
    assert data["totals"]["entries"] == 3  # the whole cluster: both tenants
    assert data == cmd_stats(admin, tenant=tenant) | {"totals": data["totals"]}

    assert main(["stats", "--namespace", started]) == 0
    table = capsys.readouterr().out
    assert "per tenant and layer" in table
    assert tenant in table
    assert "60.0%" in table


def test_status_inspect_flush_warm_and_stop(started, capsys, tmp_path, monkeypatch):
    admin = connect(started)
    tenant = unique("tenant")
    view = admin.for_tenant(tenant)
    rc = ResponseCache(view)
    rc.set(MSGS, {"answer": "retrieval-augmented generation"}, "gpt-4o", ttl=600)
    admin.set("plain key", [1, 2, 3])

    status = cmd_status(admin)
    assert status["ring_epoch"] == 1
    assert [s["shard"] for s in status["shards"]] == ["omnicache-shard-0", "omnicache-shard-1"]
    assert sum(s["entries"] for s in status["shards"]) == status["entries"] == 2
    assert main(["status", "--namespace", started]) == 0
    out = capsys.readouterr().out
    assert "ring epoch 1" in out
    assert "omnicache-shard-1" in out

    entry = cmd_inspect(admin, str(rc.key_for(MSGS, "gpt-4o")))
    assert entry["found"]
    assert entry["value"] == repr({"answer": "retrieval-augmented generation"})
    assert entry["tags"] == ["model:gpt-4o"]
    assert 590 < entry["ttl_remaining_s"] <= 600
    assert entry["shard"] in ("omnicache-shard-0", "omnicache-shard-1")
    assert main(["inspect", "plain key", "--namespace", started]) == 0
    assert "[1, 2, 3]" in capsys.readouterr().out
    assert not cmd_inspect(admin, "never stored")["found"]

    assert cmd_flush(admin, tenant=tenant, tag="model:gpt-4o", confirm=lambda s: False) == {
        "scope": f"entries tagged 'model:gpt-4o' of tenant {tenant!r} in {started!r}",
        "confirmed": False,
        "removed": 0,
    }
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))  # noqa: SIM115 - closed by pytest
    assert main(["flush", "--namespace", started, "--tenant", tenant, "--tag", "model:gpt-4o"]) == 1
    assert "without confirmation" in capsys.readouterr().err
    assert rc.get(MSGS, "gpt-4o") == {"answer": "retrieval-augmented generation"}
    flushed = _json(
        capsys, ["flush", "--namespace", started, "--tenant", tenant, "--tag", "model:gpt-4o",
                 "--yes"]
    )  # fmt: skip
    assert flushed["removed"] == 1
    assert admin.get("plain key") == [1, 2, 3]  # another tenant's entry stays

    warm_file = tmp_path / "hot.jsonl"
    warm_file.write_text('{"query": "hi", "response": "hello"}\n{"response": "orphan"}\n')
    args = ["warm", str(warm_file), "--namespace", started, "--tenant", tenant, "--model", "m"]
    assert main(args) == 2  # one bad row: reported, the rest loaded
    out = capsys.readouterr().out
    assert "failed rows" in out
    assert "no 'query'" in out
    assert rc.get([{"role": "user", "content": "hi"}], "m") == "hello"

    assert _json(capsys, ["flush", "--namespace", started, "--yes"])["removed"] == 2
    assert main(["stop", "--namespace", started]) == 0
    with pytest.raises(ConfigError):
        connect(started)


def test_status_in_a_subprocess_attaches_by_name(shared_cluster, ray_session, python_env):
    address = ray_session.get_runtime_context().gcs_address
    ns = shared_cluster.namespace
    cmd = [sys.executable, "-m", "omnicache_cluster", "status", "--namespace", ns]
    out = subprocess.run(
        [*cmd, "--address", address], env=python_env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"cluster {ns!r}" in out.stdout
    assert "omnicache-shard-0" in out.stdout
    assert "omnicache-shard-1" in out.stdout


def test_commands_report_a_missing_cluster(ray_session, capsys):
    assert main(["status", "--namespace", unique("nowhere")]) == 1
    assert "no cache cluster runs" in capsys.readouterr().err
