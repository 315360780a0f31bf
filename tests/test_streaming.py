"""StreamingResponseCache through the real cluster: replay, failures, concurrent streams."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import aclosing

import pytest

from omnicache_cluster import MISS
from omnicache_cluster.layers import StreamingResponseCache, StreamInterrupted
from omnicache_cluster.policies import RequestConfig

pytestmark = pytest.mark.ray

MSGS = [{"role": "user", "content": "Tell me a story."}]
CHUNKS = ["Once ", {"delta": "upon"}, None, "", " a time", {"usage": {"tokens": 7}}]


class Upstream:
    """A fake streaming provider: yields ``chunks``, optionally fails after ``fail_after``
    of them, and counts how often it was called and closed."""

    def __init__(self, chunks=CHUNKS, fail_after=None, gate=None) -> None:
        self.chunks = list(chunks)
        self.fail_after = fail_after
        self.gate = gate
        self.calls = 0
        self.closed = 0

    def __call__(self, messages):
        self.calls += 1
        try:
            for i, chunk in enumerate(self.chunks):
                if i == self.fail_after:
                    raise ConnectionResetError("provider dropped the stream")
                if i == 1 and self.gate is not None:
                    assert self.gate.wait(30)
                yield chunk
        finally:
            self.closed += 1


def test_replay_is_identical_chunk_by_chunk(cluster):
    sc = StreamingResponseCache(cluster)
    upstream = Upstream()
    first = list(sc.get_or_stream(MSGS, upstream, "gpt-4o"))
    second = list(sc.get_or_stream(MSGS, upstream, "gpt-4o"))
    assert (sc.stats()["hits"], sc.stats()["computes"]) == (1, 1)
    assert first == CHUNKS
    assert second == CHUNKS
    assert [type(c) for c in second] == [type(c) for c in CHUNKS]
    assert upstream.calls == 1
    assert sc.get(MSGS, "gpt-4o") == CHUNKS
    assert sc.get(MSGS, "gpt-4o", system="other") is MISS
    assert sc.invalidate_model("gpt-4o") == 1
    assert list(sc.get_or_stream(MSGS, upstream, "gpt-4o")) == CHUNKS
    assert upstream.calls == 2


def test_failed_stream_is_not_cached(cluster):
    sc = StreamingResponseCache(cluster)
    broken = Upstream(fail_after=2)
    stream = sc.get_or_stream(MSGS, broken, "gpt-4o")
    assert [next(stream), next(stream)] == CHUNKS[:2]
    with pytest.raises(ConnectionResetError):
        next(stream)
    assert sc.get(MSGS, "gpt-4o") is MISS
    healthy = Upstream()
    assert list(sc.get_or_stream(MSGS, healthy, "gpt-4o")) == CHUNKS
    assert healthy.calls == 1  # the failed stream left no claim behind to wait for
    assert sc.get(MSGS, "gpt-4o") == CHUNKS


def test_abandoned_stream_is_not_cached_and_upstream_is_closed(cluster):
    sc = StreamingResponseCache(cluster)
    upstream = Upstream()
    stream = sc.get_or_stream(MSGS, upstream, "gpt-4o")
    assert next(stream) == CHUNKS[0]
    stream.close()
    assert upstream.closed == 1
    assert sc.get(MSGS, "gpt-4o") is MISS
    started = time.monotonic()
    assert list(sc.get_or_stream(MSGS, Upstream(), "gpt-4o")) == CHUNKS
    assert time.monotonic() - started < 5  # led at once, no stall behind a dead claim


def test_skip_cache_streams_live_and_stores_nothing(cluster):
    sc = StreamingResponseCache(cluster)
    upstream = Upstream()
    skip = RequestConfig(skip_cache=True)
    assert list(sc.get_or_stream(MSGS, upstream, "gpt-4o", config=skip)) == CHUNKS
    assert list(sc.get_or_stream(MSGS, upstream, "gpt-4o", config=skip)) == CHUNKS
    assert upstream.calls == 2
    assert sc.get(MSGS, "gpt-4o") is MISS


async def test_concurrent_first_streams_make_one_upstream_call_and_replay_live(cluster):
    sc = StreamingResponseCache(cluster)
    release = asyncio.Event()
    calls = 0

    async def upstream(messages):
        nonlocal calls
        calls += 1
        yield "c0"
        await release.wait()  # the rest comes only after every follower saw c0
        for i in range(1, 6):
            await asyncio.sleep(0.01)
            yield f"c{i}"

    got_first = [asyncio.Event() for _ in range(4)]
    ticks = 0

    async def ticker():
        nonlocal ticks
        while not release.is_set() or ticks < 5:
            ticks += 1
            await asyncio.sleep(0.01)

    async def consume(i):
        out = []
        async with aclosing(sc.aget_or_stream(MSGS, upstream, "gpt-4o")) as stream:
            async for chunk in stream:
                out.append(chunk)
                got_first[i].set()
        return out

    tick_task = asyncio.create_task(ticker())
    consumers = [asyncio.create_task(consume(i)) for i in range(4)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in got_first)), 20)
    assert calls == 1  # four consumers have c0, the upstream was called once
    before = ticks
    await asyncio.sleep(0.1)
    assert ticks > before + 2  # the loop keeps running while the followers wait
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*consumers), 20)
    await tick_task
    expected = [f"c{i}" for i in range(6)]
    assert results == [expected] * 4
    assert calls == 1
    assert (sc.stats()["computes"], sc.stats()["hits"]) == (1, 3)  # one led, three followed
    assert await sc.aget(MSGS, "gpt-4o") == expected


def test_a_ray_task_follows_a_live_stream_of_the_driver(cluster, ray_session):
    sc = StreamingResponseCache(cluster)
    gate = threading.Event()
    upstream = Upstream(gate=gate)
    leader_got: list = []
    leader = threading.Thread(
        target=lambda: leader_got.extend(sc.get_or_stream(MSGS, upstream, "gpt-4o"))
    )
    leader.start()

    @ray_session.remote(num_cpus=0.1)
    def follow(client):
        from omnicache_cluster.layers import StreamingResponseCache as SRC

        out = []
        for chunk in SRC(client).get_or_stream(MSGS, lambda m: iter(["not the leader"]), "gpt-4o"):
            out.append(chunk)
            if len(out) == 1:
                client.set("follower-has-the-first-chunk", True)
        return out

    ref = follow.remote(cluster)
    deadline = time.monotonic() + 30
    while cluster.get("follower-has-the-first-chunk") is MISS:
        assert time.monotonic() < deadline, "the follower never got the first chunk"
        time.sleep(0.05)
    assert upstream.calls == 1
    gate.set()  # only now does the leader's upstream go on
    assert ray_session.get(ref, timeout=30) == CHUNKS
    leader.join(10)
    assert leader_got == CHUNKS
    assert upstream.calls == 1


async def test_follower_of_a_failed_stream_raises_stream_interrupted(cluster):
    sc = StreamingResponseCache(cluster)
    release = asyncio.Event()

    async def failing(messages):
        yield "c0"
        await release.wait()
        raise ConnectionResetError("provider dropped the stream")

    async def consume():
        out = []
        async with aclosing(sc.aget_or_stream(MSGS, failing, "gpt-4o")) as stream:
            async for chunk in stream:
                out.append(chunk)
        return out

    leader = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    follower = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    release.set()
    outcomes = await asyncio.gather(leader, follower, return_exceptions=True)
    assert isinstance(outcomes[0], ConnectionResetError)
    assert isinstance(outcomes[1], StreamInterrupted)
    assert "failed after 1 chunks" in str(outcomes[1])
    assert "ConnectionResetError" in str(outcomes[1])
    assert await sc.aget(MSGS, "gpt-4o") is MISS


async def test_async_stream_needs_an_async_iterable(cluster):
    sc = StreamingResponseCache(cluster)
    with pytest.raises(TypeError, match="async iterable"):
        async for _ in sc.aget_or_stream(MSGS, lambda m: iter(["sync"]), "gpt-4o"):
            pass

    async def make_stream(messages):  # an awaitable returning an async iterable
        async def gen():
            yield "a"
            yield "b"

        return gen()

    assert [c async for c in sc.aget_or_stream(MSGS, make_stream, "m2")] == ["a", "b"]
    assert [c async for c in sc.aget_or_stream(MSGS, make_stream, "m2")] == ["a", "b"]
    assert sc.stats()["computes"] == 1


async def test_follower_takes_over_when_the_leader_is_abandoned_before_any_chunk(cluster):
    sc = StreamingResponseCache(cluster)
    calls = 0
    first_started = asyncio.Event()

    async def upstream(messages):
        nonlocal calls
        calls += 1
        if calls == 1:
            first_started.set()
            await asyncio.sleep(60)  # never yields: its consumer gives up
        for chunk in ("x", "y"):
            yield chunk

    async def consume():
        return [c async for c in sc.aget_or_stream(MSGS, upstream, "gpt-4o")]

    leader = asyncio.create_task(consume())
    await asyncio.wait_for(first_started.wait(), 20)
    follower = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    leader.cancel()
    assert await asyncio.wait_for(follower, 20) == ["x", "y"]
    assert leader.cancelled()
    assert calls == 2  # the follower led the second stream itself
    assert await sc.aget(MSGS, "gpt-4o") == ["x", "y"]


def test_a_dead_leaders_claim_is_taken_over_after_the_stall_timeout(cluster):
    from omnicache_cluster.layers._streamwire import claim_key

    sc = StreamingResponseCache(cluster, stall_timeout=0.5)
    key = sc._request(MSGS, "gpt-4o", None, {})
    # a leader that claimed the stream and died before publishing anything
    cluster.set(claim_key(str(key)), {"id": "dead-leader"}, layer="stream.wire", ttl=60)
    upstream = Upstream()
    started = time.monotonic()
    assert list(sc.get_or_stream(MSGS, upstream, "gpt-4o")) == CHUNKS
    assert time.monotonic() - started >= 0.5
    assert upstream.calls == 1
