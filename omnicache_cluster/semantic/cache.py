"""`SemanticCache`: answers reused for reworded questions, pointed to by a vector index.

A lookup tries the exact key first (same text, same context), then embeds the query
(in this process, with the user's ``embed_fn``), asks the cluster's semantic index
for the nearest entries of the same tenant, model and conversation context, and
serves the first candidate whose similarity reaches the threshold and that passes
the lexical guard, unless the runner-up is as close (within ``tie_margin``) and holds a
different answer: the query is then ambiguous between two cached questions, and it is
a miss. The answer lives in the shards; the index only points to it, and a pointer
whose entry has gone (evicted, expired) is dropped when found.

Cache faults never break the caller: a lookup that fails is a miss, a store that
fails is skipped; both are counted in `SemanticCache.metrics` and logged. Bad input
(a query that is not text, an embedding of the wrong dimension, NaN or zero) raises
``ValueError``/``TypeError`` from `lookup` and `set`, before anything is sent;
`get_or_compute` treats it as a cache fault and runs the function anyway.

Over a local backend (`InMemoryBackend`, `DiskBackend`, `RedisBackend`,
`TieredBackend`, a `CacheManager`) the cache runs in one process, without Ray: the
answers go to that backend and the vectors to a `LocalSemanticIndex` (FAISS in this
process), with the same rules. The seed's form
``SemanticCache(exact_backend=..., vector_backend=FAISSBackend(dim=...), embed_fn=...,
threshold=0.95)`` builds such a cache, and its `get` returns ``None`` on a miss as
the seed's did.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core.keys import CacheKey, validate_part
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.semantic.guard import LexicalFeatures, context_hash, lexical_features
from omnicache_cluster.semantic.guard import lexical_match as _lexical_match

if TYPE_CHECKING:
    from omnicache_cluster.actors.semantic import SemanticIndexConfig
    from omnicache_cluster.client import CacheCluster
    from omnicache_cluster.core.keys import CacheKeyBuilder
    from omnicache_cluster.protocols import CacheBackend
    from omnicache_cluster.semantic.index import SemanticIndex
    from omnicache_cluster.semantic.local import LocalSemanticIndex

__all__ = ["Candidate", "Lookup", "SemanticCache", "SemanticMetrics"]

_log = logging.getLogger(__name__)

#: The tag every stored answer carries, so that `SemanticCache.clear` removes them.
SEMANTIC_TAG = "omnicache:semantic"

#: The seed's defaults: its threshold, and ``None`` for a miss.
SEED_THRESHOLD = 0.95


def _is_cluster(backend: Any) -> bool:
    """Whether ``backend`` is a `CacheCluster` (without importing the client)."""
    client = sys.modules.get("omnicache_cluster.client")
    return client is not None and isinstance(backend, client.CacheCluster)


def _env_threshold() -> float | None:
    """Return ``OMNICACHE_SEMANTIC_THRESHOLD`` if set (a `ConfigError` if invalid)."""
    import os

    if os.environ.get("OMNICACHE_SEMANTIC_THRESHOLD") is None:
        return None
    from omnicache_cluster.config import OmnicacheSettings

    return float(OmnicacheSettings.from_env().semantic_threshold)


def _resolve_backend(cluster: Any, exact_backend: Any, key_builder: CacheKeyBuilder | None) -> Any:
    """Return the backend view a semantic cache stores its answers in.

    Raises:
        TypeError: no backend, two of them, or an object that is not a backend.
    """
    from omnicache_cluster.protocols import CacheBackend

    if cluster is not None and exact_backend is not None:
        raise TypeError("give the backend once: as the first argument or as exact_backend=")
    backend = cluster if cluster is not None else exact_backend
    if backend is None:
        raise TypeError(
            "SemanticCache needs a backend: a CacheCluster, or a local one such as "
            "InMemoryBackend() (the seed's exact_backend=)"
        )
    manager = sys.modules.get("omnicache_cluster.manager")
    if manager is not None and isinstance(backend, manager.CacheManager):
        backend = backend.backend
    if not isinstance(backend, CacheBackend):
        backend = _wrap_seed_backend(backend, key_builder)
    if key_builder is not None:
        if backend.key_namespace != key_builder.namespace:
            backend = backend.with_key_namespace(key_builder.namespace)
        if backend.tenant != key_builder.tenant:
            backend = backend.for_tenant(key_builder.tenant)
    return backend


def _wrap_seed_backend(backend: Any, key_builder: CacheKeyBuilder | None) -> Any:
    """Wrap an object with the seed's six backend methods in a `CustomBackend`.

    Raises:
        TypeError: ``backend`` is not one.
    """
    try:
        from omnicache_cluster.backends.custom import CustomBackend, is_seed_backend
    except ImportError:  # pragma: no cover - a build without the seed's protocol
        is_seed_backend = None  # type: ignore[assignment]
    if is_seed_backend is not None and is_seed_backend(backend):
        namespace = key_builder.namespace if key_builder is not None else "omnicache"
        return CustomBackend(backend, namespace=namespace)
    raise TypeError(
        f"{type(backend).__qualname__} is not a cache backend: give a CacheCluster, "
        "InMemoryBackend, DiskBackend, RedisBackend, TieredBackend, a CacheManager, or "
        "an object with the seed's methods get, set, delete, exists, clear and close"
    )


def _seed_positional(embed_fn: Any, rest: tuple[Any, ...]) -> tuple[Any, Any, float | None]:
    """Read the seed's positional form ``(exact, vector_backend, embed_fn[, threshold])``.

    Return ``(vector_backend, embed_fn, threshold)``.

    Raises:
        TypeError: more positional arguments than the seed's form has.
    """
    if callable(embed_fn) or not hasattr(embed_fn, "search"):
        raise TypeError(
            "SemanticCache takes (backend, embed_fn) positionally; give the other "
            "settings by keyword (threshold=, model=, ttl=, ...)"
        )
    if not rest or len(rest) > 2:
        raise TypeError(
            "the seed's positional form is SemanticCache(exact_backend, vector_backend, "
            "embed_fn[, threshold]); give key_builder= and the rest by keyword"
        )
    return embed_fn, rest[0], (rest[1] if len(rest) == 2 else None)


@dataclass(frozen=True)
class Lookup:
    """What a lookup found.

    Attributes:
        hit: whether a value is served.
        value: the served value, or `MISS`.
        kind: ``"exact"``, ``"semantic"`` or ``"miss"``.
        score: the similarity of the served (or best refused) candidate.
        key: the stored key of the served entry.
        matched: the cached query text that was matched.
        reason: why the best candidate was refused (``"threshold"``,
            ``"guard:negation"``, ``"learned"``, ``"ambiguous"``, ``"error"``,
            ``"empty"``).
    """

    hit: bool
    value: Any = MISS
    kind: str = "miss"
    score: float | None = None
    key: str | None = None
    matched: str | None = None
    reason: str | None = None


@dataclass
class Candidate:
    """A search hit under consideration: the pointer, its score and what was learned."""

    key: str
    score: float
    text: str | None
    observations: list[tuple[float, bool]] = field(default_factory=list)
    value: Any = MISS
    #: The inverse of the probability that this candidate was verified.
    weight: float = 1.0


class SemanticMetrics:
    """Counters of one semantic cache (thread-safe)."""

    _FIELDS = (
        "exact_hits",
        "semantic_hits",
        "misses",
        "guard_rejections",
        "threshold_rejections",
        "learned_rejections",
        "ambiguous_rejections",
        "stale_pointers",
        "sets",
        "errors",
        "verifications",
        "verified_wrong",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._FIELDS, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, Any]:
        """Return every counter plus ``hit_rate``."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        hits = out["exact_hits"] + out["semantic_hits"]
        lookups = hits + out["misses"]
        out["hit_rate"] = hits / lookups if lookups else 0.0
        return out


