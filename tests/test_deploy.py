"""The deployment files in ``deploy/`` parse and keep the settings the README relies
on: a head without work, one shard per worker, loopback services in compose."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_kuberay_manifest_keeps_work_off_the_head_and_one_shard_per_worker():
    spec = yaml.safe_load((DEPLOY / "kuberay" / "raycluster.yaml").read_text())["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert "omnicache_head" in spec["headGroupSpec"]["rayStartParams"]["resources"]
    (shards,) = spec["workerGroupSpecs"]
    assert '\\"omnicache_shard\\": 1' in shards["rayStartParams"]["resources"]
    assert shards["minReplicas"] <= shards["replicas"] <= shards["maxReplicas"]


def test_cluster_launcher_config_has_a_workless_head_and_shard_nodes():
    config = yaml.safe_load((DEPLOY / "ray-cluster" / "cluster.yaml").read_text())
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0
    assert types["shard"]["resources"] == {"omnicache_shard": 1}


def test_compose_runs_the_four_services_on_loopback_with_the_shared_configs():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "qdrant", "prometheus", "grafana"}
    assert all(s["network_mode"] == "host" for s in services.values())
    assert "127.0.0.1" in services["redis"]["command"]
    assert services["qdrant"]["environment"]["QDRANT__SERVICE__HOST"] == "127.0.0.1"
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    for service in services.values():  # every mounted file of the repo exists
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
