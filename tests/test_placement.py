"""Placement options, the detached coordinator's life cycle, and how a restarted
coordinator finishes a scale step it was driving.

Shards on several nodes are in ``tests/test_multinode.py``; here the session's single
node is enough.
"""

from __future__ import annotations

import pytest

from omnicache_cluster import CacheCluster, ConfigError
from omnicache_cluster.actors._rebalance import roll_forward
from omnicache_cluster.placement import ShardPlacement, semantic_options
from tests.conftest import unique


def test_placement_arguments_are_checked_and_mapped_to_ray_options():
    spec = ShardPlacement.build(
        "strict_spread",
        shard_resources={"num_cpus": 0.5, "memory": 1 << 30, "resources": {"shard": 1}},
        coordinator_options={"resources": {"head": 0.01}},
    )
    assert spec.bundle() == {"CPU": 0.5, "memory": float(1 << 30), "shard": 1.0}
    opts = spec.shard_ray_options()
    assert (opts["num_cpus"], opts["memory"], opts["resources"]) == (0.5, 1 << 30, {"shard": 1})
    assert spec.coordinator_ray_options() == {"resources": {"head": 0.01}}
    assert ShardPlacement().bundle() == {"CPU": 0.01}  # a bundle is never empty
    assert ShardPlacement.build("spread").shard_ray_options()["scheduling_strategy"] == "SPREAD"
    assert ShardPlacement.build("default").shard_ray_options()["scheduling_strategy"] is None
    with pytest.raises(ValueError, match="placement must be one of"):
        ShardPlacement.build("everywhere")
    with pytest.raises(ValueError, match="shard_resources takes"):
        ShardPlacement.build("spread", shard_resources={"gpus": 1})
    with pytest.raises(ValueError, match="num_cpus"):
        ShardPlacement(num_cpus=-1)
    with pytest.raises(ValueError, match="resource 'x'"):
        ShardPlacement.build("spread", shard_resources={"resources": {"x": 0}})


def test_roll_forward_finishes_a_flipped_step_and_aborts_an_unflipped_one():
    members1, members2 = ("s0", "s1"), ("s0", "s1", "s2")
    view = {"quota_gen": 1, "quotas": {}, "importing": 0, "exporting": 0}
    # The coordinator died after flipping s0 (a source) but before flipping s1 and s2.
    half = {
        "s0": {**view, "epoch": 2, "members": members2, "plan": None, "outgoing": False},
        "s1": {**view, "epoch": 1, "members": members1, "plan": (2, members2), "outgoing": True},
        "s2": {**view, "epoch": 0, "members": (), "plan": (2, members2), "outgoing": False},
    }
    assert roll_forward(half) == ((2, members2), ["s1"], [])
    # ... or after preparing only: nobody holds epoch 2, so the step is undone.
    prepared = {
        "s0": {**view, "epoch": 1, "members": members1, "plan": (2, members2), "outgoing": True},
        "s1": {**view, "epoch": 1, "members": members1, "plan": (2, members2), "outgoing": True},
    }
    assert roll_forward(prepared) == ((1, members1), [], [("s0", 2), ("s1", 2)])
    assert roll_forward({}) == (None, [], [])


@pytest.mark.ray
def test_strict_spread_needs_a_node_per_shard_and_says_so(ray_session):
    namespace = unique("strict")
    spec = ShardPlacement(strategy="strict_spread", placement_timeout_s=3)
    with pytest.raises(ConfigError, match="distinct nodes"):
        CacheCluster.start(num_shards=2, namespace=namespace, placement=spec)  # one node
    names = ray_session.util.list_named_actors(all_namespaces=True)
    assert [a for a in names if a["namespace"] == namespace] == []
    groups = ray_session.util.placement_group_table().values()
    assert [g for g in groups if namespace in (g["name"] or "") and g["state"] != "REMOVED"] == []

    cluster = CacheCluster.start(num_shards=1, namespace=namespace, placement=spec)
    try:
        cluster.set("k", "v")
        assert cluster.get("k") == "v"
    finally:
        cluster.shutdown(stop_ray=False)
    groups = ray_session.util.placement_group_table().values()
    assert [g for g in groups if namespace in (g["name"] or "") and g["state"] != "REMOVED"] == []


@pytest.mark.ray
def test_the_coordinator_is_detached_and_a_leftover_one_does_not_block_a_new_cluster(
    ray_session,
):
    ray = ray_session
    from omnicache_cluster.actors.remote import COORDINATOR_NAME

    namespace = unique("detached")
    cluster = CacheCluster.start(
        num_shards=1, namespace=namespace, semantic_options={"num_cpus": 0}
    )
    coord = ray.get_actor(COORDINATOR_NAME, namespace=namespace)
    assert semantic_options(namespace) == {"num_cpus": 0}  # read where the index starts
    # The driver that started the cluster is gone (its shards died with it), the
    # detached coordinator is left: a new cluster may start in its place.
    for name in cluster._state.ring.members:
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    second = CacheCluster.start(num_shards=1, namespace=namespace)
    try:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(coord.ping.remote(), timeout=30)
        second.set("k", 1)
        assert second.get("k") == 1
        with pytest.raises(ConfigError, match="already runs"):  # this one has shards
            CacheCluster.start(num_shards=1, namespace=namespace)
    finally:
        second.shutdown(stop_ray=False)
    left = [
        a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace
    ]
    assert left == []