class SemanticCache:
    """Exact-then-semantic cache of answers, scoped by tenant, model and conversation.

    Args:
        cluster: where the answers live, and with its tenant and key namespace the
            scope of everything: a `CacheCluster` (the vectors go to the cluster's
            index actor), or a local backend or `CacheManager` (the vectors go to a
            `LocalSemanticIndex` in this process; no Ray).
        embed_fn: ``text -> vector`` (sync, or a coroutine function for the async
            calls); runs in the caller, never in the index actor.
        threshold: the least cosine similarity a candidate needs to be served; when
            omitted, the `CacheManager`'s ``semantic_threshold`` (built over one), else
            ``OMNICACHE_SEMANTIC_THRESHOLD`` if set, else 0.9 (0.95, the seed's
            default, when the cache is built the seed's way).
        model: the embedding model id (entries of different models never match).
        dim: the embedding dimension (learned from the first embedding if omitted).
        ttl: default seconds to live of stored answers (and their vectors).
        top_k: candidates fetched per lookup (the guard may refuse the best ones).
        lexical_guard: ``True`` (numbers, dates, negations, entities must agree),
            ``"strict"`` (also refuse one-word swaps), or ``False``.
        tie_margin: when the best guard-passing candidate beats the next one by less
            than this similarity and their answers differ, the lookup is a miss
            (``reason="ambiguous"``); ``0`` turns this off. Measured on GPTCache's 999
            pairs, 0.01 turns 885 right / 46 wrong at threshold 0.80 into 855 / 26.
        refusal_margin: a candidate ranked below one the guard refused is served only
            if it scores within this of the refused one (the query is about the
            refused entry, not about one much farther away); ``None``: no limit.
        layer: the key layer of stored answers.
        index_config: settings for the index actor if this creates it (cluster only).
        exact_backend: the seed's name of ``cluster`` (a local backend).
        vector_backend: the seed's vector store: a `FAISSBackend` holds the vectors of
            the default context in local mode (its ``dim`` is the embedding's).
            Chroma and Qdrant are not accepted here (they are the cluster index's
            durable copy: ``SemanticIndexConfig(qdrant=...)``).
        key_builder: scopes the answers to its namespace and tenant.
        serializer: not accepted: values are encoded by the backend's codec.
        miss: what `get` returns on a miss when no default is given: `MISS`, or
            ``None`` (the seed's) when the cache is built the seed's way.

    Raises:
        TypeError: no backend, an object that is not one, a vector store other than
            `FAISSBackend`, or a seed argument that has no equivalent (named).

    Example:
        >>> cache = SemanticCache(cluster, embed, threshold=0.9)  # doctest: +SKIP
        >>> cache.set("How do I cancel my order?", "Go to Orders > Cancel")  # doctest: +SKIP
        >>> cache.lookup("how can I cancel my order").score  # doctest: +SKIP
        0.93
    """

    def __init__(
        self,
        cluster: CacheCluster | CacheBackend | None = None,
        embed_fn: Callable[[str], Any] | None = None,
        *seed_args: Any,
        threshold: float | None = None,
        model: str = "default",
        dim: int | None = None,
        ttl: float | None = None,
        top_k: int = 4,
        lexical_guard: bool | str = True,
        tie_margin: float = 0.01,
        refusal_margin: float | None = 0.05,
        layer: str = "semantic",
        index_config: SemanticIndexConfig | None = None,
        exact_backend: CacheBackend | None = None,
        vector_backend: Any = None,
        key_builder: CacheKeyBuilder | None = None,
        serializer: Any = None,
        miss: Any = ...,
    ) -> None:
        seed_form = exact_backend is not None or vector_backend is not None
        if seed_args or (embed_fn is not None and not callable(embed_fn)):
            vector_backend, embed_fn, pos_threshold = _seed_positional(embed_fn, seed_args)
            seed_form = True
            if pos_threshold is not None:
                if threshold is not None:
                    raise TypeError("threshold given twice (positionally and by keyword)")
                threshold = pos_threshold
        if serializer is not None:
            raise TypeError(
                "SemanticCache has no serializer=: values are encoded by the backend's "
                "codec (msgpack or JSON; pickle only with a signed opt-in), set on the "
                "backend or cluster"
            )
        if not callable(embed_fn):
            raise TypeError("embed_fn must be a callable text -> vector")
        manager_threshold = getattr(cluster, "semantic_threshold", None)
        backend = _resolve_backend(cluster, exact_backend, key_builder)
        self._local = not _is_cluster(backend)
        self._vector_backend = self._check_vector_backend(vector_backend, index_config)
        if dim is None and self._vector_backend is not None:
            dim = int(self._vector_backend.dim)
        if threshold is None and isinstance(manager_threshold, float):
            threshold = manager_threshold  # a CacheManager's (OMNICACHE_SEMANTIC_THRESHOLD)
        if threshold is None:
            threshold = _env_threshold()
        if threshold is None:
            threshold = SEED_THRESHOLD if seed_form else 0.9
        #: What `get` returns on a miss when the caller gives no default.
        self.miss_value: Any = (None if seed_form else MISS) if miss is ... else miss
        cluster = backend
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        if lexical_guard not in (True, False, "strict"):
            raise ValueError(
                f"lexical_guard must be True, False or 'strict', got {lexical_guard!r}"
            )
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        if (
            isinstance(tie_margin, bool)
            or not isinstance(tie_margin, int | float)
            or not 0.0 <= tie_margin < 1.0
        ):
            raise ValueError(f"tie_margin must be in [0, 1), got {tie_margin!r}")
        if refusal_margin is not None and (
            isinstance(refusal_margin, bool)
            or not isinstance(refusal_margin, int | float)
            or not 0.0 <= refusal_margin <= 2.0
        ):
            raise ValueError(f"refusal_margin must be in [0, 2] or None, got {refusal_margin!r}")
        self._cluster = cluster
        self._embed_fn = embed_fn
        self.threshold = float(threshold)
        self._model = model
        self._dim = dim
        self._ttl = ttl
        self._top_k = top_k
        self._guard = lexical_guard
        self.tie_margin = float(tie_margin)
        self.refusal_margin = None if refusal_margin is None else float(refusal_margin)
        self._layer = validate_part("layer", layer)
        self._index_config = index_config
        self._index: SemanticIndex | LocalSemanticIndex | None = None
        self.metrics = SemanticMetrics()

    # -- helpers ----------------------------------------------------------------------

    def _check_vector_backend(self, vector_backend: Any, index_config: Any) -> Any:
        """Return the seed's ``vector_backend`` if this mode can use it.

        Raises:
            TypeError: a vector store the semantic cache cannot index with.
        """
        if not self._local:
            if vector_backend is not None:
                raise TypeError(
                    "on a CacheCluster the vectors live in the cluster's semantic index "
                    "actor: drop vector_backend= (for a durable copy use "
                    "index_config=SemanticIndexConfig(qdrant=QdrantConfig(...)))"
                )
            return None
        if index_config is not None:
            raise TypeError(
                "index_config= configures the cluster's index actor; this cache runs "
                "over a local backend (pass vector_backend=FAISSBackend(dim=...) instead)"
            )
        if vector_backend is None:
            return None
        from omnicache_cluster.backends.vector.faiss import FAISSBackend

        if not isinstance(vector_backend, FAISSBackend):
            raise TypeError(
                f"a local SemanticCache indexes with FAISS in this process, not with "
                f"{type(vector_backend).__qualname__}: pass vector_backend=FAISSBackend("
                "dim=...) or omit it (Chroma and Qdrant keep the cluster index's "
                "durable copy: SemanticIndexConfig(qdrant=...))"
            )
        return vector_backend

    @property
    def local(self) -> bool:
        """Whether this cache runs in this process (a local backend, no cluster)."""
        return self._local

    @property
    def backend(self) -> Any:
        """The backend view (or cluster client) the answers are stored in."""
        return self._cluster

    def _index_for(self, dim: int) -> SemanticIndex | LocalSemanticIndex:
        if self._index is None:
            if self._local:
                from omnicache_cluster.semantic.local import LocalSemanticIndex

                self._index = LocalSemanticIndex(
                    self._cluster,
                    self._model,
                    self._dim or dim,
                    vector_backend=self._vector_backend,
                )
            else:
                from omnicache_cluster.semantic.index import SemanticIndex

                self._index = SemanticIndex(
                    self._cluster, self._model, self._dim or dim, config=self._index_config
                )
        return self._index

    def _prepare(self, query: Any, context: Any) -> tuple[str, str, Any]:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__qualname__}")
        text = query.strip()
        if not text:
            raise ValueError("query must not be empty")
        ctx = context_hash(context)
        return text, ctx, ("semantic/v1", self._model, ctx, text)

    def _vector(self, raw: Any) -> Any:
        from omnicache_cluster.backends.vector.base import check_vectors

        vec = check_vectors(raw, self._dim)
        return self._index_for(vec.shape[1]).check(vec)

    def _embed(self, text: str) -> Any:
        raw = self._embed_fn(text)
        if inspect.isawaitable(raw):
            raise TypeError("embed_fn is a coroutine function: use the async methods")
        return self._vector(raw)

    async def _aembed(self, text: str) -> Any:
        if inspect.iscoroutinefunction(self._embed_fn):
            raw = await self._embed_fn(text)
        else:  # an embedding model call blocks: keep it off the event loop
            raw = await asyncio.to_thread(self._embed_fn, text)
        return self._vector(raw)

    def _features(self, text: str) -> LexicalFeatures:
        return lexical_features(text)

    def _guard_reason(self, feats: LexicalFeatures, cand: Candidate) -> str | None:
        if not self._guard or cand.text is None:
            return None
        reason = _lexical_match(feats, cand.text, substitution=self._guard == "strict")
        return None if reason is None else f"guard:{reason}"

    def _with_stats(self) -> bool:
        return False

    def _choose(
        self, text: str, hits: list[Any], prior: Any
    ) -> tuple[list[Candidate], list[Candidate], str | None]:
        """Split search hits into (serve in this order, verify, reason of refusal).

        The base rule: serve candidates at or above the threshold that pass the
        guard; verify none.
        """
        feats = self._features(text)
        serve: list[Candidate] = []
        reason = None
        refused: float | None = None  # the best score the guard refused
        for key, score, ctext, obs in hits:
            cand = Candidate(key, float(score), ctext, list(obs))
            if cand.score < self.threshold:
                reason = reason or "threshold"
                self.metrics.add("threshold_rejections")
                break
            if self._beneath_refusal(refused, cand.score):
                break
            why = self._guard_reason(feats, cand)
            if why is not None:
                reason = reason or why
                self.metrics.add("guard_rejections")
                refused = cand.score if refused is None else refused
                continue
            serve.append(cand)
        return serve, [], reason

    def _beneath_refusal(self, refused: float | None, score: float) -> bool:
        """Whether a candidate scores too far below one the guard refused to be served."""
        margin = self.refusal_margin
        return refused is not None and margin is not None and refused - score > margin

    def _rival(self, text: str, hits: list[Any], cand: Candidate) -> Candidate | None:
        """The next guard-passing hit after ``cand`` if it scores within the tie
        margin of it, else ``None``."""
        if self.tie_margin <= 0.0:
            return None
        feats = None
        after = False
        for key, score, ctext, _obs in hits:
            if not after:
                after = key == cand.key
                continue
            if cand.score - float(score) >= self.tie_margin:
                return None
            other = Candidate(key, float(score), ctext)
            feats = feats or self._features(text)
            if self._guard_reason(feats, other) is None:
                return other
        return None

    def _ambiguous(self, value: Any, rival_stored: Any) -> bool:
        """Whether a near-tied rival's stored entry holds another answer (counted)."""
        other = self._unwrap(rival_stored)
        if other is MISS or self._same_answer(value, other):
            return False
        self.metrics.add("ambiguous_rejections")
        return True

    def _same_answer(self, a: Any, b: Any) -> bool:
        """Whether two cached answers are the same (the adaptive cache asks its judge)."""
        try:
            return bool(a == b)
        except Exception:  # an odd __eq__ (numpy arrays): not provably the same
            return False

    def _fault(self, what: str, exc: BaseException) -> None:
        self.metrics.add("errors")
        _log.warning("semantic cache %s failed (served as a miss): %r", what, exc)

    @staticmethod
    def _unwrap(stored: Any) -> Any:
        if isinstance(stored, dict) and "v" in stored:
            return stored["v"]
        return MISS  # not an entry written by a semantic cache

    def _hit(self, cand: Candidate, value: Any) -> Lookup:
        self.metrics.add("semantic_hits")
        return Lookup(True, value, "semantic", cand.score, cand.key, cand.text)

    def _miss(self, reason: str | None, best: float | None = None) -> Lookup:
        self.metrics.add("misses")
        return Lookup(False, MISS, "miss", best, reason=reason or "empty")

    # -- sync -------------------------------------------------------------------------

    def _lookup(self, query: Any, context: Any) -> tuple[Lookup, Any, list[Candidate]]:
        text, ctx, kobj = self._prepare(query, context)
        try:
            stored = self._cluster.get(kobj, layer=self._layer)
        except Exception as exc:
            self._fault("exact lookup", exc)
            return self._miss("error"), None, []
        if stored is not MISS and (value := self._unwrap(stored)) is not MISS:
            self.metrics.add("exact_hits")
            return (
                Lookup(True, value, "exact", 1.0, self._cluster.key(kobj, self._layer), text),
                None,
                [],
            )
        vec = self._embed(text)
        try:
            index = self._index_for(vec.shape[1])
            hits, prior = index.search(vec, self._top_k, context=ctx, with_stats=self._with_stats())
            serve, verify, reason = self._choose(text, hits[0], prior)
            for cand in serve:
                value = self._unwrap(self._cluster.get(CacheKey.parse(cand.key)))
                if value is MISS:
                    self.metrics.add("stale_pointers")
                    index.delete([cand.key], context=ctx)
                    continue
                rival = self._rival(text, hits[0], cand)
                if rival is not None and self._ambiguous(
                    value, self._cluster.get(CacheKey.parse(rival.key))
                ):
                    reason = "ambiguous"
                    break
                return self._hit(cand, value), vec, []
            live = []
            for cand in verify:
                cand.value = self._unwrap(self._cluster.get(CacheKey.parse(cand.key)))
                if cand.value is not MISS:
                    live.append(cand)
        except Exception as exc:
            self._fault("semantic lookup", exc)
            return self._miss("error"), vec, []
        best = float(hits[0][0][1]) if hits[0] else None
        return self._miss(reason, best), vec, live

    def lookup(self, query: str, *, context: Any = None) -> Lookup:
        """Look ``query`` up: exact first, then by meaning.

        Args:
            query: the question (the last user message).
            context: what else the answer depends on (system prompt, earlier turns,
                model, tools); only entries stored with the same context can match.

        Raises:
            TypeError: ``query`` is not a str.
            ValueError: an empty query, or a bad embedding.
        """
        return self._lookup(query, context)[0]

    def get(self, query: str, default: Any = ..., *, context: Any = None) -> Any:
        """Return the cached answer for ``query`` (or a close rewording), else ``default``
        (`miss_value` when not given: `MISS`, or ``None`` for a cache built the seed's
        way)."""
        found = self.lookup(query, context=context)
        if found.hit:
            return found.value
        return self.miss_value if default is ... else default

    def _store(
        self, text: str, ctx: str, kobj: Any, value: Any, vec: Any, ttl: float | None
    ) -> bool:
        ttl = self._ttl if ttl is None else ttl
        try:
            self._cluster.set(
                kobj, {"q": text, "v": value}, ttl=ttl, tags=[SEMANTIC_TAG], layer=self._layer
            )
            skey = self._cluster.key(kobj, self._layer)
            self._index_for(vec.shape[1]).add([skey], vec, context=ctx, ttl=ttl, texts=[text])
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            self._fault("store", exc)
            return False
        self.metrics.add("sets")
        return True

    def set(
        self,
        query: str,
        value: Any,
        ttl: float | None = None,
        *,
        context: Any = None,
        vector: Any = None,
    ) -> bool:
        """Store ``value`` as the answer to ``query``; return whether it was stored.

        Args:
            query: the question.
            value: the answer (anything the backend's serializer encodes).
            ttl: seconds to live (the cache's default if omitted).
            context: the conversation context (see `lookup`).
            vector: the query's embedding, if the caller has it already.

        Raises:
            TypeError: the query is not a str, or the value cannot be encoded.
            ValueError: an empty query or a bad embedding.
        """
        text, ctx, kobj = self._prepare(query, context)
        vec = self._embed(text) if vector is None else self._vector(vector)
        return self._store(text, ctx, kobj, value, vec, ttl)

    def get_or_compute(
        self, query: str, fn: Callable[[], Any], *, context: Any = None, ttl: float | None = None
    ) -> Any:
        """Return the cached answer, or call ``fn()``, store its result and return it.

        Any cache fault (including a bad embedding) is logged and counted, and
        ``fn`` runs; exceptions of ``fn`` itself propagate.
        """
        try:
            found, vec, verify = self._lookup(query, context)
        except (TypeError, ValueError) as exc:
            self._fault("lookup", exc)
            return fn()
        if found.hit:
            return found.value
        value = fn()
        try:
            text, ctx, kobj = self._prepare(query, context)
            self._after_compute(text, ctx, value, verify)
            if vec is None:
                vec = self._embed(text)
            self._store(text, ctx, kobj, value, vec, ttl)
        except Exception as exc:
            self._fault("store", exc)
        return value

    def _after_compute(self, text: str, ctx: str, value: Any, verify: list[Candidate]) -> None:
        """Hook: what to learn from a fresh answer (the adaptive cache verifies)."""

    # -- async ------------------------------------------------------------------------

    async def _alookup(self, query: Any, context: Any) -> tuple[Lookup, Any, list[Candidate]]:
        text, ctx, kobj = self._prepare(query, context)
        try:
            stored = await self._cluster.aget(kobj, layer=self._layer)
        except Exception as exc:
            self._fault("exact lookup", exc)
            return self._miss("error"), None, []
        if stored is not MISS and (value := self._unwrap(stored)) is not MISS:
            self.metrics.add("exact_hits")
            return (
                Lookup(True, value, "exact", 1.0, self._cluster.key(kobj, self._layer), text),
                None,
                [],
            )
        vec = await self._aembed(text)
        try:
            index = self._index_for(vec.shape[1])
            hits, prior = await index.asearch(
                vec, self._top_k, context=ctx, with_stats=self._with_stats()
            )
            serve, verify, reason = self._choose(text, hits[0], prior)
            for cand in serve:
                stored = await self._cluster.aget(CacheKey.parse(cand.key))
                value = self._unwrap(stored)
                if value is MISS:
                    self.metrics.add("stale_pointers")
                    await index.adelete([cand.key], context=ctx)
                    continue
                rival = self._rival(text, hits[0], cand)
                if rival is not None and self._ambiguous(
                    value, await self._cluster.aget(CacheKey.parse(rival.key))
                ):
                    reason = "ambiguous"
                    break
                return self._hit(cand, value), vec, []
            live = []
            for cand in verify:
                stored = await self._cluster.aget(CacheKey.parse(cand.key))
                cand.value = self._unwrap(stored)
                if cand.value is not MISS:
                    live.append(cand)
        except Exception as exc:
            self._fault("semantic lookup", exc)
            return self._miss("error"), vec, []
        best = float(hits[0][0][1]) if hits[0] else None
        return self._miss(reason, best), vec, live

    async def alookup(self, query: str, *, context: Any = None) -> Lookup:
        """Async `lookup`."""
        return (await self._alookup(query, context))[0]

    async def aget(self, query: str, default: Any = ..., *, context: Any = None) -> Any:
        """Async `get`."""
        found = await self.alookup(query, context=context)
        if found.hit:
            return found.value
        return self.miss_value if default is ... else default

    async def _astore(
        self, text: str, ctx: str, kobj: Any, value: Any, vec: Any, ttl: float | None
    ) -> bool:
        ttl = self._ttl if ttl is None else ttl
        try:
            await self._cluster.aset(
                kobj, {"q": text, "v": value}, ttl=ttl, tags=[SEMANTIC_TAG], layer=self._layer
            )
            skey = self._cluster.key(kobj, self._layer)
            await self._index_for(vec.shape[1]).aadd(
                [skey], vec, context=ctx, ttl=ttl, texts=[text]
            )
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            self._fault("store", exc)
            return False
        self.metrics.add("sets")
        return True

    async def aset(
        self,
        query: str,
        value: Any,
        ttl: float | None = None,
        *,
        context: Any = None,
        vector: Any = None,
    ) -> bool:
        """Async `set`."""
        text, ctx, kobj = self._prepare(query, context)
        vec = await self._aembed(text) if vector is None else self._vector(vector)
        return await self._astore(text, ctx, kobj, value, vec, ttl)

    async def aget_or_compute(
        self, query: str, fn: Callable[[], Any], *, context: Any = None, ttl: float | None = None
    ) -> Any:
        """Async `get_or_compute`; ``fn`` may return an awaitable."""
        try:
            found, vec, verify = await self._alookup(query, context)
        except (TypeError, ValueError) as exc:
            self._fault("lookup", exc)
            found, vec, verify = Lookup(False), None, []
        if found.hit:
            return found.value
        value = fn()
        if inspect.isawaitable(value):
            value = await value
        try:
            text, ctx, kobj = self._prepare(query, context)
            await self._aafter_compute(text, ctx, value, verify)
            if vec is None:
                vec = await self._aembed(text)
            await self._astore(text, ctx, kobj, value, vec, ttl)
        except Exception as exc:
            self._fault("store", exc)
        return value

    async def _aafter_compute(
        self, text: str, ctx: str, value: Any, verify: list[Candidate]
    ) -> None:
        """Async hook of `_after_compute`."""

    def delete(self, query: str, *, context: Any = None) -> bool:
        """Remove the answer stored for ``query`` (in ``context``) and its vector;
        return whether an answer was there.

        Raises:
            TypeError: ``query`` is not a str.
            ValueError: an empty query.
        """
        _text, ctx, kobj = self._prepare(query, context)
        found = self._cluster.delete(kobj, layer=self._layer)
        skey = self._cluster.key(kobj, self._layer)
        if self._index is not None:
            self._index.delete([skey], context=ctx)
        elif not self._local:  # another process may have indexed it
            from omnicache_cluster.semantic.index import SemanticIndex

            SemanticIndex(self._cluster, self._model, self._dim or 1).delete([skey], context=ctx)
        return bool(found)

    async def adelete(self, query: str, *, context: Any = None) -> bool:
        """Async `delete`."""
        _text, ctx, kobj = self._prepare(query, context)
        found = await self._cluster.adelete(kobj, layer=self._layer)
        skey = self._cluster.key(kobj, self._layer)
        if self._index is not None:
            await self._index.adelete([skey], context=ctx)
        elif not self._local:
            from omnicache_cluster.semantic.index import SemanticIndex

            index = SemanticIndex(self._cluster, self._model, self._dim or 1)
            await index.adelete([skey], context=ctx)
        return bool(found)

    def clear(self) -> int:
        """Remove this tenant's semantic answers in its key namespace (of every semantic
        cache: they carry `SEMANTIC_TAG`) and its vectors of every model and context;
        return how many vectors were removed.

        A cleared question is a miss afterwards, exact or reworded.
        """
        self._cluster.invalidate(SEMANTIC_TAG)
        if self._index is not None:
            return self._index.clear()
        if self._local:
            return 0
        from omnicache_cluster.semantic.index import SemanticIndex

        return SemanticIndex(self._cluster, self._model, self._dim or 1).clear()
