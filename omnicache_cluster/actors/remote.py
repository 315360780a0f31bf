"""``ray.remote`` factories for the actor classes, with the cluster's naming and options.

Kept apart from the classes so those stay plain and testable without Ray (the shape
Ray Serve uses for its controller).
"""

from __future__ import annotations

from typing import Any

import ray

from omnicache_cluster.actors.coordinator import CoordinatorActor, CoordinatorConfig
from omnicache_cluster.actors.shard import ShardActor, ShardConfig

__all__ = [
    "COORDINATOR_NAME",
    "SEMANTIC_INDEX_NAME",
    "SHARD_PREFIX",
    "coordinator_actor",
    "semantic_index_actor",
    "shard_actor",
    "shard_name",
]

COORDINATOR_NAME = "omnicache-coordinator"
SHARD_PREFIX = "omnicache-shard-"
SEMANTIC_INDEX_NAME = "omnicache-semantic-index"


def shard_name(index: int) -> str:
    """Return the actor name of shard ``index``."""
    return f"{SHARD_PREFIX}{index}"


def _options(name: str, namespace: str, detached: bool, **extra: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "max_restarts": -1,
        # Ray does not retry calls: the client does, within its deadline, and reroutes
        # them if the ring changed meanwhile.
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
    # Waiters of single-flight leases park in the key's shard: allow many at once.
    options.setdefault("max_concurrency", 10_000)
    cls = ray.remote(**_options(config.name, config.namespace, detached, **options))(ShardActor)
    return cls.remote(config, epoch, members)


def coordinator_actor(
    config: CoordinatorConfig, *, detached: bool = False, **options: Any
) -> ray.actor.ActorHandle:
    """Create the named coordinator actor of ``config``."""
    # Waiters of single-flight leases park in the coordinator: allow many at once.
    options.setdefault("max_concurrency", 10_000)
    cls = ray.remote(**_options(COORDINATOR_NAME, config.namespace, detached, **options))(
        CoordinatorActor
    )
    return cls.remote(config)


def semantic_index_actor(config: Any, **options: Any) -> ray.actor.ActorHandle:
    """Return the cluster's semantic index actor, creating it if it does not exist.

    Detached, so it outlives the task that happened to create it first;
    `CacheCluster.shutdown` kills it. ``get_if_exists`` makes concurrent creators
    (two workers' first semantic lookups) get the same actor. Placed by the cluster's
    ``semantic_options`` (`omnicache_cluster.placement`) unless ``options`` say otherwise.
    """
    from omnicache_cluster.actors.semantic import SemanticIndexActor
    from omnicache_cluster.placement import semantic_options

    options = {**semantic_options(config.namespace), **options}
    cls = ray.remote(**_options(SEMANTIC_INDEX_NAME, config.namespace, True, **options))(
        SemanticIndexActor
    )
    return cls.options(get_if_exists=True).remote(config)
