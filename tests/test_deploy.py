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


def _promtool() -> str:
    """promtool from the Prometheus that scripts/test.sh found or fetched."""
    import os
    import shutil

    import pytest

    binary = os.environ.get("OMNICACHE_PROMETHEUS_BIN") or shutil.which("prometheus")
    if not binary:
        why = os.environ.get("OMNICACHE_PROMETHEUS_MISSING") or "no prometheus binary"
        if os.environ.get("OMNICACHE_ALLOW_NO_PROMETHEUS") == "1":
            pytest.skip(f"NO PROMETHEUS, configs unchecked: {why}")
        pytest.fail(f"no Prometheus to check the shipped configs with: {why}")
    tool = Path(binary).with_name("promtool")
    assert tool.exists(), f"no promtool next to {binary}"
    return str(tool)


def test_prometheus_configs_pass_promtool(tmp_path):
    import subprocess

    tool = _promtool()
    for name in ("prometheus.yml",):
        # promtool checks that file_sd files exist: give it a copy whose path is here.
        text = (DEPLOY / "prometheus" / name).read_text()
        text = text.replace("/tmp/ray/", f"{tmp_path}/")
        (tmp_path / "prom_metrics_service_discovery.json").write_text("[]")
        config = tmp_path / name
        config.write_text(text)
        out = subprocess.run(
            [tool, "check", "config", str(config)], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (ray_job,) = [j for j in shipped["scrape_configs"] if j["job_name"] == "ray"]
    assert ray_job["file_sd_configs"][0]["refresh_interval"] == "5s"


def test_kuberay_podmonitors_select_the_ray_pods_metrics_port():
    cluster = yaml.safe_load((DEPLOY / "kuberay" / "raycluster.yaml").read_text())
    monitors = list(yaml.safe_load_all((DEPLOY / "kuberay" / "podmonitor.yaml").read_text()))
    assert {m["kind"] for m in monitors} == {"PodMonitor"}
    name = cluster["metadata"]["name"]
    types = {m["spec"]["selector"]["matchLabels"]["ray.io/node-type"] for m in monitors}
    assert types == {"head", "worker"}
    for m in monitors:
        assert m["spec"]["selector"]["matchLabels"]["ray.io/cluster"] == name
        (endpoint,) = m["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] == "metrics"
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert str(ports["metrics"]) == group["rayStartParams"]["metrics-export-port"]
