"""Where a cluster's actors run: shards spread over nodes, per-shard resources, and the
node type of the coordinator and the semantic index.

`ShardPlacement` is a frozen description, made once by `CacheCluster.start` and kept
in the coordinator's config, so shards added later by `CacheCluster.scale` (which the
coordinator creates) are placed like the first ones, and a restarted coordinator still
knows how.

Strategies for the shards:

* ``"spread"`` (default): each new shard goes to the alive node that can host it and
  holds the fewest shards of the cluster (the head last on a tie), with a *soft* node
  affinity, so a shard on a node that dies is restarted by Ray on any node with room
  (``max_restarts=-1``). Still best effort: a soft affinity spills to another node
  when the chosen one cannot take the shard at that moment. Ray's own ``SPREAD``
  strategy (3 shards on 3 nodes often share one) is the fallback when the nodes
  cannot be listed or a ``label_selector`` is set.
* ``"strict_spread"``: one placement group per creation (``start``, or one ``scale``
  step) with a ``STRICT_SPREAD`` bundle per shard, so the shards created together sit
  on distinct nodes, or creation fails with `ConfigError` after
  ``placement_timeout_s``. Ray does not resize a placement group, so shards added by a
  later ``scale`` step are spread among themselves only; for one shard per node
  across every step, give each node a custom resource (``omnicache_shard: 1``) and
  ask for it in ``shard_resources={"resources": {"omnicache_shard": 1}}``. When a
  node dies, Ray reschedules its bundles (and restarts their shards) only onto a node
  that holds no other bundle of the group: keep a spare node, or the shard waits.
* ``"default"``: Ray's default scheduling.

Node types: ``coordinator_options`` / ``semantic_options`` are Ray actor options,
typically ``{"resources": {"head": 0.001}}`` (a custom resource only the chosen node
type has) or ``{"label_selector": {"ray.io/node-group": "head"}}`` (node labels).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from omnicache_cluster.errors import ConfigError

__all__ = ["PLACEMENT_GROUP_PREFIX", "STRATEGIES", "ShardPlacement", "semantic_options"]

_log = logging.getLogger(__name__)

STRATEGIES: Final = ("spread", "strict_spread", "default")
PLACEMENT_GROUP_PREFIX: Final = "omnicache-shards"
_SHARD_RESOURCE_KEYS: Final = ("num_cpus", "memory", "resources", "label_selector")
#: What a strict-spread bundle reserves when a shard asks for no CPU: a bundle cannot
#: be empty, and a token CPU share keeps shards off nodes started with 0 CPUs (a head
#: node kept free of work).
_TOKEN_CPU: Final = 0.01

Pairs = tuple[tuple[str, Any], ...]


def _pairs(name: str, value: Mapping[str, Any] | None) -> Pairs:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(value).__qualname__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, got {key!r}")
    return tuple(sorted(value.items()))


@dataclass(frozen=True)
class ShardPlacement:
    """Placement of a cluster's actors (see the module docstring).

    Attributes:
        strategy: ``"spread"``, ``"strict_spread"`` or ``"default"``.
        num_cpus: CPUs each shard reserves (0: shards take no CPU slot).
        memory: bytes of memory each shard reserves for scheduling (``None``: none).
        resources: custom resources each shard needs (``{"omnicache_shard": 1}``).
        label_selector: node labels each shard needs.
        scheduling_strategy: for ``"spread"``, the Ray strategy used (``"SPREAD"``).
        shard_options: other ``ray.remote`` options for the shards.
        detached: whether the shards made by ``start`` are detached (shards made by
            ``scale`` always are: they must outlive a coordinator restart).
        coordinator_options: ``ray.remote`` options for the coordinator.
        coordinator_detached: whether the coordinator is detached (default: it is, so
            it outlives the driver that started it and is restarted by Ray anywhere).
        semantic_options: ``ray.remote`` options for the semantic index actor.
        placement_timeout_s: how long ``strict_spread`` waits for its placement group.

    Raises:
        ValueError: a bad strategy or a negative resource.
    """

    strategy: str = "spread"
    num_cpus: float = 0.0
    memory: int | None = None
    resources: tuple[tuple[str, float], ...] = ()
    label_selector: tuple[tuple[str, str], ...] = ()
    scheduling_strategy: Any = "SPREAD"
    shard_options: Pairs = ()
    detached: bool = False
    coordinator_options: Pairs = ()
    coordinator_detached: bool = True
    semantic_options: Pairs = ()
    placement_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"placement must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        cpus = self.num_cpus
        if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not cpus >= 0:
            raise ValueError(f"num_cpus must be a number >= 0, got {cpus!r}")
        if self.memory is not None and (
            isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory <= 0
        ):
            raise ValueError(f"memory must be a positive int of bytes, got {self.memory!r}")
        for name, amount in self.resources:
            if isinstance(amount, bool) or not isinstance(amount, int | float) or amount <= 0:
                raise ValueError(f"resource {name!r} must be a positive number, got {amount!r}")
        timeout = self.placement_timeout_s
        if not isinstance(timeout, int | float) or not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"placement_timeout_s must be a positive number, got {timeout!r}")

    @classmethod
    def build(
        cls,
        placement: str | ShardPlacement = "spread",
        *,
        shard_resources: Mapping[str, Any] | None = None,
        coordinator_options: Mapping[str, Any] | None = None,
        semantic_options: Mapping[str, Any] | None = None,
        scheduling_strategy: Any = "SPREAD",
        shard_options: Mapping[str, Any] | None = None,
        detached: bool = False,
    ) -> ShardPlacement:
        """Return the placement `CacheCluster.start`'s arguments describe.

        Args:
            placement: a strategy name, or a ready `ShardPlacement` (used as is).
            shard_resources: ``num_cpus``, ``memory`` (bytes), ``resources`` and
                ``label_selector`` of each shard.
            coordinator_options: Ray options of the coordinator (node type...).
            semantic_options: Ray options of the semantic index actor.
            scheduling_strategy: the Ray strategy of ``"spread"`` (legacy argument).
            shard_options: other ``ray.remote`` options of the shards.
            detached: detach the shards made by ``start`` (and the coordinator).

        Raises:
            ValueError: an unknown key in ``shard_resources`` or a bad value.
        """
        if isinstance(placement, ShardPlacement):
            return placement
        if not isinstance(placement, str):
            raise TypeError(f"placement must be a str or ShardPlacement, got {placement!r}")
        res = dict(shard_resources or {})
        unknown = set(res) - set(_SHARD_RESOURCE_KEYS)
        if unknown:
            raise ValueError(
                f"shard_resources takes {', '.join(_SHARD_RESOURCE_KEYS)}; "
                f"got {', '.join(sorted(unknown))}"
            )
        return cls(
            strategy=placement,
            num_cpus=res.get("num_cpus", 0.0),
            memory=res.get("memory"),
            resources=_pairs("resources", res.get("resources")),
            label_selector=_pairs("label_selector", res.get("label_selector")),
            scheduling_strategy=scheduling_strategy,
            shard_options=_pairs("shard_options", shard_options),
            detached=detached,
            coordinator_options=_pairs("coordinator_options", coordinator_options),
            semantic_options=_pairs("semantic_options", semantic_options),
        )

    # -- shards ---------------------------------------------------------------------

    def bundle(self) -> dict[str, float]:
        """Return the placement-group bundle one shard reserves (``strict_spread``)."""
        bundle: dict[str, float] = {"CPU": float(self.num_cpus) or _TOKEN_CPU}
        if self.memory is not None:
            bundle["memory"] = float(self.memory)
        bundle.update({name: float(amount) for name, amount in self.resources})
        return bundle

    def reserve(self, count: int, name: str, *, detached: bool) -> Any:
        """Create the placement group of ``count`` new shards and wait until it is
        placed; return it (``None`` unless the strategy is ``strict_spread``).

        Raises:
            ConfigError: the group could not be placed within ``placement_timeout_s``
                (fewer suitable nodes than shards); the group is removed again.
        """
        if self.strategy != "strict_spread":
            return None
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        group = placement_group(
            [self.bundle() for _ in range(count)],
            strategy="STRICT_SPREAD",
            name=name,
            lifetime="detached" if detached else None,
        )
        try:
            ray.get(group.ready(), timeout=self.placement_timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(group)
            raise ConfigError(
                f"could not place {count} shards on {count} distinct nodes within "
                f"{self.placement_timeout_s}s (bundle {self.bundle()}); "
                f"add nodes or use placement='spread'"
            ) from None
        return group

    async def areserve(self, count: int, name: str, *, detached: bool) -> Any:
        """Async `reserve` (for the coordinator's event loop)."""
        if self.strategy != "strict_spread":
            return None
        import asyncio

        return await asyncio.to_thread(self.reserve, count, name, detached=detached)

    def _fits(self, resources: Mapping[str, float]) -> bool:
        needs = {"CPU": float(self.num_cpus), **{k: float(v) for k, v in self.resources}}
        if self.memory is not None:
            needs["memory"] = float(self.memory)
        return all(resources.get(name, 0.0) >= amount for name, amount in needs.items() if amount)

    def spread_nodes(self, count: int, taken: Sequence[str] = ()) -> list[str | None]:
        """Return a node id for each of ``count`` new shards (``"spread"``): the alive
        nodes that can host one, least loaded first counting ``taken`` (the node ids
        of the cluster's other shards), the head node last; ``None`` entries when the
        strategy is not ``"spread"``, a label selector is set, or fewer than two nodes
        fit (Ray then places them)."""
        none: list[str | None] = [None] * count
        if self.strategy != "spread" or self.scheduling_strategy != "SPREAD" or self.label_selector:
            return none
        import ray

        try:
            nodes = [n for n in ray.nodes() if n.get("Alive") and self._fits(n["Resources"])]
        except Exception:  # the GCS could not be asked: let Ray spread them
            _log.debug("could not list nodes", exc_info=True)
            return none
        if len(nodes) < 2:
            return none
        head = {n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"]}
        load = Counter(taken)
        chosen: list[str | None] = []
        for _ in range(count):
            node = min((n["NodeID"] for n in nodes), key=lambda i: (load[i], i in head, i))
            load[node] += 1
            chosen.append(node)
        return chosen

    def shard_ray_options(
        self, group: Any = None, index: int = 0, node: str | None = None
    ) -> dict[str, Any]:
        """Return the keyword arguments of `actors.remote.shard_actor` for one shard
        (``detached`` excluded): in bundle ``index`` of ``group`` when given, else
        with a soft affinity to ``node`` when given (see `spread_nodes`)."""
        opts: dict[str, Any] = dict(self.shard_options)
        opts["num_cpus"] = self.num_cpus
        if self.memory is not None:
            opts["memory"] = self.memory
        if self.resources:
            opts["resources"] = dict(self.resources)
        if self.label_selector:
            opts["label_selector"] = dict(self.label_selector)
        if group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=group,
                placement_group_bundle_index=index,
                placement_group_capture_child_tasks=False,
            )
        elif node is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
        elif self.strategy == "spread":
            opts["scheduling_strategy"] = self.scheduling_strategy
        else:
            opts["scheduling_strategy"] = None
        return opts

    # -- coordinator and semantic index ---------------------------------------------

    def coordinator_ray_options(self) -> dict[str, Any]:
        """Return extra ``ray.remote`` options of the coordinator."""
        return dict(self.coordinator_options)


def group_name(namespace: str, tag: str) -> str:
    """Return the name of a shard placement group of the cluster in ``namespace``."""
    return f"{PLACEMENT_GROUP_PREFIX}:{namespace}:{tag}"


def remove_groups(namespace: str) -> int:
    """Remove every shard placement group of the cluster in ``namespace``; return how
    many (what `CacheCluster.shutdown` calls after killing the shards)."""
    import ray
    from ray.util.placement_group import get_placement_group, remove_placement_group

    prefix = group_name(namespace, "")
    removed = 0
    try:
        table = ray.util.placement_group_table()
    except Exception:  # best effort: no groups API (client mode) means no groups here
        _log.debug("could not list placement groups", exc_info=True)
        return 0
    for info in table.values():
        name = info.get("name") or ""
        if name.startswith(prefix) and info.get("state") != "REMOVED":
            try:
                remove_placement_group(get_placement_group(name))
                removed += 1
            except Exception:  # removed meanwhile
                _log.debug("could not remove placement group %s", name, exc_info=True)
    return removed


def semantic_options(namespace: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Return the semantic index actor's Ray options of the cluster in ``namespace``
    (from its coordinator's placement); ``{}`` when there is none or it cannot be asked."""
    import ray

    from omnicache_cluster.actors.remote import COORDINATOR_NAME

    try:
        coord = ray.get_actor(COORDINATOR_NAME, namespace=namespace)
        placement = ray.get(coord.placement.remote(), timeout=timeout_s)
    except Exception:  # no cluster, an older coordinator, or it is restarting
        return {}
    return dict(placement.semantic_options) if placement is not None else {}
