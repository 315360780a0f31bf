"""Single-flight leases: for each missing key, one caller computes and the rest wait.

This is groupcache's ``singleflight`` with two things it did not need: leases expire
(a leader whose process died must not block its key forever) and tenants have compute
quotas. `LeaseTable` is asyncio-based and Ray-free; the coordinator actor hosts one,
and every caller in the cluster talks to it, so deduplication is cluster-wide.

The protocol, seen from a caller that just missed the cache::

    acquire(key) ──► ("lead", token)     compute, store, release(key, token, value)
                 ├─► ("done", value)     another caller computed it (encoded bytes)
                 ├─► ("error", exc)      the leader's exception, to re-raise
                 ├─► ("retry", None)     the leader's value could not be shared
                 ├─► ("quota", limit)    the tenant is over a compute limit
                 └─► ("timeout", None)   waited ``wait_timeout`` seconds

A leader renews its lease while it computes. When a lease runs out (its process died,
or it stopped renewing), the table ends that flight and one of its waiters becomes
the next leader; a late `release` with the old token is ignored.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omnicache_cluster.core.quota import QuotaBook

__all__ = ["Flight", "LeaseTable", "Outcome"]

Outcome = tuple[str, Any]


@dataclass
class Flight:
    """One key being computed."""

    token: int
    tenant: str
    expires: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None
    waiters: int = 0


class LeaseTable:
    """In-flight computes by key, with expiring, renewable leases.

    Args:
        quotas: the tenant compute quotas consulted before a caller may lead.
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self, quotas: QuotaBook | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self.quotas = quotas if quotas is not None else QuotaBook(clock)
        self._flights: dict[str, Flight] = {}
        self._tokens = itertools.count(1)
        self.acquired = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._flights)

    def _live(self, key: str) -> Flight | None:
        flight = self._flights.get(key)
        if flight is not None and flight.expires <= self._clock():
            self._end(key, flight, ("expired", None))
            self.expired += 1
            return None
        return flight

    def _end(self, key: str, flight: Flight, outcome: Outcome) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.outcome = outcome
        flight.done.set()
        self.quotas.release(flight.tenant)

    async def acquire(
        self, key: str, tenant: str, lease_ttl: float, wait_timeout: float
    ) -> Outcome:
        """Lead the compute of ``key``, or wait for whoever leads it; see the module doc."""
        deadline = self._clock() + wait_timeout
        while True:
            flight = self._live(key)
            if flight is None:
                verdict = await self.quotas.admit(tenant, deadline)
                if verdict is not None:
                    return ("timeout", None) if self._clock() >= deadline else ("quota", verdict)
                if self._live(key) is not None:  # somebody led while we were admitted
                    self.quotas.release(tenant)
                    self.quotas.usage(tenant).computes -= 1
                    continue
                token = next(self._tokens)
                self._flights[key] = Flight(token, tenant, self._clock() + lease_ttl)
                self.acquired += 1
                return ("lead", token)
            remaining = deadline - self._clock()
            if remaining <= 0:
                return ("timeout", None)
            flight.waiters += 1
            self.quotas.usage(tenant).lease_waits += 1
            try:
                # Wake at the lease's end too: an expired lease is ended by the next look.
                wait = min(remaining, max(flight.expires - self._clock(), 0.0) + 0.01)
                await asyncio.wait_for(flight.done.wait(), wait)
            except TimeoutError:
                continue
            finally:
                flight.waiters -= 1
            if flight.outcome is not None and flight.outcome[0] != "expired":
                return flight.outcome

    def renew(self, key: str, token: int, lease_ttl: float) -> bool:
        """Extend the lease of ``key`` if ``token`` still holds it."""
        flight = self._live(key)
        if flight is None or flight.token != token:
            return False
        flight.expires = self._clock() + lease_ttl
        return True

    def release(self, key: str, token: int, outcome: Outcome) -> bool:
        """End the flight of ``key`` with ``outcome`` if ``token`` still holds it."""
        flight = self._flights.get(key)
        if flight is None or flight.token != token:
            return False
        self._end(key, flight, outcome)
        return True

    def reap(self) -> int:
        """End every flight whose lease ran out; return how many."""
        now = self._clock()
        dead = [k for k, f in self._flights.items() if f.expires <= now]
        for key in dead:
            self._end(key, self._flights[key], ("expired", None))
        self.expired += len(dead)
        return len(dead)

    def snapshot(self) -> dict[str, Any]:
        """Return counters and the number of flights in progress."""
        return {
            "in_flight": len(self._flights),
            "waiting": sum(f.waiters for f in self._flights.values()),
            "acquired": self.acquired,
            "expired": self.expired,
        }
