"""CacheWarmer through the real cluster: files, batches, progress, bad rows reported."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from rich.console import Console

from omnicache_cluster import MISS
from omnicache_cluster.layers import ResponseCache
from omnicache_cluster.warmer import CacheWarmer

pytestmark = pytest.mark.ray


def _user(text):
    return [{"role": "user", "content": text}]


CSV = """query,response,model,params,system
What is RAG?,Retrieval-augmented generation.,gpt-4o,,
What is Ray?,A distributed runtime.,,"{""temperature"": 0}",
,an orphan answer,gpt-4o,,
Broken params,x,gpt-4o,{not json,
Needs a model call,,gpt-4o,,
Terse one,Yes.,gpt-4o,,Be terse.
"""


def test_csv_warm_loads_good_rows_and_reports_bad_ones(cluster, tmp_path):
    path = tmp_path / "hot.csv"
    path.write_text(CSV)
    rc = ResponseCache(cluster)
    seen = []
    console_out = io.StringIO()
    warmer = CacheWarmer(
        rc,
        batch_size=2,
        console=Console(file=console_out, width=100),
        on_progress=lambda done, total: seen.append((done, total)),
    )
    report = warmer.warm_from_file(path, model_id="claude")
    assert (report.total, report.loaded, report.skipped) == (6, 3, 0)
    failed = dict(report.failed)
    assert set(failed) == {4, 5, 6}  # CSV line numbers (line 1 is the header)
    assert "no 'query'" in failed[4]
    assert "Expecting property name" in failed[5]
    assert failed[6] == "no response and no generate_fn"
    assert seen == [(2, 6), (4, 6), (6, 6)]
    assert "6/6" in console_out.getvalue()

    assert rc.get(_user("What is RAG?"), "gpt-4o") == "Retrieval-augmented generation."
    # a row without a model gets the default; params are part of the key
    assert rc.get(_user("What is Ray?"), "claude", {"temperature": 0}) == "A distributed runtime."
    assert rc.get(_user("What is Ray?"), "claude") is MISS
    assert rc.get(_user("Terse one"), "gpt-4o", system="Be terse.") == "Yes."
    assert rc.invalidate_model("gpt-4o") == 2  # warmed entries carry their model tag

    again = CacheWarmer(rc, progress=False).warm_from_file(path, model_id="claude")
    assert (again.loaded, again.skipped) == (2, 1)


def test_jsonl_warm_with_generate_fn_null_responses_and_failures(cluster, tmp_path):
    rows = [
        {"prompt": "cached none", "response": None},
        "plain query string",
        "{this is not json",
        {"messages": _user("explode"), "model": "m"},
        {"query": "unencodable"},
        {"query": "zero", "response": 0},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) and r.startswith("{") else json.dumps(r)
                              for r in rows) + "\n\n")  # fmt: skip

    def generate(messages):
        text = messages[-1]["content"]
        if text == "explode":
            raise RuntimeError("provider said no")
        return object() if text == "unencodable" else f"generated: {text}"

    rc = ResponseCache(cluster)
    report = CacheWarmer(rc, progress=False).warm_from_file(path, generate, model_id="m")
    assert (report.total, report.loaded) == (6, 3)
    failed = dict(report.failed)
    assert "invalid JSON" in failed[3]
    assert failed[4] == "generate_fn: RuntimeError: provider said no"
    assert failed[5].startswith("store: TypeError")
    assert rc.get(_user("cached none"), "m") is None  # a warmed None is a hit
    assert rc.get(_user("plain query string"), "m") == "generated: plain query string"
    assert rc.get(_user("zero"), "m") == 0
    assert rc.get(_user("unencodable"), "m") is MISS


async def test_async_warm_runs_generate_calls_concurrently(cluster):
    rc = ResponseCache(cluster)
    running = 0
    peak = 0

    async def generate(messages):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return messages[-1]["content"][::-1]

    report = await CacheWarmer(rc, progress=False).awarm(
        [f"q{i}" for i in range(8)], generate_fn=generate, model_id="m"
    )
    assert (report.loaded, report.failed) == (8, [])
    assert peak == 8
    assert await rc.aget(_user("q3"), "m") == "3q"
    again = await CacheWarmer(rc, progress=False).awarm(["q3", "q9"], generate_fn=generate)
    assert (again.skipped, again.loaded) == (0, 2)  # model "default" is another key
