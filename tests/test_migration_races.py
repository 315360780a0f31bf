"""The migration protocol's races, made deterministic: two real `ShardActor` objects
in one event loop, talking through an in-process transport whose replies the test
can hold back (Ray delivers them the same way, just with no say in the timing).

The Ray-level tests (``tests/test_scale.py``) prove the protocol end to end under
load; these pin down what happens to a key touched while a batch holding its old
value is already on its way to the new owner.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from omnicache_cluster.actors._migration import MigrationOptions
from omnicache_cluster.actors.shard import ShardActor, ShardConfig
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.ring import Ring
from omnicache_cluster.core.scope import KeyScope

SER = Serializer()
A, B = "omnicache-shard-0", "omnicache-shard-1"
SCOPE = KeyScope("ns", "acme")


class _Call:
    def __init__(self, peer: _Peer, name: str) -> None:
        self._peer, self._name = peer, name

    def remote(self, *args: Any) -> Any:
        return self._peer.call(self._name, args)


class _Peer:
    """A shard as another shard sees it; ``hold`` parks the replies of one method."""

    def __init__(self, shard: ShardActor) -> None:
        self.shard = shard
        self.held: str | None = None
        self.parked: list[asyncio.Future[None]] = []
        self.arrived = asyncio.Event()

    async def call(self, name: str, args: tuple[Any, ...]) -> Any:
        reply = await getattr(self.shard, name)(*args)  # runs now, as Ray would
        if name == self.held:
            gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.parked.append(gate)
            self.arrived.set()
            await gate  # ... but the reply is still on its way
        return reply

    def __getattr__(self, name: str) -> _Call:
        return _Call(self, name)

    def release(self) -> None:
        self.held = None
        for gate in self.parked:
            gate.set_result(None)
        self.parked.clear()


def _shard(name: str, epoch: int, members: tuple[str, ...]) -> ShardActor:
    config = ShardConfig(
        name=name, namespace="ns", coordinator="none", max_bytes=1 << 24, metrics=None
    )
    return ShardActor(config, epoch, members)


def _item(key: str, value: Any, tags: tuple[str, ...] = ()) -> tuple[Any, ...]:
    return (key, SER.dumps(value), None, tags)


async def _values(shard: ShardActor, keys: list[str]) -> list[Any]:
    _, values, moved = await shard.get_many(keys)
    assert moved == []
    return [None if v is None else SER.loads(v) for v in values]


@pytest.fixture
async def pair():
    """Shard A holds 300 keys; B is new. Both prepared for A -> (A, B), flipped."""
    a, b = _shard(A, 1, (A,)), _shard(B, 0, ())
    a._peers[B] = _Peer(b)
    to_a = b._peers[A] = _Peer(a)
    new = Ring((A, B), 2)
    keys = [SCOPE.key(f"q{i}") for i in range(300)]
    tags = SCOPE.tags(["doomed"])
    await a.set_many([_item(k, i, tags if i % 2 else ()) for i, k in enumerate(keys)])
    moving = [k for k in keys if new.owner(k) == B]
    opts = MigrationOptions(batch_entries=20)
    for shard in (a, b):
        await shard.prepare_migration(1, (A,), 2, (A, B), opts)
    to_a.held = "export_batch"  # B's first batch is computed at A, then held
    await a.set_ring(2, (A, B))
    await b.set_ring(2, (A, B))
    await asyncio.wait_for(to_a.arrived.wait(), 5)
    yield a, b, to_a, keys, moving
    to_a.release()
    for task in list(b._import_tasks):
        task.cancel()


async def test_a_key_touched_while_its_old_value_is_in_flight_keeps_its_new_state(pair):
    a, b, to_a, keys, moving = pair
    in_flight = [k for k in moving if k in a._export.sent[0]]  # the held batch
    assert len(in_flight) == 20
    plain = [k for k in in_flight if not keys.index(k) % 2]  # no tag: no filter masks
    written, expired, deleted = plain[:3]
    doomed = [k for k in in_flight if keys.index(k) % 2]
    assert doomed
    await b.set_many([_item(written, "new"), (expired, SER.dumps("short"), 0.05, ())])
    await asyncio.sleep(0.1)  # gone from B's L1: only "touched" stops the old value
    _, existed, _ = await b.delete_many([deleted])
    assert existed == [True]  # the old owner still had it: the delete reached it there
    await a.invalidate_tags(SCOPE.tags(["doomed"]))  # forwarded to B before it returns
    to_a.release()  # now the batch with the old values arrives
    result = await b.wait_migration(2, timeout_s=10)
    assert result["complete"]
    final = dict(zip(moving, await _values(b, moving), strict=True))
    assert final[written] == "new"
    assert final[expired] is None  # not the older value from the batch
    assert final[deleted] is None
    assert [final[k] for k in doomed] == [None] * len(doomed)
    kept = [k for k in moving if not keys.index(k) % 2 and k not in (written, expired, deleted)]
    assert [final[k] for k in kept] == [keys.index(k) for k in kept]


async def test_a_read_before_the_key_arrives_is_served_by_the_old_owner(pair):
    a, b, to_a, keys, moving = pair
    late = moving[-1]  # far behind the held batch
    assert late not in a._export.sent[0]
    assert SER.loads(await b.get(late)) == keys.index(late)
    assert b._import_summary()["fetched"] == 1
    _, present, _ = await b.exists_many([moving[-2]])
    assert present == [True]
    to_a.release()
    await b.wait_migration(2, timeout_s=10)
    # A dropped what it handed over (B released it), and answers *moved* for it.
    assert await a.finish_export(2) != {}
    assert [k for k in moving if k in a._store] == []
    assert await a.get(late) == 2  # the epoch: moved
    assert await _values(b, moving) == [keys.index(k) for k in moving]


async def test_requests_wait_for_the_flip_and_an_unflipped_step_can_be_aborted():
    b = _shard(B, 0, ())
    await b.prepare_migration(1, (A,), 2, (A, B), MigrationOptions(hold_s=5))
    new = Ring((A, B), 2)
    key = next(k for k in (SCOPE.key(f"h{i}") for i in range(50)) if new.owner(k) == B)
    waiting = asyncio.ensure_future(b.set_many([_item(key, 1)]))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # held: B does not own the key yet and must not say moved
    assert await b.abort_migration(2)
    epoch, moved, _, _ = await asyncio.wait_for(waiting, 1)
    assert (epoch, moved) == (0, [0])  # released: served under its old ring (moved)
    assert not await b.abort_migration(2)
