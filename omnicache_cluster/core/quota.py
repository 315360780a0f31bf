"""Tenant quotas: bytes held, concurrent computes, and computes per minute.

`QuotaBook` is what the coordinator consults on the miss path, before a caller may
start computing. It is asyncio-based but knows nothing of Ray, and takes its clock as
an argument so tests can drive time by hand.

``computes_per_minute`` is a token bucket holding at most ``computes_per_minute``
tokens, refilled continuously at ``computes_per_minute / 60`` per second: a burst of
N computes, then one every ``60 / N`` seconds. ``max_bytes`` is enforced by the shards,
each on its share (``max_bytes / number of shards``), without a coordinator call per
write.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["QuotaBook", "TenantQuota", "TenantUsage", "TokenBucket"]

Policy = Literal["wait", "raise"]


@dataclass(frozen=True)
class TenantQuota:
    """The limits of one tenant; ``None`` means unlimited.

    Attributes:
        max_bytes: bytes the tenant's entries may hold across the cluster.
        max_concurrent_computes: computes (cache misses being filled) at once.
        computes_per_minute: sustained compute rate (a burst of this many is allowed).
        policy: on a compute limit, ``"wait"`` for room or ``"raise"`` `QuotaExceeded`.
    """

    max_bytes: int | None = None
    max_concurrent_computes: int | None = None
    computes_per_minute: float | None = None
    policy: Policy = "wait"

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_concurrent_computes"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        rate = self.computes_per_minute
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0
        ):
            raise ValueError(f"computes_per_minute must be a positive number, got {rate!r}")
        if self.policy not in ("wait", "raise"):
            raise ValueError(f"policy must be 'wait' or 'raise', got {self.policy!r}")


class TokenBucket:
    """Capacity ``per_minute`` tokens, refilled at ``per_minute / 60`` per second."""

    __slots__ = ("_clock", "_last", "capacity", "rate", "tokens")

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def try_take(self) -> bool:
        """Take one token if there is one."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def seconds_until_token(self) -> float:
        """Seconds until a token is available (0 if one is now)."""
        self._refill()
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass
class TenantUsage:
    """Counters of one tenant on the miss path."""

    computes: int = 0
    running: int = 0
    throttled: int = 0
    lease_waits: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class QuotaBook:
    """Admits computes per tenant under `TenantQuota` limits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._quotas: dict[str, TenantQuota] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._usage: dict[str, TenantUsage] = {}
        self._changed: asyncio.Condition | None = None
        self._wakers: set[asyncio.Task[None]] = set()

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def set(self, tenant: str, quota: TenantQuota | None) -> None:
        """Set (or with ``None`` remove) ``tenant``'s quota; takes effect at once."""
        if quota is None:
            self._quotas.pop(tenant, None)
            self._buckets.pop(tenant, None)
        else:
            old = self._quotas.get(tenant)
            self._quotas[tenant] = quota
            if quota.computes_per_minute is None:
                self._buckets.pop(tenant, None)
            elif old is None or old.computes_per_minute != quota.computes_per_minute:
                self._buckets[tenant] = TokenBucket(quota.computes_per_minute, self._clock)
        self._notify()

    def get(self, tenant: str) -> TenantQuota | None:
        """Return ``tenant``'s quota, if any."""
        return self._quotas.get(tenant)

    def quotas(self) -> dict[str, TenantQuota]:
        """Return every tenant's quota."""
        return dict(self._quotas)

    def tenants(self) -> list[str]:
        """Return the tenants with a quota or counters."""
        return sorted(set(self._quotas) | set(self._usage))

    def usage(self, tenant: str) -> TenantUsage:
        """Return ``tenant``'s counters (created on first use)."""
        usage = self._usage.get(tenant)
        if usage is None:
            usage = self._usage[tenant] = TenantUsage()
        return usage

    def _blocked(self, tenant: str) -> tuple[str | None, float]:
        """Return the limit in the way (or ``None``) and how long a token is away."""
        quota = self._quotas.get(tenant)
        if quota is None:
            return None, 0.0
        limit = quota.max_concurrent_computes
        if limit is not None and self.usage(tenant).running >= limit:
            return "max_concurrent_computes", math.inf
        bucket = self._buckets.get(tenant)
        if bucket is not None:
            wait = bucket.seconds_until_token()
            if wait > 0:
                return "computes_per_minute", wait
        return None, 0.0

    async def admit(self, tenant: str, deadline: float) -> str | None:
        """Wait for room to start one compute of ``tenant``.

        Returns ``None`` once admitted (the caller must `release` later), or the name
        of the limit in the way when the tenant's policy is ``"raise"`` or the
        ``deadline`` (on this book's clock) passed first.
        """
        usage = self.usage(tenant)
        counted = False
        while True:
            limit, token_wait = self._blocked(tenant)
            if limit is None:
                bucket = self._buckets.get(tenant)
                if bucket is None or bucket.try_take():
                    usage.running += 1
                    usage.computes += 1
                    return None
                continue
            if not counted:
                usage.throttled += 1
                counted = True
            quota = self._quotas[tenant]
            remaining = deadline - self._clock()
            if quota.policy == "raise" or remaining <= 0:
                return limit
            cond = self._cond()
            async with cond:
                with contextlib.suppress(TimeoutError):  # a token may have refilled
                    await asyncio.wait_for(cond.wait(), min(token_wait, remaining, 1.0))

    def release(self, tenant: str) -> None:
        """End one admitted compute of ``tenant``."""
        usage = self.usage(tenant)
        usage.running = max(0, usage.running - 1)
        self._notify()

    def _notify(self) -> None:
        cond = self._changed
        if cond is None:
            return

        async def wake() -> None:
            async with cond:
                cond.notify_all()

        try:
            task = asyncio.get_running_loop().create_task(wake())
        except RuntimeError:  # no loop: nobody can be waiting
            return
        self._wakers.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._wakers.discard)
