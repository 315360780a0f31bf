"""PromptCacheLayer: breakpoints where the prefix is long enough, savings net of writes.

The usage payloads are shaped as the providers return them; every expected number is
worked out by hand in the comment next to it.
"""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace

import pytest

from omnicache_cluster.layers import ModelPrice, PromptCacheLayer
from omnicache_cluster.layers.prompt import parse_usage
from omnicache_cluster.policies import RequestConfig

SONNET = "claude-sonnet-4-5-20250929"

# Anthropic Messages API, first call: the 3,012-token prefix is written to the cache.
ANTHROPIC_WRITE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": SONNET,
    "content": [{"type": "text", "text": "The bug is in auth.py line 42."}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 3012,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 3012, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 393,
        "service_tier": "standard",
    },
}
# The same prefix, read back from the cache on the next call.
ANTHROPIC_READ = copy.deepcopy(ANTHROPIC_WRITE)
ANTHROPIC_READ["usage"].update(
    cache_creation_input_tokens=0,
    cache_read_input_tokens=3012,
    cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
)
# OpenAI Chat Completions: 1,920 of 2,006 prompt tokens came from the automatic cache.
OPENAI_CHAT = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}}],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}


def _ns(value):
    """The same payload as SDK objects (attribute access), as the clients return it."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _ns(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_ns(v) for v in value]
    return value


def test_anthropic_savings_are_net_of_the_cache_write_premium():
    layer = PromptCacheLayer()
    write = layer.record(ANTHROPIC_WRITE, SONNET)
    # Sonnet: $3 / MTok = 3e-6 per token.
    # uncached baseline: (21 + 3012) * 3e-6 = 0.009099
    # actual: 21 * 3e-6 + 3012 * 3e-6 * 1.25 = 0.000063 + 0.011295 = 0.011358
    assert write.baseline_usd == pytest.approx(0.009099)
    assert write.actual_usd == pytest.approx(0.011358)
    assert write.write_premium_usd == pytest.approx(0.002259)  # 3012 * 3e-6 * 0.25
    assert write.net_saved_usd == pytest.approx(-0.002259)
    read = layer.record(_ns(ANTHROPIC_READ), SONNET)  # SDK objects work the same
    # actual: 21 * 3e-6 + 3012 * 3e-6 * 0.1 = 0.000063 + 0.0009036 = 0.0009666
    assert read.actual_usd == pytest.approx(0.0009666)
    assert read.read_savings_usd == pytest.approx(0.0081324)  # 3012 * 3e-6 * 0.9
    assert read.net_saved_usd == pytest.approx(0.0081324)
    totals = layer.totals()
    # net over both calls: 0.0081324 - 0.002259 = 0.0058734 (reads alone: 0.0081324)
    assert totals["total"]["net_saved_usd"] == pytest.approx(0.0058734)
    assert totals["models"][SONNET]["calls"] == 2
    assert totals["models"][SONNET]["cache_hits"] == 1
    assert totals["models"][SONNET]["cache_read_tokens"] == 3012
    assert totals["models"][SONNET]["cache_write_tokens"] == 3012


def test_anthropic_one_hour_writes_cost_double():
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 1500,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
    }
    s = PromptCacheLayer().record({"usage": usage}, "claude-opus-4-1")
    # Opus 4.1: $15 / MTok = 1.5e-5; premium: 500 * 1.5e-5 * 0.25 + 1000 * 1.5e-5 * 1.0
    assert s.write_premium_usd == pytest.approx(0.001875 + 0.015)
    assert s.net_saved_usd == pytest.approx(-0.016875)
    assert (s.usage.cache_write_tokens, s.usage.cache_write_1h_tokens) == (500, 1000)


def test_openai_chat_and_responses_usage():
    layer = PromptCacheLayer()
    chat = layer.record(_ns(OPENAI_CHAT), "gpt-4o-2024-08-06")  # priced as "gpt-4o"
    # gpt-4o: $2.50 / MTok = 2.5e-6; cached tokens at 0.5x, no write premium
    # baseline: 2006 * 2.5e-6 = 0.005015; actual: 86 * 2.5e-6 + 1920 * 1.25e-6 = 0.002615
    assert (chat.usage.input_tokens, chat.usage.cache_read_tokens) == (86, 1920)
    assert chat.baseline_usd == pytest.approx(0.005015)
    assert chat.actual_usd == pytest.approx(0.002615)
    assert chat.net_saved_usd == pytest.approx(0.0024)
    assert chat.write_premium_usd == 0
    responses = {"usage": {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4096}}}
    r = layer.record(responses, "gpt-4.1")
    # gpt-4.1: $2 / MTok, cached at 0.25x: 4096 * 2e-6 * 0.75 = 0.006144
    assert r.net_saved_usd == pytest.approx(0.006144)
    assert layer.totals()["total"]["calls"] == 2


def test_price_table_can_be_overridden_and_unknown_models_are_unpriced():
    layer = PromptCacheLayer(prices={"my-model": ModelPrice(10.0, cache_read=0.2)})
    s = layer.record({"usage": {"prompt_tokens": 1000, "prompt_tokens_details": {
        "cached_tokens": 1000}}}, "my-model-v2")  # fmt: skip
    assert s.net_saved_usd == pytest.approx(1000 * 1e-5 * 0.8)
    unknown = layer.record(ANTHROPIC_READ, "someone-elses-model")
    assert (unknown.priced, unknown.net_saved_usd) == (False, 0.0)
    assert unknown.usage.cache_read_tokens == 3012
    with pytest.raises(ValueError, match="no prompt usage"):
        parse_usage({"choices": []}, "gpt-4o")
    with pytest.raises(ValueError, match="cache_read"):
        ModelPrice(1.0, cache_read=-0.1)


LONG_SYSTEM = "You are a meticulous senior engineer. " * 120  # 4,560 chars ~ 1,140 tokens
TOOL = {"name": "search", "description": "Search the codebase. " * 4, "input_schema": {}}


def test_breakpoints_go_where_the_prefix_passes_the_minimum():
    layer = PromptCacheLayer()
    request = {
        "model": SONNET,
        "max_tokens": 1024,
        "tools": [TOOL],
        "system": LONG_SYSTEM,
        "messages": [
            {"role": "user", "content": "Fix the auth bug."},
            {"role": "assistant", "content": [{"type": "text", "text": "Looking..."}]},
            {"role": "user", "content": "Also add a test."},
        ],
    }
    before = copy.deepcopy(request)
    out = layer.add_breakpoints(request)
    assert request == before  # the caller's request is not modified
    mark = {"type": "ephemeral"}
    # tools alone (~30 tokens) are below Sonnet's 1,024: no mark on them
    assert "cache_control" not in out["tools"][-1]
    assert out["system"] == [{"type": "text", "text": LONG_SYSTEM, "cache_control": mark}]
    # the last message ends the longest prefix: the next turn reads it all from the cache
    assert out["messages"][-1]["content"] == [
        {"type": "text", "text": "Also add a test.", "cache_control": mark}
    ]
    marks = str(out).count("cache_control")
    assert 2 <= marks <= 4
    assert out["max_tokens"] == 1024


def test_no_breakpoint_below_the_model_minimum_or_when_skipping():
    layer = PromptCacheLayer()
    short = {
        "model": SONNET,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert layer.add_breakpoints(short) == short
    # ~1,140 tokens: enough for Sonnet (1,024), not for Haiku 3.5 (2,048)
    mid = {"model": "claude-3-5-haiku-20241022", "system": LONG_SYSTEM, "messages": []}
    assert layer.add_breakpoints(mid) == mid
    assert "cache_control" in str(layer.add_breakpoints({**mid, "model": SONNET}))
    skip = layer.add_breakpoints({**mid, "model": SONNET}, config=RequestConfig(skip_cache=True))
    assert "cache_control" not in str(skip)
    exact = PromptCacheLayer(count_tokens=lambda text: len(text.split()), min_tokens=600)
    assert "cache_control" in str(exact.add_breakpoints(mid))  # 720 words >= 600


def test_existing_breakpoints_count_toward_the_limit_of_four():
    layer = PromptCacheLayer(cache_ttl="1h")
    marked = {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}
    messages = [{"role": "user", "content": [dict(marked)]} for _ in range(4)]
    request = {"model": SONNET, "messages": messages}
    assert layer.add_breakpoints(request) == request  # four already: none added
    fresh = layer.add_breakpoints({"model": SONNET, "system": LONG_SYSTEM, "messages": []})
    assert fresh["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


class FakeAnthropic:
    """The fake provider: records the request, returns a recorded response."""

    def __init__(self, response, is_async=False):
        self.requests = []
        self.messages = self
        self._response = response
        self._async = is_async

    def create(self, **kwargs):
        self.requests.append(kwargs)
        if not self._async:
            return self._response

        async def respond():
            await asyncio.sleep(0)
            return self._response

        return respond()


def test_anthropic_create_sync_and_async_use_the_provider_once_each():
    layer = PromptCacheLayer()
    client = FakeAnthropic(_ns(ANTHROPIC_WRITE))
    response = layer.anthropic_create(
        client, model=SONNET, max_tokens=100, system=LONG_SYSTEM, messages=[]
    )
    assert response.usage.cache_creation_input_tokens == 3012
    assert client.requests[0]["system"][0]["cache_control"] == {"type": "ephemeral"}
    aclient = FakeAnthropic(_ns(ANTHROPIC_READ), is_async=True)
    asyncio.run(layer.anthropic_acreate(aclient, model=SONNET, system=LONG_SYSTEM, messages=[]))
    assert len(aclient.requests) == 1
    assert layer.totals()["total"]["net_saved_usd"] == pytest.approx(0.0058734)
