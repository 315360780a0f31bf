"""LeaseTable and QuotaBook without Ray: asyncio and a hand-driven clock."""

from __future__ import annotations

import asyncio

import pytest

from omnicache_cluster.core.quota import QuotaBook, TenantQuota, TokenBucket
from omnicache_cluster.core.singleflight import LeaseTable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_one_leader_and_waiters_get_its_value():
    table = LeaseTable()
    first = await table.acquire("k", "t", lease_ttl=5, wait_timeout=5)
    assert first[0] == "lead"
    waiters = [asyncio.create_task(table.acquire("k", "t", 5, 5)) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert all(not w.done() for w in waiters)
    assert table.snapshot()["waiting"] == 10
    assert table.release("k", first[1], ("done", b"value"))
    assert await asyncio.gather(*waiters) == [("done", b"value")] * 10
    assert len(table) == 0
    # The flight is over: the next caller leads again (the cache serves hits before this).
    assert (await table.acquire("k", "t", 5, 5))[0] == "lead"


async def test_leader_error_reaches_waiters_and_release_needs_the_token():
    table = LeaseTable()
    _, token = await table.acquire("k", "t", 5, 5)
    waiter = asyncio.create_task(table.acquire("k", "t", 5, 5))
    await asyncio.sleep(0)
    assert not table.release("k", token + 1, ("done", b"wrong token"))
    err = KeyError("boom")
    assert table.release("k", token, ("error", err))
    assert await waiter == ("error", err)


async def test_expired_lease_passes_to_one_waiter():
    clock = Clock()
    table = LeaseTable(clock=clock)
    _, dead_token = await table.acquire("k", "t", lease_ttl=2, wait_timeout=60)
    waiters = [asyncio.create_task(table.acquire("k", "t", 2, 60)) for _ in range(3)]
    await asyncio.sleep(0.01)
    clock.now += 1.9
    assert table.reap() == 0
    clock.now += 0.2
    assert table.reap() == 1
    await asyncio.sleep(0.05)
    done = [w for w in waiters if w.done()]
    assert len(done) == 1
    kind, new_token = done[0].result()
    assert kind == "lead"
    assert new_token != dead_token
    assert not table.release("k", dead_token, ("done", b"late"))  # the dead leader's
    assert table.release("k", new_token, ("done", b"v"))
    rest = await asyncio.gather(*(w for w in waiters if w not in done))
    assert rest == [("done", b"v")] * 2
    assert table.snapshot()["expired"] == 1


async def test_renewal_keeps_the_lease():
    clock = Clock()
    table = LeaseTable(clock=clock)
    _, token = await table.acquire("k", "t", lease_ttl=1, wait_timeout=60)
    for _ in range(5):
        clock.now += 0.9
        assert table.renew("k", token, 1)
        assert table.reap() == 0
    assert not table.renew("k", token + 1, 1)
    clock.now += 1.1
    assert table.reap() == 1
    assert not table.renew("k", token, 1)


async def test_waiter_times_out():
    table = LeaseTable()
    await table.acquire("k", "t", 60, 60)
    assert await table.acquire("k", "t", 60, wait_timeout=0.05) == ("timeout", None)


def test_token_bucket_bursts_then_refills():
    clock = Clock()
    bucket = TokenBucket(per_minute=10, clock=clock)
    assert [bucket.try_take() for _ in range(11)] == [True] * 10 + [False]
    assert bucket.seconds_until_token() == pytest.approx(6.0)
    clock.now += 6.0
    assert bucket.try_take()
    assert not bucket.try_take()


async def test_quota_raise_policy_names_the_limit():
    book = QuotaBook()
    book.set("acme", TenantQuota(computes_per_minute=2, policy="raise"))
    table = LeaseTable(book)
    outcomes = [await table.acquire(f"k{i}", "acme", 5, 5) for i in range(4)]
    assert [o[0] for o in outcomes] == ["lead", "lead", "quota", "quota"]
    assert outcomes[2][1] == "computes_per_minute"
    assert book.usage("acme").throttled == 2
    assert book.usage("acme").computes == 2
    # Other tenants are not limited.
    assert (await table.acquire("k9", "other", 5, 5))[0] == "lead"


async def test_quota_wait_policy_waits_for_a_concurrency_slot():
    book = QuotaBook()
    book.set("acme", TenantQuota(max_concurrent_computes=1, policy="wait"))
    table = LeaseTable(book)
    _, token = await table.acquire("a", "acme", 5, 5)
    second = asyncio.create_task(table.acquire("b", "acme", 5, 5))
    await asyncio.sleep(0.05)
    assert not second.done()
    table.release("a", token, ("done", b""))
    assert (await asyncio.wait_for(second, 2))[0] == "lead"
    blocked = await table.acquire("c", "acme", 5, wait_timeout=0.1)
    assert blocked == ("timeout", None)


def test_quota_validation():
    with pytest.raises(ValueError, match="max_bytes"):
        TenantQuota(max_bytes=0)
    with pytest.raises(ValueError, match="computes_per_minute"):
        TenantQuota(computes_per_minute=-1)
    with pytest.raises(ValueError, match="policy"):
        TenantQuota(policy="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrent"):
        TenantQuota(max_concurrent_computes=True)
