"""``ray.remote`` factories for the actor classes, with the cluster's naming and options.

Kept apart from the classes so those stay plain and testable without Ray (the shape
Ray Serve uses for its controller).
"""

from __future__ import annotations

from typing import Any

import ray

from omnicache_cluster.actors.coordinator import CoordinatorActor, CoordinatorConfig
from omnicache_cluster.actors.shard import ShardActor, ShardConfig

__all__ = ["COORDINATOR_NAME", "SHARD_PREFIX", "coordinator_actor", "shard_actor", "shard_name"]

COORDINATOR_NAME = "omnicache-coordinator"
SHARD_PREFIX = "omnicache-shard-"


def shard_name(index: int) -> str:
    """Return the actor name of shard ``index``."""
    return f"{SHARD_PREFIX}{index}"


def _options(name: str, namespace: str, detached: bool, **extra: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "max_restarts": -1,
        # Retried calls on a restarting actor: every shard method is idempotent per
        # key except counters, which are statistics.
        "max_task_retries": 0,
        "max_concurrency": 1000,
        "num_cpus": 0,
    }
    if detached:
        opts["lifetime"] = "detached"
    opts.update(extra)
    return opts


def shard_actor(
    config: ShardConfig,
    epoch: int,
    members: tuple[str, ...],
    *,
    detached: bool = False,
    scheduling_strategy: str | None = "SPREAD",
    **options: Any,
) -> ray.actor.ActorHandle:
    """Create the named shard actor of ``config``."""
    if scheduling_strategy is not None:
        options.setdefault("scheduling_strategy", scheduling_strategy)
    cls = ray.remote(**_options(config.name, config.namespace, detached, **options))(ShardActor)
    return cls.remote(config, epoch, members)


def coordinator_actor(
    config: CoordinatorConfig, *, detached: bool = False, **options: Any
) -> ray.actor.ActorHandle:
    """Create the named coordinator actor of ``config``."""
    cls = ray.remote(**_options(COORDINATOR_NAME, config.namespace, detached, **options))(
        CoordinatorActor
    )
    return cls.remote(config)
