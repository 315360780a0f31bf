"""`SemanticIndex`: the client of the cluster's semantic index actor, for one model.

It validates vectors before anything is sent (dimension, NaN/inf, zero vectors raise
``ValueError``), L2-normalises them, and always names the scope of its own cluster
client (tenant, key namespace), so a tenant-scoped client can only reach its own
tenant's indexes. It pickles by name, like `CacheCluster`.

The actor is created lazily, by name, the first time any process needs it
(``get_if_exists``). Creating it in ``CacheCluster.start`` would make every cluster
pay for an index it may never use, and clusters attached with ``connect`` (or started
by an older version) would have none; a lazily created, detached, named actor works
for all of them, and ``CacheCluster.shutdown`` kills it with the rest.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core.keys import validate_part
from omnicache_cluster.errors import ConfigError, ShardUnavailable, Timeout

if TYPE_CHECKING:
    import numpy as np

    from omnicache_cluster.actors.semantic import SemanticIndexConfig
    from omnicache_cluster.client import CacheCluster

__all__ = ["SemanticIndex"]

_HANDLES: dict[str, Any] = {}
_HANDLES_LOCK = threading.Lock()

# (key, similarity, text, observations)
Hit = tuple[str, float, "str | None", list[tuple[float, bool]]]


class SemanticIndex:
    """Vectors that point at one cluster client's cache entries, for one embedding model.

    Args:
        cluster: the cluster client; its tenant and key namespace scope every call.
        model: the embedding model id (vectors of different models never mix).
        dim: the vector dimension of ``model``.
        config: settings for the index actor if this call creates it (Qdrant copy,
            HNSW switch size); ``ConfigError`` if a running one has other settings.
    """

    def __init__(
        self,
        cluster: CacheCluster,
        model: str,
        dim: int,
        *,
        config: SemanticIndexConfig | None = None,
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self._cluster = cluster
        self._model = validate_part("model", model)
        self._dim = dim
        self._config = config

    @property
    def dim(self) -> int:
        """The vector dimension."""
        return self._dim

    @property
    def model(self) -> str:
        """The embedding model id."""
        return self._model

    def __reduce__(self) -> tuple[Any, ...]:
        # By name: the cluster client pickles to names, the config is a small dataclass.
        return (_rebuild, (self._cluster, self._model, self._dim, self._config))

    def scope(self, context: str = "") -> tuple[str, str, str, str]:
        """Return the index scope ``(tenant, key namespace, model, context)``."""
        return (self._cluster.tenant, self._cluster.key_namespace, self._model, context)

    def check(self, vectors: Any) -> np.ndarray:
        """Validate and L2-normalise ``vectors`` (one or a matrix).

        Raises:
            ValueError: wrong dimension, NaN/inf, or a zero vector.
        """
        from omnicache_cluster.backends.vector.base import check_vectors

        return check_vectors(vectors, self._dim)

    # -- the actor handle -------------------------------------------------------------

    def _handle(self) -> Any:
        ns = self._cluster.namespace
        handle = _HANDLES.get(ns)
        if handle is not None:
            return handle
        import ray

        from omnicache_cluster.actors.remote import SEMANTIC_INDEX_NAME, semantic_index_actor
        from omnicache_cluster.actors.semantic import SemanticIndexConfig

        with _HANDLES_LOCK:
            try:
                handle = ray.get_actor(SEMANTIC_INDEX_NAME, namespace=ns)
            except ValueError:
                cfg = self._config or SemanticIndexConfig(namespace=ns)
                if cfg.namespace != ns:
                    raise ConfigError(
                        f"SemanticIndexConfig.namespace is {cfg.namespace!r}, "
                        f"the cluster's is {ns!r}"
                    ) from None
                handle = semantic_index_actor(cfg)
            if self._config is not None:
                running = ray.get(handle.config.remote(), timeout=60)
                if running != self._config:
                    raise ConfigError(
                        f"a semantic index with other settings already runs in {ns!r}: {running!r}"
                    )
            _HANDLES[ns] = handle
            return handle

    def _forget(self) -> None:
        from omnicache_cluster.actors.remote import SEMANTIC_INDEX_NAME

        _HANDLES.pop(self._cluster.namespace, None)
        self._cluster._state.drop_endpoints(SEMANTIC_INDEX_NAME)

    @staticmethod
    def _wire_arg(scope: Any, mat: np.ndarray, top_k: int, with_stats: bool) -> list[Any]:
        import numpy as np

        mat = np.ascontiguousarray(mat, dtype=np.float32)
        return [list(scope), mat.tobytes(), mat.shape[0], mat.shape[1], top_k, with_stats]

    @staticmethod
    def _wire_reply(reply: Any) -> tuple[list[list[Hit]], Any]:
        hits, prior = reply
        return hits, (None if prior is None else tuple(prior))

    def _search(self, scope: Any, mat: np.ndarray, top_k: int, with_stats: bool) -> Any:
        from omnicache_cluster.actors.remote import SEMANTIC_INDEX_NAME
        from omnicache_cluster.core.wire import WireError

        state, opts = self._cluster._state, self._cluster.options
        if opts.fast_path:  # the index actor's direct port: no Ray call per lookup
            endpoint = state.endpoint_of(SEMANTIC_INDEX_NAME, self._handle(), opts)
            if endpoint is not None:
                arg = self._wire_arg(scope, mat, top_k, with_stats)
                try:
                    return self._wire_reply(endpoint.call("wire_search", arg, opts.call_timeout_s))
                except (WireError, TimeoutError) as exc:  # through Ray from now on
                    state.wire_failed(SEMANTIC_INDEX_NAME, exc)
        return self._call("search", scope, mat, top_k, with_stats)

    async def _asearch(self, scope: Any, mat: np.ndarray, top_k: int, with_stats: bool) -> Any:
        from omnicache_cluster.actors.remote import SEMANTIC_INDEX_NAME
        from omnicache_cluster.core.wire import WireError

        state, opts = self._cluster._state, self._cluster.options
        if opts.fast_path:
            handle = _HANDLES.get(self._cluster.namespace)
            if handle is None:
                handle = await asyncio.to_thread(self._handle)
            endpoint = await state.aendpoint_of(SEMANTIC_INDEX_NAME, handle, opts)
            if endpoint is not None:
                arg = self._wire_arg(scope, mat, top_k, with_stats)
                try:
                    reply = await endpoint.acall("wire_search", arg, opts.call_timeout_s)
                    return self._wire_reply(reply)
                except (WireError, TimeoutError) as exc:
                    state.wire_failed(SEMANTIC_INDEX_NAME, exc)
        return await self._acall("search", scope, mat, top_k, with_stats)

    def _call(self, method: str, *args: Any) -> Any:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        opts = self._cluster.options
        deadline = time.monotonic() + opts.retry_deadline_s
        while True:
            try:
                ref = getattr(self._handle(), method).remote(*args)
                return ray.get(ref, timeout=opts.call_timeout_s)
            except GetTimeoutError:
                raise Timeout(f"semantic index {method} did not answer in time") from None
            except RayActorError as exc:  # restarting (rebuilding) or gone
                self._forget()
                if time.monotonic() > deadline:
                    raise ShardUnavailable(f"semantic index unavailable: {exc}") from exc
                time.sleep(0.1)

    async def _acall(self, method: str, *args: Any) -> Any:
        from ray.exceptions import RayActorError

        opts = self._cluster.options
        deadline = time.monotonic() + opts.retry_deadline_s
        while True:
            try:
                handle = _HANDLES.get(self._cluster.namespace)
                if handle is None:
                    handle = await asyncio.to_thread(self._handle)
                ref = getattr(handle, method).remote(*args)
                return await asyncio.wait_for(ref, opts.call_timeout_s)
            except TimeoutError:
                raise Timeout(f"semantic index {method} did not answer in time") from None
            except RayActorError as exc:
                self._forget()
                if time.monotonic() > deadline:
                    raise ShardUnavailable(f"semantic index unavailable: {exc}") from exc
                await asyncio.sleep(0.1)

    # -- calls ------------------------------------------------------------------------

    def _add_args(
        self,
        keys: Sequence[str],
        vectors: Any,
        context: str,
        ttl: float | None,
        texts: Sequence[str | None] | None,
    ) -> tuple[Any, ...]:
        from omnicache_cluster.core.scope import check_ttl

        mat = self.check(vectors)
        if len(keys) != mat.shape[0]:
            raise ValueError(f"{len(keys)} keys but {mat.shape[0]} vectors")
        if texts is not None and len(texts) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(texts)} texts")
        prefix = f"{self._cluster.key_namespace}:{self._cluster.tenant}:"
        for key in keys:
            if not isinstance(key, str) or not key.startswith(prefix):
                raise ValueError(f"{key!r} is not a stored key of this client's tenant")
        return (self.scope(context), list(keys), mat, check_ttl(ttl), texts)

    def add(
        self,
        keys: Sequence[str],
        vectors: Any,
        *,
        context: str = "",
        ttl: float | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> int:
        """Index ``vectors`` as pointers to the stored ``keys``; return how many.

        Raises:
            ValueError: a bad vector, a key of another tenant, or lengths that differ.
        """
        return int(self._call("add", *self._add_args(keys, vectors, context, ttl, texts)))

    async def aadd(
        self,
        keys: Sequence[str],
        vectors: Any,
        *,
        context: str = "",
        ttl: float | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> int:
        """Async `add`."""
        return int(await self._acall("add", *self._add_args(keys, vectors, context, ttl, texts)))

    def search(
        self, vectors: Any, top_k: int = 4, *, context: str = "", with_stats: bool = False
    ) -> tuple[list[list[Hit]], Any]:
        """Return ``(hits per query, prior)``; see `SemanticIndexActor.search`.

        Raises:
            ValueError: a bad vector or ``top_k``.
        """
        self._check_top_k(top_k)
        return self._search(self.scope(context), self.check(vectors), top_k, with_stats)

    async def asearch(
        self, vectors: Any, top_k: int = 4, *, context: str = "", with_stats: bool = False
    ) -> tuple[list[list[Hit]], Any]:
        """Async `search`."""
        mat = self.check(vectors)
        self._check_top_k(top_k)
        return await self._asearch(self.scope(context), mat, top_k, with_stats)

    @staticmethod
    def _check_top_k(top_k: Any) -> None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")

    def delete(self, keys: Sequence[str], *, context: str = "") -> int:
        """Remove the vectors of ``keys``; return how many were indexed."""
        return int(self._call("delete", self.scope(context), list(keys)))

    async def adelete(self, keys: Sequence[str], *, context: str = "") -> int:
        """Async `delete`."""
        return int(await self._acall("delete", self.scope(context), list(keys)))

    def feedback(
        self, items: Sequence[tuple[str, float, bool, float]], *, context: str = ""
    ) -> int:
        """Record verification results ``(key, similarity, correct, weight)``."""
        return int(self._call("feedback", self.scope(context), list(items)))

    async def afeedback(
        self, items: Sequence[tuple[str, float, bool, float]], *, context: str = ""
    ) -> int:
        """Async `feedback`."""
        return int(await self._acall("feedback", self.scope(context), list(items)))

    def clear(self) -> int:
        """Remove every vector and statistic of this client's tenant and namespace."""
        return int(self._call("clear", self._cluster.tenant, self._cluster.key_namespace))

    def stats(self) -> dict[str, Any]:
        """Return the index counts of this client's tenant and key namespace."""
        return dict(self._call("stats", self._cluster.tenant, self._cluster.key_namespace))

    def sweep(self) -> int:
        """Drop expired vectors now (the actor also does it every second)."""
        return int(self._call("sweep"))


def _rebuild(
    cluster: CacheCluster, model: str, dim: int, config: SemanticIndexConfig | None
) -> SemanticIndex:
    return SemanticIndex(cluster, model, dim, config=config)
