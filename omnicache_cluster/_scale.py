"""Scaling from a client: `CacheCluster.scale` / ``ascale`` and the CLI's
``omnicache-cluster scale N``.

The coordinator does the work (`omnicache_cluster.actors._rebalance`): it creates or
retires shards and moves the entries of every slot that changes owner, while traffic
runs. A client only asks for it, waits for the report, and adopts the new ring. A
scale step survives the death of the client that asked for it (the coordinator
finishes it), and a coordinator restart mid-step rolls it forward.

Importing this module imports neither Ray nor numpy (the CLI imports it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnicache_cluster.actors._migration import MigrationOptions
    from omnicache_cluster.client import CacheCluster

__all__ = ["ascale", "cluster_running", "cmd_scale", "render_scale", "scale"]

_log = logging.getLogger(__name__)


def _check(client: CacheCluster, num_shards: int, timeout_s: float) -> None:
    client._require_admin("scale")
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")


def scale(
    client: CacheCluster,
    num_shards: int,
    *,
    options: MigrationOptions | None = None,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """See `CacheCluster.scale`."""
    import ray

    from omnicache_cluster.actors._migration import MigrationOptions

    _check(client, num_shards, timeout_s)
    coord = client._state.coordinator_handle()
    wait = max(1.0, timeout_s - 30)
    ref = coord.scale.remote(num_shards, options or MigrationOptions(), wait)
    try:
        report: dict[str, Any] = ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        from omnicache_cluster.errors import Timeout

        raise Timeout(f"scale to {num_shards} shards did not finish in {timeout_s}s") from None
    client._state.refresh_ring(client.options)
    return report


async def ascale(
    client: CacheCluster,
    num_shards: int,
    *,
    options: MigrationOptions | None = None,
    timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """See `CacheCluster.ascale`."""
    from omnicache_cluster.actors._migration import MigrationOptions

    _check(client, num_shards, timeout_s)
    state = client._state
    coord = state.coordinator or await asyncio.to_thread(state.coordinator_handle)
    wait = max(1.0, timeout_s - 30)
    ref = coord.scale.remote(num_shards, options or MigrationOptions(), wait)
    try:
        report: dict[str, Any] = await asyncio.wait_for(ref, timeout_s)
    except TimeoutError:
        from omnicache_cluster.errors import Timeout

        raise Timeout(f"scale to {num_shards} shards did not finish in {timeout_s}s") from None
    await state.arefresh_ring(client.options)
    return report


def cluster_running(namespace: str) -> bool:
    """Whether a cache cluster runs in ``namespace``.

    The coordinator is detached and outlives the driver that started it, while that
    driver's (non-detached) shards die with it: a coordinator none of whose shards
    exists any more is such a leftover; it is stopped here and ``False`` returned, so
    a new cluster can start in the namespace.
    """
    import ray

    from omnicache_cluster.actors.remote import COORDINATOR_NAME, SHARD_PREFIX

    try:
        coord = ray.get_actor(COORDINATOR_NAME, namespace=namespace)
    except ValueError:
        return False
    try:
        named = ray.util.list_named_actors(all_namespaces=True)
    except Exception:  # cannot tell: assume it runs
        return True
    if any(a["namespace"] == namespace and a["name"].startswith(SHARD_PREFIX) for a in named):
        return True
    _log.warning("stopping the coordinator left in namespace %r without shards", namespace)
    ray.kill(coord, no_restart=True)
    return False


def cmd_scale(client: CacheCluster, num_shards: int) -> dict[str, Any]:
    """The ``omnicache-cluster scale N`` command: scale, return the report."""
    report = scale(client, num_shards)
    return {"namespace": client.namespace, **report}


def render_scale(data: dict[str, Any]) -> str:
    """Return the report of ``scale`` as a few readable lines."""
    lines = [
        f"cluster {data['namespace']!r}: {data.get('from_shards', '?')} -> "
        f"{data.get('to_shards', '?')} shards, ring epoch {data.get('epoch')}",
    ]
    if data.get("added"):
        lines.append(f"added:   {', '.join(data['added'])}")
    if data.get("removed"):
        lines.append(f"removed: {', '.join(data['removed'])}")
    if "entries_moved" in data:
        lines.append(
            f"moved {data['entries_moved']} of {data.get('entries_before', 0)} entries "
            f"({100 * data.get('moved_share', 0.0):.1f}%; ideal "
            f"{100 * data.get('ideal_share', 0.0):.1f}%) in {data.get('seconds', 0.0):.1f} s"
        )
    if not data.get("complete", True):
        lines.append(f"incomplete: {data.get('errors')}")
    return "\n".join(lines)
