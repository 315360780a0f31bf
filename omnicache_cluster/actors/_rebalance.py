"""The coordinator's side of scaling: create or retire shards and drive one migration
step over them; and the coordinator's recovery of the ring after a restart.

One step (`Rebalancer.migrate`) moves the cluster from its ring to the ring of a new
membership, in the order `omnicache_cluster.actors._migration` explains: prepare every
shard, publish the new ring, flip the sources (and flush their L2), flip everyone
else, wait for the targets to pull, then have the sources drop what they exported.
Nothing is flipped unless every shard prepared; a failed prepare aborts the step.

`Rebalancer.scale` wraps a step: shards added by a step are created here, by the
coordinator, *detached* (a restartable coordinator must not take its shards down with
it when it restarts) and placed by the cluster's `ShardPlacement`; shards removed by a
step are stopped after their entries moved (and their dirty L2 entries are written).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from omnicache_cluster.actors._migration import MigrationOptions
from omnicache_cluster.core.ring import Ring
from omnicache_cluster.errors import ShardUnavailable
from omnicache_cluster.placement import ShardPlacement, group_name

__all__ = ["Rebalancer", "recovery_views", "roll_forward"]

_log = logging.getLogger(__name__)


async def named_shards(namespace: str, prefix: str) -> list[str]:
    """Return the names of the named actors of ``namespace`` starting with ``prefix``.

    Every namespace is listed and filtered: inside an actor, Ray's "current namespace"
    is its job's (the driver's, often an anonymous one), not the one the actor was
    named in, so a plain ``list_named_actors()`` would miss the cluster's shards.
    """
    import ray

    named = await asyncio.to_thread(ray.util.list_named_actors, True)
    return [
        a["name"] for a in named if a["namespace"] == namespace and a["name"].startswith(prefix)
    ]


async def _handle(name: str, namespace: str) -> Any:
    import ray

    return await asyncio.to_thread(ray.get_actor, name, namespace=namespace)


async def _call(name: str, namespace: str, method: str, timeout: float, *args: Any) -> Any:
    handle = await _handle(name, namespace)
    return await asyncio.wait_for(getattr(handle, method).remote(*args), timeout)


async def _each(
    names: Sequence[str], namespace: str, method: str, timeout: float, *args: Any
) -> dict[str, Any]:
    """Call ``method(*args)`` on every shard of ``names`` at once; return each reply
    or the exception it raised."""
    replies = await asyncio.gather(
        *(_call(n, namespace, method, timeout, *args) for n in names), return_exceptions=True
    )
    return dict(zip(names, replies, strict=True))


def _failures(replies: dict[str, Any]) -> dict[str, str]:
    return {
        n: f"{type(r).__name__}: {r}" for n, r in replies.items() if isinstance(r, BaseException)
    }


class Rebalancer:
    """Scales one cluster; the coordinator makes one per call, under its lock.

    Args:
        namespace: the cluster's Ray namespace.
        shard_prefix: the shards' actor name prefix.
        placement: how new shards are placed.
        ring: returns the coordinator's current ring.
        adopt: makes a ring the coordinator's current one (what clients then fetch).
        push: pushes a ring (and the tenant quotas) to the named shards.
        call_timeout_s: the timeout of one control call to a shard.
    """

    def __init__(
        self,
        namespace: str,
        shard_prefix: str,
        placement: ShardPlacement,
        ring: Callable[[], Ring],
        adopt: Callable[[Ring], None],
        push: Callable[[Ring, set[str]], Awaitable[None]],
        call_timeout_s: float = 30.0,
    ) -> None:
        self._ns = namespace
        self._prefix = shard_prefix
        self._placement = placement
        self._ring = ring
        self._adopt = adopt
        self._push = push
        self._timeout = call_timeout_s
        self._handles: dict[str, Any] = {}

    async def _each(
        self, names: Sequence[str], method: str, timeout: float, *args: Any
    ) -> dict[str, Any]:
        """`_each` over handles resolved once per step (a name lookup is a blocking
        control-store call: one per shard, not one per call)."""
        todo = [n for n in names if n not in self._handles]
        found = await asyncio.gather(*(_handle(n, self._ns) for n in todo), return_exceptions=True)
        for name, handle in zip(todo, found, strict=True):
            if not isinstance(handle, BaseException):
                self._handles[name] = handle

        async def call(name: str) -> Any:
            handle = self._handles.get(name)
            if handle is None:
                return await _call(name, self._ns, method, timeout, *args)
            return await asyncio.wait_for(getattr(handle, method).remote(*args), timeout)

        replies = await asyncio.gather(*(call(n) for n in names), return_exceptions=True)
        return dict(zip(names, replies, strict=True))

    # -- scale ----------------------------------------------------------------------

    async def scale(
        self, num_shards: int, options: MigrationOptions, wait_timeout_s: float = 600.0
    ) -> dict[str, Any]:
        """Move the cluster to ``num_shards`` shards; return the step's report.

        Raises:
            ValueError: ``num_shards`` is not a positive int.
            ShardUnavailable: a shard could not be prepared (nothing changed).
            ConfigError: new shards could not be placed.
        """
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
            raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
        started = time.monotonic()
        members = self._ring().members
        await self._settle(members, wait_timeout_s)
        added: list[str] = []
        removed: list[str] = []
        if num_shards > len(members):
            added = await self._create(num_shards - len(members), members)
            new_members = (*members, *added)
        elif num_shards < len(members):
            removed = list(members[num_shards:])  # the newest go first
            new_members = members[:num_shards]
        else:
            new_members = members
        create_ms = (time.monotonic() - started) * 1000
        epoch = self._ring().epoch
        try:
            report = await self.migrate(new_members, options, wait_timeout_s)
        except BaseException:
            if self._ring().epoch == epoch:  # not flipped: the new shards own nothing
                await self._retire(added, flush=False)
            raise
        await self._retire(removed, flush=True)
        report.update(added=added, removed=removed, seconds=time.monotonic() - started)
        report.setdefault("phases_ms", {})["create_ms"] = round(create_ms, 1)
        return report

    async def migrate(
        self, new_members: Sequence[str], options: MigrationOptions, wait_timeout_s: float
    ) -> dict[str, Any]:
        """Move every slot whose owner changes under ``new_members``; return a report.

        Raises:
            ShardUnavailable: a shard could not be prepared; the step was aborted.
        """
        old = self._ring()
        if tuple(new_members) == old.members:
            n = len(old.members)
            return {
                "epoch": old.epoch,
                "from_shards": n,
                "to_shards": n,
                "slots_moved": 0,
                "entries_moved": 0,
                "moved_share": 0.0,
                "ideal_share": 0.0,
                "complete": True,
                "errors": {},
            }
        new = old.with_members(tuple(new_members))
        names = sorted(set(old.members) | set(new.members))
        t0 = time.monotonic()
        prepared = await self._each(
            names,
            "prepare_migration",
            self._timeout,
            old.epoch,
            old.members,
            new.epoch,
            new.members,
            options,
        )
        failed = _failures(prepared)
        if failed:
            await self._each(names, "abort_migration", self._timeout, new.epoch)
            raise ShardUnavailable(f"scale aborted, shards not ready: {failed}")
        sources = [n for n in names if prepared[n]["outgoing"]]
        targets = [n for n in names if prepared[n]["incoming"]]
        entries_before = sum(int(prepared[n]["entries"]) for n in old.members)
        phases = {"prepare_ms": (time.monotonic() - t0) * 1000}
        t0 = time.monotonic()
        self._adopt(new)  # clients that refresh now get the new ring (targets hold them)
        # Sources first: once they answer *moved*, no write reaches them again.
        flip = options.hold_s / 3
        flipped = await self._each(sources, "set_ring", flip, new.epoch, new.members)
        await self._each(sources, "flush_l2", flip, flip)
        phases["sources_ms"] = (time.monotonic() - t0) * 1000
        rest = [n for n in names if n not in sources]  # the targets: their holds end here
        await self._each(rest, "set_ring", flip, new.epoch, new.members)
        phases["flip_ms"] = (time.monotonic() - t0) * 1000
        await self._push(new, set(names))  # again with the tenant quotas' new shares
        waited = await self._each(
            targets, "wait_migration", wait_timeout_s + 30, new.epoch, wait_timeout_s
        )
        phases["stream_ms"] = (time.monotonic() - t0) * 1000 - phases["flip_ms"]
        finished = await self._each(sources, "finish_export", self._timeout, new.epoch)
        return self._report(old, new, entries_before, flipped, waited, finished, phases)

    @staticmethod
    def _report(
        old: Ring,
        new: Ring,
        entries_before: int,
        flipped: dict[str, Any],
        waited: dict[str, Any],
        finished: dict[str, Any],
        phases: dict[str, float],
    ) -> dict[str, Any]:
        slots_moved = sum(
            int((new.owned_slots(m) & ~old.owned_slots(m)).sum()) for m in new.members
        )
        imports = [w.get("import", {}) for w in waited.values() if isinstance(w, dict)]
        moved = sum(int(f.get("exported", 0)) for f in finished.values() if isinstance(f, dict))
        import_failures = {
            src: why for imp in imports for src, why in dict(imp.get("failed", {})).items()
        }
        errors = {**_failures(flipped), **_failures(waited), **_failures(finished)}
        complete = (
            not errors
            and not import_failures
            and all(w.get("complete", False) for w in waited.values() if isinstance(w, dict))
        )
        n_old, n_new = len(old.members), len(new.members)
        return {
            "epoch": new.epoch,
            "from_shards": n_old,
            "to_shards": n_new,
            "slots_moved": slots_moved,
            "slot_share": slots_moved / new.num_slots,
            "ideal_share": abs(n_new - n_old) / max(n_new, n_old),
            "entries_before": entries_before,
            "entries_moved": moved,
            "moved_share": moved / entries_before if entries_before else 0.0,
            "installed": sum(int(i.get("installed", 0)) for i in imports),
            "fetched_on_miss": sum(int(i.get("fetched", 0)) for i in imports),
            "flip_ms": phases["flip_ms"],
            "phases_ms": {k: round(v, 1) for k, v in phases.items()},
            "complete": complete,
            "errors": {**errors, **import_failures},
        }

    # -- shards in and out --------------------------------------------------------------

    async def _create(self, count: int, members: Sequence[str]) -> list[str]:
        """Create ``count`` shards like the existing ones; return their names."""

        from omnicache_cluster.actors.remote import shard_actor, shard_name

        template = None
        for name in members:
            try:
                template = await _call(name, self._ns, "config", self._timeout)
                break
            except Exception as exc:  # try the next one
                _log.warning("scale: shard %s did not give its config: %s", name, exc)
        if template is None:
            raise ShardUnavailable("scale: no shard answered with its configuration")
        named = await named_shards(self._ns, self._prefix)
        taken = {n for n in (*members, *named) if n.startswith(self._prefix)}
        used = [int(n[len(self._prefix) :]) for n in taken if n[len(self._prefix) :].isdigit()]
        first = max(used, default=-1) + 1
        names = [shard_name(first + i) for i in range(count)]
        placement = self._placement
        group = await placement.areserve(count, group_name(self._ns, names[0]), detached=True)
        taken = await self._nodes_of(members)
        nodes = await asyncio.to_thread(placement.spread_nodes, count, taken)

        def create(i: int, name: str) -> Any:
            config = dataclasses.replace(template, name=name)
            options = placement.shard_ray_options(group, i, nodes[i])
            return shard_actor(config, 0, (), detached=True, **options)

        handles = await asyncio.to_thread(lambda: [create(i, n) for i, n in enumerate(names)])
        self._handles.update(zip(names, handles, strict=True))
        pings = await asyncio.gather(
            *(asyncio.wait_for(h.ping.remote(), placement.placement_timeout_s) for h in handles),
            return_exceptions=True,
        )
        bad = [n for n, p in zip(names, pings, strict=True) if isinstance(p, BaseException)]
        if bad:
            await self._retire(names, flush=False)
            raise ShardUnavailable(f"scale: new shards {bad} did not start: {pings}")
        return names

    async def _nodes_of(self, names: Sequence[str]) -> list[str]:
        """Return the Ray node ids of the shards ``names`` that answer."""
        replies = await self._each(names, "where", self._timeout)
        return [r["node_id"] for r in replies.values() if isinstance(r, dict)]

    async def _retire(self, names: Sequence[str], *, flush: bool) -> None:
        """Stop shards that left the ring (after writing their dirty L2 entries)."""
        import ray

        for name in names:
            try:
                handle = await _handle(name, self._ns)
            except ValueError:
                continue
            if flush:
                try:
                    await asyncio.wait_for(handle.flush_l2.remote(), self._timeout)
                except Exception as exc:
                    _log.warning("scale: %s could not flush its L2: %s", name, exc)
            ray.kill(handle, no_restart=True)

    async def _settle(self, members: Sequence[str], wait_timeout_s: float) -> None:
        """Finish what an interrupted step left (a coordinator restart mid-step): wait
        for imports still running, drop exports, stop shards that left the ring."""
        views = await recovery_views(self._ns, self._prefix, self._timeout)
        for name, view in views.items():
            epoch = int(view.get("exporting") or 0)
            if view.get("importing"):
                await self._each([name], "wait_migration", wait_timeout_s + 30, view["epoch"])
            if epoch:
                await self._each([name], "finish_export", self._timeout, epoch)
        gone = [
            n
            for n, v in views.items()
            if n not in members and v["epoch"] > 0 and n not in v["members"]
        ]
        if gone:
            _log.warning("scale: stopping shards left outside the ring: %s", gone)
            await self._retire(gone, flush=True)


# -- recovery (after a coordinator restart) ---------------------------------------------


async def recovery_views(namespace: str, prefix: str, deadline_s: float) -> dict[str, Any]:
    """Ask every shard of the cluster for its `recovery_view`; a shard that does not
    answer (restarting, say on a node that died) is asked again until ``deadline_s``
    has passed, then left out with a warning. Return ``{name: view}``."""

    deadline = time.monotonic() + deadline_s
    views: dict[str, Any] = {}
    while True:
        todo = [n for n in await named_shards(namespace, prefix) if n not in views]
        if not todo:
            return views
        wait = max(0.5, min(5.0, deadline - time.monotonic()))
        for name, reply in (await _each(todo, namespace, "recovery_view", wait)).items():
            if not isinstance(reply, BaseException):
                views[name] = reply
        late = [n for n in todo if n not in views]
        if not late:
            return views
        if time.monotonic() >= deadline:
            _log.warning("ring recovery: shards %s did not answer in %ss", late, deadline_s)
            return views
        await asyncio.sleep(0.5)


def roll_forward(
    views: dict[str, Any],
) -> tuple[tuple[int, tuple[str, ...]] | None, list[str], list[tuple[str, int]]]:
    """Decide how a recovering coordinator finishes a step it was driving.

    Returns ``(ring, sources, aborts)``: the newest ``(epoch, members)`` any shard
    serves (``None`` without any), the shards to flip first when that epoch is only
    partly adopted (its sources), and the ``(shard, epoch)`` of migrations prepared
    for an epoch nobody adopted (to abort: the step never flipped).
    """
    best: tuple[int, tuple[str, ...]] | None = None
    for view in views.values():
        if view["members"] and (best is None or view["epoch"] > best[0]):
            best = (int(view["epoch"]), tuple(view["members"]))
    sources: list[str] = []
    aborts: list[tuple[str, int]] = []
    for name, view in views.items():
        plan = view.get("plan")
        if plan is None:
            continue
        epoch = int(plan[0])
        if best is None or epoch > best[0]:
            aborts.append((name, epoch))
        elif epoch == best[0] and view.get("outgoing"):
            sources.append(name)
    return best, sources, aborts
