"""`PromptCacheLayer`: provider-side prompt caching, placed and accounted for.

Anthropic caches a prompt prefix only where the request marks it with a
``cache_control`` breakpoint (at most 4 per request), and only if the prefix is at
least the model's minimum cacheable length in tokens. This layer walks the prompt in
the provider's order (tools, then system, then messages), counts tokens, and marks
the ends of the sections whose prefix passes the minimum: the stable ones (tools,
system) first, then the latest message boundary, so the next turn of the
conversation reads the whole history from the cache.

It also reads what the provider reports (OpenAI ``prompt_tokens_details.cached_tokens``,
Anthropic ``cache_read_input_tokens`` and ``cache_creation_input_tokens``) and
reports the money saved *net of the cache-write premium*: a first Anthropic call that
writes 8,000 tokens costs 25% more than an uncached one, and the seed counted only
the reads.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from omnicache_cluster.layers._base import _maybe_await, config_of
from omnicache_cluster.layers._prices import (
    DEFAULT_PRICES,
    ModelPrice,
    PromptCacheSavings,
    PromptCacheUsage,
    price_of,
)
from omnicache_cluster.policies import RequestConfig

__all__ = ["PromptCacheLayer", "estimate_tokens", "parse_usage"]

MAX_BREAKPOINTS = 4


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 4 characters per token (pass ``count_tokens=``
    for exact counts)."""
    return math.ceil(len(text) / 4)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Read a field of an SDK object or of a dict."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _int(obj: Any, name: str) -> int:
    value = _get(obj, name, 0)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def parse_usage(response: Any, model: str, provider: str | None = None) -> PromptCacheUsage:
    """Return the prompt-token split of a response (or of its ``usage``).

    Recognises Anthropic usage (``input_tokens``, ``cache_read_input_tokens``,
    ``cache_creation_input_tokens``, and the ``cache_creation`` 5m/1h breakdown) and
    OpenAI usage (Chat Completions ``prompt_tokens`` + ``prompt_tokens_details``, or
    Responses ``input_tokens`` + ``input_tokens_details``), as objects or dicts.

    Raises:
        ValueError: no usage of a known provider in ``response``.
    """
    usage = _get(response, "usage", None) or response
    anthropic_fields = ("cache_read_input_tokens", "cache_creation_input_tokens")
    if provider == "anthropic" or (
        provider is None and any(_get(usage, f) is not None for f in anthropic_fields)
    ):
        return _anthropic_usage(usage, model)
    details = _get(usage, "prompt_tokens_details") or _get(usage, "input_tokens_details")
    total = _get(usage, "prompt_tokens", None)
    if total is None:
        total = _get(usage, "input_tokens", None)
    if total is None:
        raise ValueError(f"no prompt usage found in {type(response).__qualname__}")
    cached = _int(details, "cached_tokens") if details is not None else 0
    return PromptCacheUsage("openai", model, int(total) - cached, cached)


def _anthropic_usage(usage: Any, model: str) -> PromptCacheUsage:
    written = _int(usage, "cache_creation_input_tokens")
    split = _get(usage, "cache_creation")
    w1h = _int(split, "ephemeral_1h_input_tokens") if split is not None else 0
    return PromptCacheUsage(
        "anthropic",
        model,
        _int(usage, "input_tokens"),
        _int(usage, "cache_read_input_tokens"),
        written - w1h,
        w1h,
    )


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, Mapping):
        if isinstance(block.get("text"), str):
            return block["text"]
        return json.dumps(block, sort_keys=True, default=repr)
    return repr(block)


def _section_text(section: Any) -> str:
    if isinstance(section, str):
        return section
    if isinstance(section, list):
        return "\n".join(_block_text(b) for b in section)
    if isinstance(section, Mapping) and "content" in section:  # a message
        return _section_text(section["content"])
    return _block_text(section)


def _marked(section: Any) -> bool:
    """Whether a section's last block already carries a breakpoint."""
    if isinstance(section, Mapping) and "content" in section:
        return _marked(section["content"])
    if isinstance(section, list) and section:
        return isinstance(section[-1], Mapping) and "cache_control" in section[-1]
    return False


def _with_mark(section: Any, mark: dict[str, str]) -> Any:
    """Return a copy of ``section`` whose last block carries ``mark``."""
    if isinstance(section, Mapping) and "content" in section:  # a message
        return {**section, "content": _with_mark(section["content"], mark)}
    if isinstance(section, str):
        return [{"type": "text", "text": section, "cache_control": mark}]
    if isinstance(section, list) and section and isinstance(section[-1], Mapping):
        return [*section[:-1], {**section[-1], "cache_control": mark}]
    return section


