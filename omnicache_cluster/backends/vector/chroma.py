"""`ChromaBackend`: cache-entry vectors in an embedded, persistent Chroma collection.

Same seam as `QdrantBackend`: record ids are ``uuid5`` of the cache key, the
collection is created only if absent (cosine space) and never wiped by the
constructor or ``close``, every record carries tenant, namespace, model, context and
expiry, and every search is filtered by the full scope and by expiry. Chroma is
imported when a backend is built (``pip install 'omnicache-cluster[chroma]'``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from omnicache_cluster.backends.vector.base import (
    IndexScope,
    VectorRecord,
    check_vectors,
    require,
)
from omnicache_cluster.backends.vector.qdrant import point_id

__all__ = ["ChromaBackend"]

_NEVER = -1.0  # Chroma metadata cannot hold None: "never expires"
_PAGE = 1000


class ChromaBackend:
    """Vectors of cache entries in a Chroma collection, searched per scope.

    The seed's arguments, positional or by keyword: ``ChromaBackend(collection_name=,
    persist_directory=None)``; without a folder the collection lives in this process
    only (Chroma's ephemeral client), as in the seed.

    Args:
        collection_name: the collection name (created if absent, never recreated;
            ``omnicache-semantic`` by default: a collection the seed wrote holds
            records without a scope, never matched).
        persist_directory: the folder of the embedded persistent client (``None``:
            ephemeral).
        path: this package's name of ``persist_directory``.
        collection: this package's name of ``collection_name``.
        scope: the scope used by the seed's calls (``add``, ``search``, ``delete``).

    Raises:
        TypeError: a name or a folder given under both of its names.
    """

    def __init__(
        self,
        collection_name: str | None = None,
        persist_directory: str | None = None,
        *,
        path: str | None = None,
        collection: str | None = None,
        scope: IndexScope | None = None,
    ) -> None:
        if collection_name is not None and collection is not None:
            raise TypeError("give collection_name= or collection=, not both")
        if persist_directory is not None and path is not None:
            raise TypeError("give persist_directory= or path=, not both")
        name = collection_name or collection or "omnicache-semantic"
        folder = persist_directory if persist_directory is not None else path
        chromadb = require("chromadb", "chroma")
        if folder:
            self._client = chromadb.PersistentClient(path=str(folder))
        else:
            self._client = chromadb.EphemeralClient()
        #: Where the collection lives (``None``: this process's memory).
        self.persist_directory = str(folder) if folder else None
        self._collection = self._client.get_or_create_collection(
            name, metadata={"hnsw:space": "cosine"}, embedding_function=None
        )
        self._scope = scope or IndexScope("default", "omnicache", "default")

    @staticmethod
    def _where(scope: IndexScope, now: float | None) -> dict[str, Any]:
        conds: list[dict[str, Any]] = [
            {field: value} for field, value in zip(scope._fields, scope, strict=True)
        ]
        if now is not None:
            conds.append({"$or": [{"expires_at": _NEVER}, {"expires_at": {"$gt": now}}]})
        return {"$and": conds}

    def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Insert or replace records (by key)."""
        if not records:
            return
        mat = check_vectors(np.stack([np.asarray(r.vector) for r in records]))
        metadatas = []
        for r in records:
            meta: dict[str, Any] = {"key": r.key, **r.scope._asdict()}
            meta["expires_at"] = _NEVER if r.expires_at is None else float(r.expires_at)
            if r.text is not None:
                meta["text"] = r.text
            metadatas.append(meta)
        self._collection.upsert(
            ids=[point_id(r.key) for r in records],
            embeddings=mat.tolist(),
            metadatas=metadatas,
        )

    def delete_keys(self, keys: Iterable[str]) -> None:
        """Remove the records of ``keys`` (absent ones are ignored)."""
        ids = [point_id(k) for k in keys]
        if ids:
            self._collection.delete(ids=ids)

    def search_scope(
        self, scope: IndexScope, vector: Any, top_k: int = 1
    ) -> list[tuple[str, float]]:
        """Return up to ``top_k`` ``(key, cosine similarity)`` of unexpired records of
        ``scope``, best first."""
        q = check_vectors(vector)[0]
        reply = self._collection.query(
            query_embeddings=[q.tolist()],
            n_results=top_k,
            where=self._where(scope, time.time()),
            include=["metadatas", "distances"],
        )
        metas = (reply.get("metadatas") or [[]])[0]
        dists = (reply.get("distances") or [[]])[0]
        return [(m["key"], 1.0 - float(d)) for m, d in zip(metas, dists, strict=True)]

    def scan(self, now: float | None = None) -> Iterator[VectorRecord]:
        """Yield every unexpired record, page by page."""
        now = time.time() if now is None else now
        offset = 0
        while True:
            page = self._collection.get(
                limit=_PAGE, offset=offset, include=["metadatas", "embeddings"]
            )
            ids = page.get("ids") or []
            for meta, emb in zip(page["metadatas"], page["embeddings"], strict=True):
                exp = float(meta["expires_at"])
                if exp != _NEVER and exp <= now:
                    continue
                yield VectorRecord(
                    key=meta["key"],
                    vector=np.asarray(emb, dtype=np.float32),
                    scope=IndexScope(
                        meta["tenant"], meta["namespace"], meta["model"], meta["context"]
                    ),
                    expires_at=None if exp == _NEVER else exp,
                    text=meta.get("text"),
                )
            if len(ids) < _PAGE:
                return
            offset += _PAGE

    def delete_expired(self, now: float | None = None) -> None:
        """Remove the records whose entries have expired."""
        now = time.time() if now is None else now
        self._collection.delete(
            where={"$and": [{"expires_at": {"$ne": _NEVER}}, {"expires_at": {"$lte": now}}]}
        )

    def count(self) -> int:
        """Return the number of records (expired ones too)."""
        return int(self._collection.count())

    def close(self) -> None:
        """Nothing to release for the embedded client; the data stays on disk."""

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
        """Remove every record of the default scope (never the collection)."""
        self._collection.delete(where=self._where(self._scope, None))
