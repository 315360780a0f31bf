"""The Python examples of docs/seed-semantic-metrics-cli.md run as written (one process,
no Ray)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "seed-semantic-metrics-cli.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_page_has_its_examples():
    code = "\n".join(_blocks())
    for name in ("SemanticCache(", "FAISSBackend(", "PrometheusExporter(", ".snapshot()"):
        assert name in code, name


@pytest.mark.parametrize("index", range(2))
def test_example_runs(index, capsys):
    block = _blocks()[index]
    exec(compile(block, f"{DOC.name}[{index}]", "exec"), {})  # noqa: S102 - our own doc
    if "snapshot()" in block:
        assert "'hit_rate': 0.5" in capsys.readouterr().out
