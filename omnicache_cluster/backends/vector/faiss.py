"""`FAISSBackend`: an in-process vector index with delete, expiry and a size-based switch.

Exact search (``IndexFlatIP``) while the index is small; past ``hnsw_threshold`` live
vectors it is rebuilt as HNSW (``IndexHNSWFlat``, inner product), which answers in
well under a millisecond at a million vectors where a flat scan takes tens. Vectors are
L2-normalised, so the inner product is the cosine similarity.

FAISS ids are row numbers. A delete (or an expiry, or a re-add of the same key)
tombstones the row: searches skip tombstones with an ``IDSelectorBitmap`` (exact for
the flat index, a filtered graph walk for HNSW), and once a quarter of the rows are
dead the index is compacted. HNSW cannot remove vectors in place, and ``IndexIDMap2``
with ``remove_ids`` is O(n) per delete on a flat index, so tombstones serve both.
With ``background_rebuild`` (the index actor's setting) a due switch or compaction is
only flagged; `FAISSBackend.rebuild`, run in another thread, builds the new index
while the current one keeps serving, and swaps it in with the writes made meanwhile.

The same class is the seed's ``FAISSBackend`` (``add``/``search``/``delete``/
``clear``/``close``) and the engine of each partition of the `SemanticIndexActor`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from omnicache_cluster.backends.vector.base import MAX_TEXT_CHARS, check_vectors, require

__all__ = ["FAISSBackend"]

_COMPACT_MIN_DEAD = 1024
#: A background rebuild carries over at most this many new rows under the lock; more
#: are copied outside it first.
_CATCH_UP_UNDER_LOCK = 4096


class FAISSBackend:
    """An in-process FAISS index of keyed vectors (cosine similarity).

    Args:
        dim: the vector dimension.
        hnsw_threshold: switch from exact search to HNSW past this many live vectors.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build breadth.
        ef_search: HNSW search breadth (raised to ``top_k`` when smaller).
        max_entries: drop the oldest vectors past this many (``None``: unbounded).
        clock: wall-clock seconds, for expiry (injectable for tests).
        background_rebuild: do not rebuild (switch to HNSW, compact) inside the write
            that makes it due; set `rebuild_due` instead, and let the owner call
            `rebuild` from another thread while reads and writes go on.

    Example:
        >>> b = FAISSBackend(dim=3)
        >>> b.add("paris", [1.0, 0.0, 0.1], {"value": "Paris"})
        >>> [(k, round(s, 3)) for k, s in b.search([1.0, 0.0, 0.0])]
        [('paris', 0.995)]
    """

    def __init__(
        self,
        dim: int,
        *,
        hnsw_threshold: int = 20_000,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        max_entries: int | None = None,
        clock: Callable[[], float] = time.time,
        background_rebuild: bool = False,
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(hnsw_threshold, int) or hnsw_threshold < 1:
            raise ValueError(f"hnsw_threshold must be a positive int, got {hnsw_threshold!r}")
        if max_entries is not None and (not isinstance(max_entries, int) or max_entries < 1):
            raise ValueError(f"max_entries must be a positive int or None, got {max_entries!r}")
        self._faiss = require("faiss", "faiss")
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self._hnsw_m = hnsw_m
        self._ef_construction = ef_construction
        self._ef_search = ef_search
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.RLock()
        self._background = background_rebuild
        #: A switch to HNSW or a compaction is due (with ``background_rebuild``).
        self.rebuild_due = False
        self.rebuilds = 0
        self._reset()

    # -- state ------------------------------------------------------------------------

    def _reset(self, kind: str = "flat") -> None:
        self._index = self._new_index(kind)
        self._kind = kind
        self._keys: list[str | None] = []
        self._texts: list[str | None] = []
        self._meta: list[Any] = []
        self._expires = np.empty(0, dtype=np.float64)
        self._live = np.empty(0, dtype=bool)
        self._row_of: dict[str, int] = {}
        self._dead = 0
        self._evicted: list[str] = []
        self._bitmap: np.ndarray | None = None
        self._next_expiry = math.inf

    def _new_index(self, kind: str) -> Any:
        faiss = self._faiss
        if kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        index = faiss.IndexHNSWFlat(self.dim, self._hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self._ef_construction
        return index

    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or ``"hnsw"``."""
        return self._kind

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, key: object) -> bool:
        return key in self._row_of

    # -- writes -----------------------------------------------------------------------

    def add(
        self,
        key: str,
        vector: Any,
        metadata: dict[str, Any] | None = None,
        *,
        expires_at: float | None = None,
        text: str | None = None,
    ) -> None:
        """Add (or replace) the vector of ``key``.

        Raises:
            ValueError: a bad vector (wrong dimension, NaN/inf, zero).
        """
        self.add_many([key], vector, metadata=[metadata], expires_at=[expires_at], texts=[text])

    def add_many(
        self,
        keys: Sequence[str],
        vectors: Any,
        *,
        metadata: Sequence[Any] | None = None,
        expires_at: Sequence[float | None] | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> None:
        """Add (or replace) several vectors at once.

        Raises:
            ValueError: a bad vector, or lengths that do not match.
        """
        mat = check_vectors(vectors, self.dim)
        n = len(keys)
        if mat.shape[0] != n:
            raise ValueError(f"{n} keys but {mat.shape[0]} vectors")
        for name, seq in (("metadata", metadata), ("expires_at", expires_at), ("texts", texts)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{n} keys but {len(seq)} {name}")
        if n == 0:
            return
        exp = np.array(
            [math.inf if e is None else float(e) for e in (expires_at or [None] * n)],
            dtype=np.float64,
        )
        with self._lock:
            # A key given twice in one batch: the last one wins.
            last = {k: i for i, k in enumerate(keys)}
            if len(last) != n:
                idx = sorted(last.values())
                keys = [keys[i] for i in idx]
                mat, exp = mat[idx], exp[idx]
                metadata = [metadata[i] for i in idx] if metadata is not None else None
                texts = [texts[i] for i in idx] if texts is not None else None
                n = len(keys)
            for key in keys:
                self._tombstone_key(key)
            start = len(self._keys)
            self._index.add(mat)
            self._keys.extend(keys)
            self._meta.extend(metadata if metadata is not None else [None] * n)
            self._texts.extend(
                (t[:MAX_TEXT_CHARS] if isinstance(t, str) else None)
                for t in (texts if texts is not None else [None] * n)
            )
            self._expires = np.concatenate([self._expires, exp])
            self._live = np.concatenate([self._live, np.ones(n, dtype=bool)])
            self._row_of.update((k, start + i) for i, k in enumerate(keys))
            self._next_expiry = min(self._next_expiry, float(exp.min()))
            self._bitmap = None
            self._enforce_max_entries()
            self._maybe_rebuild()

    def _tombstone_row(self, row: int) -> None:
        if self._live[row]:
            self._live[row] = False
            self._dead += 1
            key = self._keys[row]
            if key is not None and self._row_of.get(key) == row:
                del self._row_of[key]
            self._keys[row] = None
            self._texts[row] = None
            self._meta[row] = None
            self._bitmap = None

    def _tombstone_key(self, key: str) -> bool:
        row = self._row_of.get(key)
        if row is None:
            return False
        self._tombstone_row(row)
        return True

    def _enforce_max_entries(self) -> None:
        if self._max_entries is None or len(self._row_of) <= self._max_entries:
            return
        excess = len(self._row_of) - self._max_entries
        for row in np.flatnonzero(self._live)[:excess]:  # rows are in insertion order
            key = self._keys[int(row)]
            if key is not None:
                self._evicted.append(key)
            self._tombstone_row(int(row))

    def take_evicted(self) -> list[str]:
        """Return (and forget) the keys dropped by ``max_entries`` since the last call,
        so that an owner can drop them from its durable copy too."""
        with self._lock:
            out, self._evicted = self._evicted, []
            return out

    def _maybe_rebuild(self) -> None:
        live = len(self._row_of)
        rows = len(self._keys)
        to_hnsw = self._kind == "flat" and live >= self.hnsw_threshold
        compact = self._dead >= max(_COMPACT_MIN_DEAD, rows // 4)
        if to_hnsw or compact:
            if self._background:
                self.rebuild_due = True
            else:
                self._rebuild("hnsw" if live >= self.hnsw_threshold else "flat")

    def _rebuild(self, kind: str) -> None:
        rows = np.flatnonzero(self._live)
        vecs = self._index.reconstruct_n(0, self._index.ntotal)[rows] if len(rows) else None
        keys = [self._keys[r] for r in rows]
        meta = [self._meta[r] for r in rows]
        texts = [self._texts[r] for r in rows]
        exp = self._expires[rows]
        evicted = self._evicted
        self._reset(kind)
        self._evicted = evicted
        if vecs is not None:
            self._index.add(np.ascontiguousarray(vecs, dtype=np.float32))
            self._keys, self._meta, self._texts = keys, meta, texts
            self._expires = exp.copy()
            self._live = np.ones(len(rows), dtype=bool)
            self._row_of = {k: i for i, k in enumerate(keys) if k is not None}
            self._next_expiry = float(exp.min())

    def rebuild(self) -> bool:
        """Rebuild the index (HNSW past the threshold, else exact) without its dead
        rows, holding the lock only to copy rows and to swap: the build itself (seconds
        for a large HNSW graph) runs while others read and write the current index.
        Rows added meanwhile are copied in rounds outside the lock until few are left,
        then carried over under it; rows deleted meanwhile stay deleted. Returns whether
        it swapped (not if the index was cleared meanwhile)."""
        with self._lock:
            self.rebuild_due = False
            old = self._index
            n0 = len(self._keys)
            keep = np.flatnonzero(self._live[:n0])
            kind = "hnsw" if len(keep) >= self.hnsw_threshold else "flat"
            vecs = old.reconstruct_n(0, n0)[keep] if len(keep) else None
        new = self._new_index(kind)
        if vecs is not None:
            new.add(np.ascontiguousarray(vecs, dtype=np.float32))  # FAISS drops the GIL
        while True:
            with self._lock:
                if self._index is not old:  # cleared (or rebuilt) meanwhile
                    return False
                n1 = len(self._keys)
                if n1 - n0 <= _CATCH_UP_UNDER_LOCK:
                    if n1 > n0:
                        extra = old.reconstruct_n(n0, n1 - n0)
                        new.add(np.ascontiguousarray(extra, dtype=np.float32))
                        keep = np.concatenate([keep, np.arange(n0, n1)])
                    self._swap(new, kind, keep.astype(np.int64))
                    return True
                extra = old.reconstruct_n(n0, n1 - n0)
            # Many rows came in meanwhile: add them outside the lock, then look again.
            new.add(np.ascontiguousarray(extra, dtype=np.float32))
            keep = np.concatenate([keep, np.arange(n0, n1)])
            n0 = n1

    def _swap(self, new: Any, kind: str, keep: np.ndarray) -> None:
        live = self._live[keep]  # deletes made meanwhile stay deleted
        self._index, self._kind = new, kind
        self._keys = [self._keys[r] for r in keep]
        self._meta = [self._meta[r] for r in keep]
        self._texts = [self._texts[r] for r in keep]
        self._expires = self._expires[keep]
        self._live = live
        self._row_of = {k: i for i, k in enumerate(self._keys) if k is not None and live[i]}
        self._dead = int(len(live) - live.sum())
        self._bitmap = None
        pending = self._expires[live]
        self._next_expiry = float(pending.min()) if len(pending) else math.inf
        self.rebuilds += 1
        self.rebuild_due = False  # what writes meanwhile asked for is done, unless:
        self._maybe_rebuild()

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was present."""
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Sequence[str]) -> int:
        """Remove ``keys``; return how many were present."""
        with self._lock:
            n = sum(self._tombstone_key(k) for k in keys)
            if n:
                self._maybe_rebuild()
            return n

    def expire(self, now: float | None = None) -> list[str]:
        """Remove every vector whose entry has expired; return their keys."""
        now = self._clock() if now is None else now
        with self._lock:
            if now < self._next_expiry:
                return []
            rows = np.flatnonzero(self._live & (self._expires <= now))
            keys = [k for r in rows if (k := self._keys[r]) is not None]
            for r in rows:
                self._tombstone_row(int(r))
            pending = self._expires[self._live]
            self._next_expiry = float(pending.min()) if len(pending) else math.inf
            if len(rows):
                self._maybe_rebuild()
            return keys

    def clear(self) -> None:
        """Remove every vector."""
        with self._lock:
            self._reset()

    def close(self) -> None:
        """Nothing to release: an in-process index (its data stays until dropped)."""

    # -- reads ------------------------------------------------------------------------

    def search(self, vector: Any, top_k: int = 1) -> list[tuple[str, float]]:
        """Return up to ``top_k`` ``(key, cosine similarity)``, best first.

        Raises:
            ValueError: a bad vector or ``top_k``.
        """
        return self.search_many(vector, top_k)[0]

    def search_many(self, vectors: Any, top_k: int = 1) -> list[list[tuple[str, float]]]:
        """Search several query vectors at once (one FAISS call); results per query."""
        return [[(k, s) for k, s, _ in hits] for hits in self.search_rows(vectors, top_k)]

    def search_rows(
        self, vectors: Any, top_k: int = 1, *, now: float | None = None
    ) -> list[list[tuple[str, float, int]]]:
        """Like `search_many`, with each hit's row: ``(key, score, row)``.

        Expired vectors are never returned: they are tombstoned on sight and the
        search is run again, so a result is the exact top-k of the live vectors
        (for the flat index).
        """
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        mat = check_vectors(vectors, self.dim)
        now = self._clock() if now is None else now
        with self._lock:
            for _ in range(4):
                out, expired = self._search_once(mat, top_k, now)
                if not expired:
                    return out
                for row in expired:
                    self._tombstone_row(row)
            return [[h for h in hits if self._live[h[2]]] for hits in out]

    def _search_once(
        self, mat: np.ndarray, top_k: int, now: float
    ) -> tuple[list[list[tuple[str, float, int]]], set[int]]:
        if not self._row_of:
            return [[] for _ in range(mat.shape[0])], set()
        k = min(top_k, self._index.ntotal)
        scores, rows = self._index.search(mat, k, params=self._params(k))
        out: list[list[tuple[str, float, int]]] = []
        expired: set[int] = set()
        check_expiry = now >= self._next_expiry
        for srow, rrow in zip(scores, rows, strict=True):
            hits = []
            for score, row in zip(srow.tolist(), rrow.tolist(), strict=True):
                if row < 0 or not self._live[row]:
                    continue
                if check_expiry and self._expires[row] <= now:
                    expired.add(row)
                    continue
                key = self._keys[row]
                if key is not None:
                    hits.append((key, min(1.0, float(score)), row))
            out.append(hits)
        return out, expired

    def _params(self, k: int) -> Any:
        faiss = self._faiss
        sel = None
        if self._dead:
            if self._bitmap is None:
                self._bitmap = np.packbits(self._live, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(self._live), faiss.swig_ptr(self._bitmap))
        if self._kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self._ef_search, k))
            if sel is not None:
                params.sel = sel
            params._keep = sel  # the selector must outlive the call
            return params
        if sel is None:
            return None
        params = faiss.SearchParameters(sel=sel)
        params._keep = sel
        return params

    def text(self, key: str) -> str | None:
        """Return the query text stored with ``key`` (``None`` if absent)."""
        row = self._row_of.get(key)
        return None if row is None else self._texts[row]

    def text_of_row(self, row: int) -> str | None:
        """Return the text of a row returned by `search_rows`."""
        return self._texts[row]

    def get_value(self, key: str) -> Any:
        """Return the metadata ``"value"`` stored with ``key`` (the seed's call)."""
        row = self._row_of.get(key)
        meta = None if row is None else self._meta[row]
        return meta.get("value") if isinstance(meta, dict) else None

    def expires_at(self, key: str) -> float | None:
        """Return the expiry of ``key`` (``None``: never or absent)."""
        row = self._row_of.get(key)
        if row is None or math.isinf(self._expires[row]):
            return None
        return float(self._expires[row])

    def items(self) -> Iterator[tuple[str, np.ndarray, float | None, str | None]]:
        """Yield ``(key, vector, expires_at, text)`` of every live vector."""
        with self._lock:
            rows = np.flatnonzero(self._live)
            if not len(rows):
                return
            vecs = self._index.reconstruct_n(0, self._index.ntotal)
            snapshot = [(self._keys[r], vecs[r], self._expires[r], self._texts[r]) for r in rows]
        for key, vec, exp, text in snapshot:
            if key is not None:
                yield key, vec, None if math.isinf(exp) else float(exp), text

    def stats(self) -> dict[str, Any]:
        """Return ``kind``, ``entries``, ``rows`` and ``tombstones``."""
        return {
            "kind": self._kind,
            "entries": len(self._row_of),
            "rows": len(self._keys),
            "tombstones": self._dead,
        }
