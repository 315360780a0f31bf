"""The demo (the project's main job) and its command line, on the session's Ray."""

from __future__ import annotations

import pytest

from omnicache_cluster.cli import main
from omnicache_cluster.demo import QUESTIONS, UNIT_SECONDS, run_demo

pytestmark = pytest.mark.ray


def test_demo_runs_the_three_layers_and_its_counts_add_up(ray_session):
    report = run_demo(tasks=3, questions_per_task=6, shards=2, seed=3)
    assert set(report.layers) == {"embedding", "response", "stream"}
    asked = 3 * 6
    distinct = len(QUESTIONS)  # an upper bound on what can be computed
    for layer, c in report.layers.items():
        assert c["lookups"] == asked, layer
        assert 1 <= c["computes"] <= min(asked, distinct), layer
        # a text twice in one task's batch is embedded once: avoided, though not a hit
        assert c["hits"] <= c["lookups"] - c["computes"], layer
        avoided = c["lookups"] - c["computes"]
        assert report.saved_seconds(layer) == pytest.approx(avoided * UNIT_SECONDS[layer])
    # single-flight: every layer pays once per distinct question, even when two tasks
    # miss the same question at the same moment (embedding batches that overlap too)
    distinct_asked = report.distinct_questions
    assert 1 <= distinct_asked <= len(QUESTIONS)
    for layer in ("embedding", "response", "stream"):
        assert report.layers[layer]["computes"] == distinct_asked, layer
    for layer in ("response", "stream"):
        assert report.layers[layer]["hits"] == asked - distinct_asked
    text = report.render()
    assert "calls avoided" in text
    assert "stream" in text
    assert "Ray dashboard" in text


def test_cli_demo_prints_the_table(ray_session, capsys):
    assert main(["demo", "--tasks", "2", "--questions", "4", "--shards", "1"]) == 0
    out = capsys.readouterr().out
    for layer in ("embedding", "response", "stream"):
        assert layer in out
    assert "hit rate" in out
    assert "time saved" in out
