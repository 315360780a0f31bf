"""`QdrantBackend`: the durable copy of the semantic index (a server, or local mode).

What the seed got wrong, and what this does instead:

* point ids are ``uuid5`` of the cache key, never a per-process counter, so two
  processes writing one collection agree on every id;
* the collection is created only if it is absent, and nothing here ever wipes it:
  not the constructor, not ``close`` (``clear`` deletes one scope's points, on
  request);
* every point carries tenant, namespace, model, context and expiry in its payload,
  and every search is filtered by the full scope (tenant first) and by expiry.

``qdrant_client`` is imported when a backend is built, never when this module is.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from omnicache_cluster.backends.vector.base import (
    IndexScope,
    VectorRecord,
    check_vectors,
    require,
)
from omnicache_cluster.errors import ConfigError

__all__ = ["QdrantBackend", "QdrantConfig", "point_id"]

_ID_NAMESPACE = uuid.UUID("5b0f9a57-8d4e-5c43-9a0e-6f6d6e6963a1")
_SCAN_PAGE = 1024


def point_id(key: str) -> str:
    """Return the Qdrant point id of a cache key: ``uuid5`` of the key, as a string."""
    return str(uuid.uuid5(_ID_NAMESPACE, key))


@dataclass(frozen=True)
class QdrantConfig:
    """Where the Qdrant copy lives. Exactly one of ``url``, ``path`` or ``location``.

    Attributes:
        collection: the collection name (created if absent, never recreated).
        url: a Qdrant server (``http://127.0.0.1:6333``).
        path: a local-mode folder (embedded, one process at a time).
        location: ``":memory:"`` for an in-process throwaway store.
        api_key: the server's API key.
        timeout_s: request timeout for a server.
    """

    collection: str = "omnicache-semantic"
    url: str | None = None
    path: str | None = None
    location: str | None = None
    api_key: str | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        given = [n for n in ("url", "path", "location") if getattr(self, n)]
        if len(given) != 1:
            raise ConfigError(f"QdrantConfig needs exactly one of url, path, location; got {given}")
        if not self.collection:
            raise ConfigError("QdrantConfig.collection must not be empty")

    @property
    def is_local(self) -> bool:
        """Whether this is qdrant-client's local mode (no server)."""
        return self.url is None


class QdrantBackend:
    """Vectors of cache entries in a Qdrant collection, searched per scope.

    Takes a `QdrantConfig`, or the seed's arguments ``(url=":memory:", collection=,
    api_key=, dim=)``. Unlike the seed's, it never re-creates the collection: one that
    exists is used as it is (a ``dim`` that differs from it raises `ConfigError`).

    Args:
        config: where the collection lives; or the seed's ``url`` as a string.
        collection: the seed's collection name (``omnicache-semantic`` by default: a
            collection the seed wrote holds records without a scope, never matched).
        api_key: the server's API key (the seed's).
        dim: the vector dimension; the collection is created now if absent (else on
            the first write).
        url: the seed's keyword: ``":memory:"`` (the default) or a server URL.
        path: a local-mode folder instead of ``url`` (kept across processes).
        scope: the scope used by the seed's calls (``add``, ``search``, ``delete``).

    Raises:
        TypeError: a `QdrantConfig` together with the seed's arguments.
        ConfigError: ``dim`` differs from the existing collection's.
    """

    def __init__(
        self,
        config: QdrantConfig | str | None = None,
        collection: str | None = None,
        api_key: str | None = None,
        dim: int | None = None,
        *,
        url: str | None = None,
        path: str | None = None,
        scope: IndexScope | None = None,
    ) -> None:
        config = _seed_config(config, collection, api_key, url, path)
        require("qdrant_client", "qdrant")
        from qdrant_client import QdrantClient

        self._config = config
        self._scope = scope or IndexScope("default", "omnicache", "default")
        if config.url is not None:
            self._client = QdrantClient(
                url=config.url, api_key=config.api_key, timeout=int(config.timeout_s)
            )
        elif config.path is not None:
            self._client = QdrantClient(path=config.path)
        else:
            self._client = QdrantClient(location=config.location)
        self._collection = config.collection
        self._dim: int | None = self._existing_dim()
        if dim is not None:
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise ValueError(f"dim must be a positive int, got {dim!r}")
            self._ensure_collection(dim)

    @classmethod
    def from_config(cls, config: QdrantConfig) -> QdrantBackend:
        """Build a backend from ``config``."""
        return cls(config)

    # -- collection -------------------------------------------------------------------

    def _existing_dim(self) -> int | None:
        if not self._client.collection_exists(self._collection):
            return None
        vectors = self._client.get_collection(self._collection).config.params.vectors
        return int(vectors.size)

    def _ensure_collection(self, dim: int) -> None:
        if self._dim is None:
            self._dim = self._existing_dim()
        if self._dim is None:
            from qdrant_client import models

            self._client.create_collection(
                self._collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            )
            if not self._config.is_local:  # local mode has no payload indexes (it warns)
                for field in ("tenant", "namespace", "model", "context"):
                    self._client.create_payload_index(
                        self._collection, field, models.PayloadSchemaType.KEYWORD
                    )
            self._dim = dim
        elif self._dim != dim:
            raise ConfigError(
                f"Qdrant collection {self._collection!r} holds {self._dim}-d vectors, "
                f"got {dim}-d; configure another collection"
            )

    # -- filters ----------------------------------------------------------------------

    @staticmethod
    def _scope_filter(scope: IndexScope, now: float | None) -> Any:
        from qdrant_client import models

        must: list[Any] = [
            models.FieldCondition(key=field, match=models.MatchValue(value=value))
            for field, value in zip(scope._fields, scope, strict=True)
        ]
        if now is not None:
            must.append(_unexpired(now))
        return models.Filter(must=must)

    # -- the seam (used by the index actor) -------------------------------------------

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace records (waits until Qdrant has them)."""
        if not records:
            return
        from qdrant_client import models

        mat = check_vectors(np.stack([np.asarray(r.vector) for r in records]))
        self._ensure_collection(mat.shape[1])
        points = []
        for r, vec in zip(records, mat, strict=True):
            payload: dict[str, Any] = {"key": r.key, **r.scope._asdict()}
            if r.expires_at is not None:
                payload["expires_at"] = float(r.expires_at)
            if r.text is not None:
                payload["text"] = r.text
            points.append(
                models.PointStruct(id=point_id(r.key), vector=vec.tolist(), payload=payload)
            )
        self._client.upsert(self._collection, points=points, wait=True)

    def delete_keys(self, keys: Iterable[str]) -> None:
        """Remove the points of ``keys`` (absent ones are ignored)."""
        ids = [point_id(k) for k in keys]
        if not ids or (self._dim is None and self._existing_dim() is None):
            return
        from qdrant_client import models

        self._client.delete(
            self._collection, points_selector=models.PointIdsList(points=ids), wait=True
        )

    def search_scope(
        self, scope: IndexScope, vector: Any, top_k: int = 1
    ) -> list[tuple[str, float]]:
        """Return up to ``top_k`` ``(key, cosine similarity)`` of unexpired points of
        ``scope``, best first."""
        if self._dim is None and self._existing_dim() is None:
            return []
        q = check_vectors(vector, self._dim)[0]
        reply = self._client.query_points(
            self._collection,
            query=q.tolist(),
            query_filter=self._scope_filter(scope, time.time()),
            limit=top_k,
            with_payload=["key"],
        )
        return [(p.payload["key"], float(p.score)) for p in reply.points]

    def scan(self, now: float | None = None) -> Iterator[VectorRecord]:
        """Yield every unexpired record, page by page."""
        if self._existing_dim() is None:
            return
        from qdrant_client import models

        now = time.time() if now is None else now
        flt = models.Filter(must=[_unexpired(now)])
        offset = None
        while True:
            points, offset = self._client.scroll(
                self._collection,
                scroll_filter=flt,
                limit=_SCAN_PAGE,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            for p in points:
                pl = p.payload or {}
                yield VectorRecord(
                    key=pl["key"],
                    vector=np.asarray(p.vector, dtype=np.float32),
                    scope=IndexScope(pl["tenant"], pl["namespace"], pl["model"], pl["context"]),
                    expires_at=pl.get("expires_at"),
                    text=pl.get("text"),
                )
            if offset is None:
                return

    def delete_expired(self, now: float | None = None) -> None:
        """Remove the points whose entries have expired."""
        if self._dim is None and self._existing_dim() is None:
            return
        from qdrant_client import models

        now = time.time() if now is None else now
        cond = models.FieldCondition(key="expires_at", range=models.Range(lte=now))
        self._client.delete(
            self._collection,
            points_selector=models.FilterSelector(filter=models.Filter(must=[cond])),
            wait=True,
        )

    def delete_tenant(self, tenant: str, namespace: str) -> None:
        """Remove every point of ``tenant`` in ``namespace``."""
        if self._dim is None and self._existing_dim() is None:
            return
        from qdrant_client import models

        must = [
            models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant)),
            models.FieldCondition(key="namespace", match=models.MatchValue(value=namespace)),
        ]
        self._client.delete(
            self._collection,
            points_selector=models.FilterSelector(filter=models.Filter(must=must)),
            wait=True,
        )

    def count(self) -> int:
        """Return the number of points in the collection (expired ones too)."""
        if self._existing_dim() is None:
            return 0
        return int(self._client.count(self._collection, exact=True).count)

    def close(self) -> None:
        """Close the connection; the collection and its points stay."""
        self._client.close()

    # -- the seed's calls, in this backend's default scope ----------------------------

    def add(
        self,
        key: str,
        vector: Any,
        metadata: dict[str, Any] | None = None,
        *,
        expires_at: float | None = None,
    ) -> None:
        """Insert or replace the vector of ``key`` in the default scope."""
        text = (metadata or {}).get("text")
        self.upsert([VectorRecord(key, vector, self._scope, expires_at, text)])

    def search(self, vector: Any, top_k: int = 1) -> list[tuple[str, float]]:
        """Search the default scope."""
        return self.search_scope(self._scope, vector, top_k)

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        self.delete_keys([key])

    def clear(self) -> None:
        """Remove every point of the default scope (never the collection)."""
        if self._dim is None and self._existing_dim() is None:
            return
        from qdrant_client import models

        self._client.delete(
            self._collection,
            points_selector=models.FilterSelector(filter=self._scope_filter(self._scope, None)),
            wait=True,
        )


def _seed_config(
    config: QdrantConfig | str | None,
    collection: str | None,
    api_key: str | None,
    url: str | None,
    path: str | None,
) -> QdrantConfig:
    """Return the `QdrantConfig` of the seed's arguments (or ``config`` itself).

    Raises:
        TypeError: a `QdrantConfig` together with the seed's arguments, or two
            locations.
    """
    if isinstance(config, QdrantConfig):
        if any(v is not None for v in (collection, api_key, url, path)):
            raise TypeError("give a QdrantConfig or the seed's url/collection/api_key, not both")
        return config
    if isinstance(config, str):
        if url is not None:
            raise TypeError("url given twice (positionally and by keyword)")
        url = config
    elif config is not None:
        raise TypeError(f"config must be a QdrantConfig or a url, got {type(config).__qualname__}")
    if url is not None and path is not None:
        raise TypeError("give url= or path=, not both")
    name = {"collection": collection} if collection is not None else {}
    if path is not None:
        return QdrantConfig(path=path, **name)
    if url is None or url == ":memory:":
        return QdrantConfig(location=":memory:", **name)
    return QdrantConfig(url=url, api_key=api_key, **name)


def _unexpired(now: float) -> Any:
    from qdrant_client import models

    return models.Filter(
        should=[
            models.IsEmptyCondition(is_empty=models.PayloadField(key="expires_at")),
            models.FieldCondition(key="expires_at", range=models.Range(gt=now)),
        ]
    )