class PromptCacheLayer:
    """Adds Anthropic ``cache_control`` breakpoints and accounts provider cache savings.

    Args:
        prices: per-model prices merged over `DEFAULT_PRICES` (name or name prefix).
        count_tokens: counts the tokens of a text (default: `estimate_tokens`).
        cache_ttl: Anthropic cache ttl of the breakpoints, ``"5m"`` or ``"1h"``.
        min_tokens: overrides every model's minimum cacheable length.
        metrics: the seed's ``CacheMetrics`` target (e.g. ``manager.metrics``, also
            accepted as the first argument): each response that read the provider's
            cache adds to its ``provider_cache_hits``, ``estimated_tokens_saved`` and
            ``estimated_cost_saved_usd`` (net of the cache-write premium here).
        min_chars_to_cache: the seed's character threshold: refused with a
            ``TypeError`` naming ``min_tokens=`` (providers count tokens).

    Example:
        >>> layer = PromptCacheLayer()
        >>> req = layer.add_breakpoints({"model": "claude-sonnet-4-5", "system": "x" * 8000,
        ...                              "messages": [{"role": "user", "content": "hi"}]})
        >>> req["system"][0]["cache_control"]
        {'type': 'ephemeral'}
        >>> s = layer.record({"usage": {"input_tokens": 50, "cache_read_input_tokens": 8000,
        ...                   "cache_creation_input_tokens": 0}}, "claude-sonnet-4-5")
        >>> round(s.net_saved_usd, 4)
        0.0216
    """

    def __init__(
        self,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        count_tokens: Callable[[str], int] = estimate_tokens,
        cache_ttl: str = "5m",
        min_tokens: int | None = None,
        metrics: Any = None,
        min_chars_to_cache: int | None = None,
    ) -> None:
        if min_chars_to_cache is not None:
            raise TypeError(
                "PromptCacheLayer(min_chars_to_cache=) is not supported: providers cache "
                "prompts by token count, and each model has its own minimum; pass "
                "min_tokens= (about min_chars_to_cache / 4) or leave it to the model's price"
            )
        if prices is not None and callable(getattr(prices, "snapshot", None)):
            prices, metrics = None, prices  # the seed's PromptCacheLayer(metrics)
        self._metrics = metrics
        if cache_ttl not in ("5m", "1h"):
            raise ValueError(f"cache_ttl must be '5m' or '1h', got {cache_ttl!r}")
        self._prices = {**DEFAULT_PRICES, **dict(prices or {})}
        self._count = count_tokens
        self._mark = (
            {"type": "ephemeral"} if cache_ttl == "5m" else {"type": "ephemeral", "ttl": "1h"}
        )
        self._min_tokens = min_tokens
        self._lock = threading.Lock()
        self._totals: dict[str, dict[str, Any]] = {}

    def min_tokens_for(self, model: str) -> int:
        """Return the minimum cacheable prefix of ``model``, in tokens."""
        if self._min_tokens is not None:
            return self._min_tokens
        price = price_of(model, self._prices)
        return price.min_cacheable_tokens if price is not None else 1024

    # -- breakpoints --------------------------------------------------------------------

    def _sections(self, request: Mapping[str, Any]) -> list[tuple[str, int, int]]:
        """Return ``(field, index, prefix tokens)`` for each section end, in order."""
        out, total = [], 0
        tools = request.get("tools") or []
        if tools:
            total += sum(self._count(_block_text(t)) for t in tools)
            out.append(("tools", len(tools) - 1, total))
        if request.get("system"):
            total += self._count(_section_text(request["system"]))
            out.append(("system", -1, total))
        for i, message in enumerate(request.get("messages") or []):
            total += self._count(_section_text(message))
            out.append(("messages", i, total))
        return out

    def _choose(self, request: Mapping[str, Any]) -> list[tuple[str, int]]:
        minimum = self.min_tokens_for(str(request.get("model", "")))
        eligible = [(f, i) for f, i, n in self._sections(request) if n >= minimum]
        used = sum(1 for f, i, _ in self._sections(request) if _marked(self._at(request, f, i)))
        if not eligible or used >= MAX_BREAKPOINTS:
            return []
        stable = [s for s in eligible if s[0] in ("tools", "system")]
        latest = [s for s in reversed(eligible) if s[0] == "messages"][:1]
        chosen = list(dict.fromkeys([*stable, *latest]))
        for s in reversed(eligible):  # more message boundaries while budget remains
            if len(chosen) >= MAX_BREAKPOINTS - used:
                break
            if s not in chosen:
                chosen.append(s)
        return chosen[: MAX_BREAKPOINTS - used]

    @staticmethod
    def _at(request: Mapping[str, Any], field: str, index: int) -> Any:
        value = request[field]
        return value if field == "system" else value[index]

    def add_breakpoints(
        self, request: Mapping[str, Any], *, config: RequestConfig | None = None
    ) -> dict[str, Any]:
        """Return a copy of an Anthropic ``messages.create`` request with breakpoints
        where the prefix passes the model's minimum (the input is not modified).

        ``config.skip_cache`` returns the request unchanged.
        """
        out = dict(request)
        if config_of(config).skip_cache:
            return out
        for field, index in self._choose(request):
            if _marked(self._at(out, field, index)):
                continue
            if field == "system":
                out["system"] = _with_mark(out["system"], self._mark)
            else:
                seq = list(out[field])
                seq[index] = (
                    {**seq[index], "cache_control": self._mark}
                    if field == "tools"
                    else _with_mark(seq[index], self._mark)
                )
                out[field] = seq
        return out

    # -- accounting ---------------------------------------------------------------------

    def record(self, response: Any, model: str, provider: str | None = None) -> PromptCacheSavings:
        """Account one response's prompt-cache usage; return its savings.

        Raises:
            ValueError: the response holds no usage of a known provider.
        """
        usage = parse_usage(response, model, provider)
        savings = PromptCacheSavings.of(usage, price_of(model, self._prices))
        with self._lock:
            t = self._totals.setdefault(
                model,
                dict.fromkeys(("calls", "cache_hits", "cache_read_tokens", "cache_write_tokens"), 0)
                | dict.fromkeys(("write_premium_usd", "net_saved_usd"), 0.0),
            )
            t["calls"] += 1
            t["cache_hits"] += int(usage.cache_read_tokens > 0)
            t["cache_read_tokens"] += usage.cache_read_tokens
            t["cache_write_tokens"] += usage.cache_write_tokens + usage.cache_write_1h_tokens
            t["write_premium_usd"] += savings.write_premium_usd
            t["net_saved_usd"] += savings.net_saved_usd
        if self._metrics is not None and usage.cache_read_tokens > 0:
            _add_provider_savings(self._metrics, usage.cache_read_tokens, savings.net_saved_usd)
        return savings

    def totals(self) -> dict[str, Any]:
        """Return the accounted totals per model and overall (``net_saved_usd`` is net
        of the write premium)."""
        with self._lock:
            per_model = {m: dict(t) for m, t in self._totals.items()}
        overall: dict[str, Any] = {}
        for t in per_model.values():
            for k, v in t.items():
                overall[k] = overall.get(k, 0) + v
        return {"models": per_model, "total": overall}

    def reset(self) -> None:
        """Forget every accounted response."""
        with self._lock:
            self._totals.clear()

    # -- provider calls -----------------------------------------------------------------

    def anthropic_create(
        self, client: Any, *, config: RequestConfig | None = None, **kwargs: Any
    ) -> Any:
        """``client.messages.create`` with breakpoints added and savings accounted."""
        response = client.messages.create(**self.add_breakpoints(kwargs, config=config))
        self.record(response, str(kwargs.get("model", "")), "anthropic")
        return response

    async def anthropic_acreate(
        self, client: Any, *, config: RequestConfig | None = None, **kwargs: Any
    ) -> Any:
        """Async `anthropic_create` (``AsyncAnthropic`` client)."""
        response = await _maybe_await(
            client.messages.create(**self.add_breakpoints(kwargs, config=config))
        )
        self.record(response, str(kwargs.get("model", "")), "anthropic")
        return response

    def openai_create(self, client: Any, **kwargs: Any) -> Any:
        """``client.chat.completions.create`` with savings accounted (OpenAI caches
        prompts of 1,024 tokens and more by itself)."""
        response = client.chat.completions.create(**kwargs)
        self.record(response, str(kwargs.get("model", "")), "openai")
        return response

    async def openai_acreate(self, client: Any, **kwargs: Any) -> Any:
        """Async `openai_create` (``AsyncOpenAI`` client)."""
        response = await _maybe_await(client.chat.completions.create(**kwargs))
        self.record(response, str(kwargs.get("model", "")), "openai")
        return response


def _add_provider_savings(metrics: Any, tokens: int, usd: float) -> None:
    """Add one provider cache hit to a seed-style metrics object."""
    record = getattr(metrics, "record_provider_cache_hit", None)
    if callable(record):  # `CacheMetrics`
        record(tokens, usd)
        return
    lock = getattr(metrics, "_lock", None) or threading.Lock()
    with lock:
        metrics.provider_cache_hits = getattr(metrics, "provider_cache_hits", 0) + 1
        metrics.estimated_tokens_saved = getattr(metrics, "estimated_tokens_saved", 0) + tokens
        metrics.estimated_cost_saved_usd = getattr(metrics, "estimated_cost_saved_usd", 0.0) + usd
