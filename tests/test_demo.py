"""The demo (the project's main job) and its command line, on the session's Ray."""

from __future__ import annotations

import pytest

from omnicache_cluster.cli import main
from omnicache_cluster.demo import QUESTIONS, run_demo

pytestmark = pytest.mark.ray


def test_demo_counts_add_up(ray_session):
    report = run_demo(tasks=3, questions_per_task=6, shards=2)
    distinct_stored = report.cluster_stats["entries"]
    for layer, counts in report.layers.items():
        assert counts["hits"] + counts["misses"] == 18, layer
        assert counts["misses"] >= 1
    # Every distinct question asked is stored once per layer.
    assert distinct_stored % 2 == 0
    assert 2 <= distinct_stored <= 2 * len(QUESTIONS)
    assert report.layers["response"]["misses"] >= distinct_stored // 2
    text = report.render()
    assert "calls avoided" in text
    assert "response" in text


def test_cli_demo_prints_the_table(ray_session, capsys):
    assert main(["demo", "--tasks", "2", "--questions", "4", "--shards", "1"]) == 0
    out = capsys.readouterr().out
    assert "embedding" in out
    assert "hit rate" in out
