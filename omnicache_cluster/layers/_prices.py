"""Prompt-cache prices per model, and the savings arithmetic.

Prices are USD per million input tokens; cache reads and writes are multipliers of
that price, as the providers publish them: Anthropic bills a cache read at 0.1x, a
5-minute cache write at 1.25x and a 1-hour write at 2x; OpenAI caches automatically,
bills cached tokens at 0.5x (GPT-4o), 0.25x (GPT-4.1, o3, o4-mini) or 0.1x (GPT-5),
and charges nothing extra for writes. The table is a default: pass ``prices=`` to
`PromptCacheLayer` to correct or extend it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PromptCacheSavings", "PromptCacheUsage", "price_of"]


@dataclass(frozen=True)
class ModelPrice:
    """One model's input price and prompt-cache multipliers.

    Attributes:
        input_per_mtok: USD per million uncached input tokens.
        cache_read: price multiplier of a token read from the provider's cache.
        cache_write: multiplier of a token written to the cache (5-minute ttl).
        cache_write_1h: multiplier of a token written with Anthropic's 1-hour ttl.
        min_cacheable_tokens: the shortest prefix the provider caches.
    """

    input_per_mtok: float
    cache_read: float = 0.1
    cache_write: float = 1.25
    cache_write_1h: float = 2.0
    min_cacheable_tokens: int = 1024

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "cache_read", "cache_write", "cache_write_1h"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not isinstance(self.min_cacheable_tokens, int) or self.min_cacheable_tokens < 1:
            raise ValueError(
                f"min_cacheable_tokens must be a positive int, got {self.min_cacheable_tokens!r}"
            )


def _anthropic(price: float, min_tokens: int = 1024) -> ModelPrice:
    return ModelPrice(price, 0.1, 1.25, 2.0, min_tokens)


def _openai(price: float, read: float) -> ModelPrice:
    return ModelPrice(price, read, 1.0, 1.0, 1024)


#: Model name (or name prefix) → price. The longest matching prefix wins, so
#: ``claude-sonnet-4-5-20250929`` is priced as ``claude-sonnet-4``.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "claude-opus-4": _anthropic(15.0),
    "claude-opus-4-5": _anthropic(5.0, 4096),
    "claude-sonnet-4": _anthropic(3.0),
    "claude-3-7-sonnet": _anthropic(3.0),
    "claude-3-5-sonnet": _anthropic(3.0),
    "claude-haiku-4-5": _anthropic(1.0, 4096),
    "claude-3-5-haiku": _anthropic(0.8, 2048),
    "claude-3-haiku": ModelPrice(0.25, 0.12, 1.2, 2.0, 2048),
    "gpt-4o": _openai(2.5, 0.5),
    "gpt-4o-mini": _openai(0.15, 0.5),
    "gpt-4.1": _openai(2.0, 0.25),
    "gpt-4.1-mini": _openai(0.4, 0.25),
    "gpt-4.1-nano": _openai(0.1, 0.25),
    "o1": _openai(15.0, 0.5),
    "o3": _openai(2.0, 0.25),
    "o4-mini": _openai(1.1, 0.25),
    "gpt-5": _openai(1.25, 0.1),
    "gpt-5-mini": _openai(0.25, 0.1),
}


def price_of(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """Return the price of ``model``: an exact entry, else the longest prefix entry."""
    if model in prices:
        return prices[model]
    best = max((name for name in prices if model.startswith(name)), key=len, default=None)
    return prices[best] if best is not None else None


@dataclass(frozen=True)
class PromptCacheUsage:
    """The prompt tokens of one response, split by how the provider billed them.

    Attributes:
        provider: ``anthropic`` or ``openai``.
        model: the model name.
        input_tokens: tokens billed at the full input price.
        cache_read_tokens: tokens read from the provider's cache.
        cache_write_tokens: tokens written to the cache (5-minute ttl).
        cache_write_1h_tokens: tokens written with a 1-hour ttl (Anthropic).
    """

    provider: str
    model: str
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every prompt token, however billed."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
            + self.cache_write_1h_tokens
        )


@dataclass(frozen=True)
class PromptCacheSavings:
    """What provider prompt caching saved on one response, net of the write premium.

    Attributes:
        usage: the token split.
        priced: whether the model had a price (else the USD fields are 0).
        baseline_usd: the prompt's cost had nothing been cached.
        actual_usd: what it cost.
        read_savings_usd: gross saving of the cache reads.
        write_premium_usd: the extra paid for cache writes.
        net_saved_usd: ``baseline_usd - actual_usd`` (negative when the writes cost
            more than the reads saved).
    """

    usage: PromptCacheUsage
    priced: bool
    baseline_usd: float
    actual_usd: float
    read_savings_usd: float
    write_premium_usd: float
    net_saved_usd: float

    @classmethod
    def of(cls, usage: PromptCacheUsage, price: ModelPrice | None) -> PromptCacheSavings:
        """Price ``usage`` (all zeros without a price)."""
        if price is None:
            return cls(usage, False, 0.0, 0.0, 0.0, 0.0, 0.0)
        per_token = price.input_per_mtok / 1_000_000
        u = usage
        baseline = u.prompt_tokens * per_token
        read = u.cache_read_tokens * per_token * (1 - price.cache_read)
        premium = per_token * (
            u.cache_write_tokens * (price.cache_write - 1)
            + u.cache_write_1h_tokens * (price.cache_write_1h - 1)
        )
        actual = baseline - read + premium
        return cls(usage, True, baseline, actual, read, premium, baseline - actual)

    def as_dict(self) -> dict[str, Any]:
        """Return the savings and the token split as one flat dict."""
        u = self.usage
        return {
            "provider": u.provider,
            "model": u.model,
            "input_tokens": u.input_tokens,
            "cache_read_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens + u.cache_write_1h_tokens,
            "priced": self.priced,
            "baseline_usd": self.baseline_usd,
            "actual_usd": self.actual_usd,
            "read_savings_usd": self.read_savings_usd,
            "write_premium_usd": self.write_premium_usd,
            "net_saved_usd": self.net_saved_usd,
        }
