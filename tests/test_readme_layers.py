"""The README's cache-layer examples run, as written, against the real cluster."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- cache-layers:start")
    end = text.index("<!-- cache-layers:end -->")
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def test_the_section_has_an_example_per_layer():
    code = "\n".join(_blocks())
    for name in (
        "ResponseCache",
        "EmbeddingCache",
        "RetrievalCache",
        "ContextCache",
        "StreamingResponseCache",
        "PromptCacheLayer",
        "LLMMiddleware",
        "AsyncLLMMiddleware",
        "EmbeddingMiddleware",
        "RetrieverMiddleware",
        "RequestConfig",
        "TTLPolicy",
        "InvalidationEngine",
        "CacheWarmer",
    ):
        assert f"{name}(" in code, name


def test_readme_examples_run(cluster, capsys):
    namespace = {"cluster": cluster, "__name__": "readme"}
    for block in _blocks():
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert capsys.readouterr().out.strip().startswith("0.0058")  # the prompt-cache savings
