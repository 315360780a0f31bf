"""Shards over several Ray nodes, and a node lost under load (``ray.cluster_utils``).

A pytest process holds one Ray instance (the session's, a single node), so the
scenarios run in a child process that builds its own 3-node cluster on 127.0.0.1
(`tests.multinode_scenarios`); these tests assert on the figures it writes. The
child runs once per session in its own process group, which is killed if it
overruns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

CHILD_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def scenarios(redis_server, tmp_path_factory):
    """Run both node-failure scenarios once; return their figures by placement."""
    env = dict(os.environ)  # the loopback and auth settings of conftest
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = tmp_path_factory.mktemp("multinode") / "result.json"
    cmd = [sys.executable, "-m", "tests.multinode_scenarios", "--out", str(out)]
    cmd += ["--redis-url", redis_server]
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a timeout kills every Ray process of it
    )
    try:
        _, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"the multi-node scenarios ran past {CHILD_TIMEOUT_S}s: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    results = json.loads(out.read_text())
    return results, err


@pytest.mark.timeout(CHILD_TIMEOUT_S + 60)
def test_strict_spread_puts_shards_on_distinct_nodes_and_redis_l2_loses_no_write(scenarios):
    results, log = scenarios
    r = results["strict_spread"]
    assert "failed" not in r, (r, log[-3000:])
    assert r["nodes_of_shards"] == 3  # one shard per node
    # The worker node of a shard died under load; a replacement node joined, Ray
    # rescheduled the placement group's bundle there and restarted the shard in it.
    assert r["restarted_on_other_node"]
    assert r["errors"] == []  # no call failed: they timed out and retried
    assert r["others_ok_during_outage"]
    assert r["ops_before_kill"] > 0
    assert r["ops_after_restart"] > 0
    # With Redis L2 every acknowledged write is there, read through by the new shard.
    assert r["lost"] == []
    assert r["final_misses"] == 0
    assert r["backwards"] == []


@pytest.mark.timeout(CHILD_TIMEOUT_S + 60)
def test_spread_without_l2_keeps_serving_and_only_the_dead_shards_entries_miss(scenarios):
    results, log = scenarios
    r = results["spread"]
    assert "failed" not in r, (r, log[-3000:])
    # SPREAD is best effort: Ray may put every shard on one node; the scenario starts
    # the cluster again until they share no single node, so some shard survives.
    assert 2 <= r["nodes_of_shards"] <= 3
    assert r["restarted_on_other_node"]  # Ray restarted it on a surviving node
    assert r["errors"] == []
    assert r["others_ok_during_outage"]
    assert r["ops_after_restart"] > 0  # the cluster kept serving
    # Without L2 the dead shard's entries are gone, and only its entries; what was
    # written after its restart is there.
    assert r["lost"], "the dead shard's entries survived without L2?"
    assert r["cold_victim_keys_kept"] == []  # its keys not rewritten since: all gone
    assert r["lost_not_victims"] == []
    assert r["lost_acked_after_restart"] == []
    assert r["backwards"] == []  # other shards' keys never went backwards
