"""`AdaptiveSemanticCache`: the user bounds the false-hit rate; thresholds are learned.

Instead of a similarity threshold the user states ``max_error_rate`` (say 0.02: at
most 2% of semantic hits may be wrong). The cache learns when a candidate is safe to
serve from verification, in the spirit of vCache ("Verified Semantic Prompt
Caching", 2025; implemented here from the paper's description, no code copied):

* **Labels for free.** When the nearest candidate is not served, the real function
  runs anyway; its answer is compared with the candidate's cached answer by
  ``equivalent(a, b)`` (``==`` by default, an LLM judge if the user gives one). That
  is a labelled ``(similarity, correct)`` observation of the candidate's entry.
* **Exploration.** A candidate that would be served is verified instead with a small
  probability (more often when its estimate is borderline), so the error of what is
  served keeps being measured. Labels are not importance-weighted: the error rate
  *at* a similarity does not depend on how often it is verified (weighting made the
  few explored labels dominate and the estimate too noisy to serve from).
* **Shared curve.** Every label also goes to a histogram per (tenant, namespace,
  model) in the index actor, so every process learns from every other's
  verifications. From it the error rate per similarity bin is fitted
  non-increasing (pool-adjacent-violators, ``(wrong + 1/2) / (labels + 1)`` per pooled
  block). The error of serving from a threshold ``t`` is the average of that curve
  over the lookups at ``t`` or above (weighted by where this process's lookups
  fall: 200 counters); the lowest ``t`` whose estimate plus ``z`` standard errors
  is within ``safety * max_error_rate`` (with ``min_labels`` labels above it) sets
  the cut-off: the fitted error rate at ``t``. Serving the lowest-risk lookups up to
  the point where the *served set* meets the bound serves far more than requiring
  each bin to meet it. Until enough labels exist nothing is served, so a new
  deployment starts safe.
* **Per entry.** An entry's own labels move its estimate: with ``W`` wrong labels at
  similarity ``>= s - slack`` (and, if ``right_weight > 0``, ``C`` right ones at
  ``<= s``), ``p(s) = (m * g(s) + W) / (m + W + C)`` for a prior strength ``m``. An
  entry shown wrong near ``s`` stops being served there; a new entry has the shared
  curve only.

A candidate is served when ``p(s)`` is below the cut-off (or at it, at or above the
threshold). Memory is bounded: the actor keeps 200 bins per scope and at most
``max_observations_per_entry`` labels per entry; a policy keeps 200 counters.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from omnicache_cluster.semantic.cache import Candidate, SemanticCache

if TYPE_CHECKING:
    from omnicache_cluster.actors.semantic import SemanticIndexConfig
    from omnicache_cluster.client import CacheCluster
    from omnicache_cluster.core.keys import CacheKeyBuilder
    from omnicache_cluster.protocols import CacheBackend

__all__ = ["AdaptivePolicy", "AdaptiveSemanticCache"]


_BINS = 200  # the index actor's histogram (PRIOR_BINS)


def _exact(a: Any, b: Any) -> bool:
    return bool(a == b)


def _bin(score: float, bins: int) -> int:
    return min(bins - 1, max(0, int(score * bins)))


@dataclass(frozen=True)
class Curve:
    """What the labels of a scope say: the fitted error rate per similarity bin, the
    cut-off ``rate`` (serve a candidate whose estimate is at most it; negative: serve
    nothing) and the ``threshold`` it corresponds to without entry evidence."""

    error: np.ndarray
    rate: float
    threshold: float


def _decreasing_fit(wrong: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit error rates per bin, non-increasing in similarity (pool-adjacent-violators).

    Return ``(rate per bin, block id per bin, variance per block)``: a block is a run of
    bins pooled into one estimate ``(wrong + 0.5) / (labels + 1)``; an empty bin joins
    the block below it (the more pessimistic one).
    """
    bins = len(n)
    blocks: list[list[float]] = []  # [wrong, labels, first bin], from high bins down
    for b in range(bins - 1, -1, -1):
        if n[b] <= 0:
            continue
        blocks.append([float(wrong[b]), float(n[b]), b])
        # Going down in similarity the rate must not fall: pool while it would.
        while len(blocks) > 1 and (blocks[-1][0] + 0.5) / (blocks[-1][1] + 1.0) < (
            blocks[-2][0] + 0.5
        ) / (blocks[-2][1] + 1.0):
            w, k, first = blocks.pop()
            blocks[-1][0] += w
            blocks[-1][1] += k
            blocks[-1][2] = first
    rate = np.ones(bins)
    block = np.zeros(bins, dtype=np.int64)
    var = np.zeros(max(1, len(blocks)))
    if not blocks:
        return rate, block, var
    # blocks[i] covers [first_i, first_{i-1}) (blocks[0] up to the top); bins below the
    # lowest labelled one take the lowest block.
    upper = bins
    for i, (w, k, first) in enumerate(blocks):
        p = (w + 0.5) / (k + 1.0)
        lo = 0 if i == len(blocks) - 1 else int(first)
        rate[lo:upper] = p
        block[lo:upper] = i
        var[i] = p * (1.0 - p) / (k + 1.0)
        upper = lo
    return rate, block, var


class AdaptivePolicy:
    """The decision rule of `AdaptiveSemanticCache`, without I/O (unit-testable).

    Args:
        max_error_rate: the bound on the share of wrong semantic hits.
        prior_strength: ``m``, how many labels the shared curve is worth against an
            entry's own.
        explore_rate: probability of verifying a confident hit instead of serving it.
        borderline_explore_rate: the same for a hit whose estimate is above half the
            serving cut-off.
        min_labels: labels at or above a threshold before serving from it (default
            ``max(30, 3 / max_error_rate)``: fewer cannot show the bound is met).
        floor: candidates below this similarity are neither served nor verified.
        slack: a wrong label this much below ``s`` still counts against ``s``.
        safety: aim the estimated error of the served set at ``safety *
            max_error_rate`` (0.9: the served set's error drifts as the cache fills).
        z: standard errors added to that estimate (its uncertainty shrinks as labels
            come in, so the cache serves more as it learns).
        right_weight: how much an entry's right labels at lower similarity lower its
            estimate (0, the default: only wrong labels move it; on QQP an entry
            verified right for one rewording says little about a query from elsewhere).
        rng: the random source of exploration (seeded in tests).
    """

    def __init__(
        self,
        max_error_rate: float,
        *,
        prior_strength: float = 2.0,
        explore_rate: float = 0.02,
        borderline_explore_rate: float = 0.02,
        min_labels: float | None = None,
        floor: float = 0.5,
        slack: float = 0.02,
        safety: float = 0.9,
        z: float = 0.5,
        right_weight: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(max_error_rate, int | float) or not 0.0 < max_error_rate < 1.0:
            raise ValueError(f"max_error_rate must be in (0, 1), got {max_error_rate!r}")
        for name, value in (("explore_rate", explore_rate), ("floor", floor)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if not 0.0 < borderline_explore_rate <= 1.0:
            raise ValueError(
                f"borderline_explore_rate must be in (0, 1], got {borderline_explore_rate!r}"
            )
        if not 0.0 < safety <= 1.0:
            raise ValueError(f"safety must be in (0, 1], got {safety!r}")
        self.max_error_rate = float(max_error_rate)
        self.prior_strength = float(prior_strength)
        self.explore_rate = float(explore_rate)
        self.borderline_explore_rate = float(borderline_explore_rate)
        # Rule of three: n labels, none wrong, bound the error rate at about 3 / n.
        self.min_labels = (
            max(30.0, 3.0 / self.max_error_rate) if min_labels is None else float(min_labels)
        )
        self.floor = float(floor)
        self.slack = float(slack)
        self.safety = float(safety)
        self.z = float(z)
        self.right_weight = float(right_weight)
        self._rng = rng or random.Random()
        # Where this process's lookups fall (best candidate's similarity): the weights
        # of the bins when the error of a threshold is averaged over its served set.
        self._seen = np.zeros(_BINS)

    def observe(self, score: float) -> None:
        """Count one lookup whose best candidate had similarity ``score``."""
        self._seen[_bin(score, _BINS)] += 1.0

    def curve(self, prior: Sequence[Sequence[float]] | None) -> Curve:
        """Fit the error curve and the serving cut-off to the scope's labels.

        ``prior`` is ``(correct, wrong[, ...])`` label counts per similarity bin (the
        index actor's histogram). The error rate per bin is fitted non-increasing in
        similarity (pool-adjacent-violators); the served set of a threshold ``t`` is
        every lookup at ``t`` or above, weighted by where lookups fall; the lowest
        ``t`` whose estimated error plus ``z`` standard errors is within
        ``safety * max_error_rate`` sets the cut-off ``rate`` (the error rate at
        ``t``). With too few labels nothing is served.
        """
        if not prior or not len(prior[0]):
            return Curve(np.ones(_BINS), -1.0, 1.0)
        correct = np.asarray(prior[0], dtype=np.float64)
        wrong = np.asarray(prior[1], dtype=np.float64)
        bins = len(correct)
        n = correct + wrong
        rate, block, bvar = _decreasing_fit(wrong, n)
        seen = self._seen if len(self._seen) == bins else np.zeros(bins)
        mass = seen if seen.sum() >= 100 else seen + n
        mass = np.maximum(mass, 1e-9 * (n > 0))
        # Cumulative from the top: E(t) = sum q p / sum q over bins >= t.
        num = np.cumsum((mass * rate)[::-1])[::-1]
        den = np.cumsum(mass[::-1])[::-1]
        labels = np.cumsum(n[::-1])[::-1]
        # The variance of E(t): a block's bins share one estimate.
        err_var = np.zeros(bins)
        done = part = 0.0
        cur = -1
        for b in range(bins - 1, -1, -1):
            if block[b] != cur:
                if cur >= 0:
                    done += part * part * bvar[cur]
                cur, part = int(block[b]), 0.0
            part += mass[b]
            err_var[b] = done + part * part * bvar[cur]
        with np.errstate(invalid="ignore", divide="ignore"):
            est = np.where(den > 0, num / den, 1.0)
            sd = np.where(den > 0, np.sqrt(err_var) / den, 1.0)
        ok = (est + self.z * sd <= self.safety * self.max_error_rate) & (labels >= self.min_labels)
        # A threshold sits on a labelled bin (an empty one has its lower neighbour's
        # pessimistic rate, which would make a loose cut-off).
        ok &= (np.arange(bins) >= int(self.floor * bins)) & (n > 0)
        if not ok.any():
            return Curve(rate, -1.0, 1.0)
        t = int(np.argmax(ok))
        return Curve(rate, float(rate[t]), t / bins)

    def p_wrong(
        self, score: float, observations: Sequence[tuple[float, bool]], curve: Curve
    ) -> float:
        """Return the estimated probability that serving this entry at ``score`` is
        wrong: the curve's rate at ``score``, moved by the entry's own labels (``W``
        wrong at similarity ``>= score - slack``, ``C`` right at ``<= score`` times
        ``right_weight``) as
        ``(m * rate + W) / (m + W + C)``."""
        g = float(curve.error[_bin(score, len(curve.error))])
        wrong = sum(1 for s, ok in observations if not ok and s >= score - self.slack)
        right = self.right_weight * sum(1 for s, ok in observations if ok and s <= score)
        m = self.prior_strength
        return (m * g + wrong) / (m + wrong + right)

    @staticmethod
    def _serves(p: float, score: float, curve: Curve) -> bool:
        return p < curve.rate or (p <= curve.rate and score >= curve.threshold)

    def decide(
        self, score: float, observations: Sequence[tuple[float, bool]], curve: Curve
    ) -> tuple[str, float]:
        """Return ``("serve" | "verify" | "explore" | "skip", weight)`` for one
        candidate.

        ``verify``: not safe to serve, run the function and label the candidate;
        ``explore``: safe, but verified anyway (with probability ``explore_rate``);
        ``skip``: below the floor. Served: an estimate below the cut-off, or at it
        and at or above the threshold. The weight of a label in the shared curve is
        1 (a bin's error rate does not depend on how often the bin is verified), or
        0 when the curve alone would have served and the entry's own labels vetoed
        it: such entries are never served, so their labels would only bias the
        curve up.
        """
        if score < self.floor:
            return "skip", 1.0
        p = self.p_wrong(score, observations, curve)
        if not self._serves(p, score, curve):
            vetoed = self._serves(self.p_wrong(score, (), curve), score, curve)
            return "verify", 0.0 if vetoed else 1.0
        rate = self.explore_rate if p <= curve.rate / 2 else self.borderline_explore_rate
        if rate > 0 and self._rng.random() < rate:
            return "explore", 1.0
        return "serve", 1.0


#: The seed's tuning arguments of its AdaptiveSemanticCache (a hit-rate target),
#: which this cache replaces with a bound on wrong hits.
_SEED_TUNING = frozenset(
    {
        "threshold",
        "target_hit_rate",
        "adjustment_interval",
        "threshold_min",
        "threshold_max",
        "adjustment_step",
        "max_turn_count",
    }
)
_TURN_COUNT = (
    "turn_count= is the seed's multi-turn guard; pass the conversation as context= "
    "(e.g. chat_context(messages)): only entries stored with the same context match"
)


def _refuse_seed_tuning(seed_tuning: dict[str, Any], seed_args: tuple[Any, ...]) -> None:
    """Raise a TypeError that names the replacement of the seed's tuning arguments."""
    if len(seed_args) > 1:
        raise TypeError(
            "AdaptiveSemanticCache takes no threshold: give max_error_rate= (the share "
            "of semantic hits allowed to be wrong) instead"
        )
    if not seed_tuning:
        return
    unknown = sorted(set(seed_tuning) - _SEED_TUNING)
    if unknown:
        raise TypeError(f"AdaptiveSemanticCache got unexpected keyword arguments {unknown}")
    raise TypeError(
        f"AdaptiveSemanticCache does not tune a threshold toward a hit rate "
        f"({', '.join(sorted(seed_tuning))} are the seed's): give max_error_rate= (the "
        "share of semantic hits allowed to be wrong; thresholds are learned from "
        "verification) and pass the conversation as context= instead of max_turn_count"
    )


class AdaptiveSemanticCache(SemanticCache):
    """A `SemanticCache` that learns per-entry thresholds under a false-hit bound.

    Args:
        cluster: the cluster client, or a local backend (see `SemanticCache`).
        embed_fn: ``text -> vector``, run in the caller.
        max_error_rate: the bound on the share of wrong semantic hits (e.g. 0.02).
        equivalent: ``(cached answer, fresh answer) -> bool``; exact equality by
            default; pass an LLM judge for free-text answers.
        policy: a ready `AdaptivePolicy` (overrides ``max_error_rate``'s defaults).
        model, dim, ttl, top_k, lexical_guard, tie_margin, refusal_margin, layer,
            index_config, exact_backend, vector_backend, key_builder, serializer, miss:
            as for `SemanticCache` (two near-tied candidates hold different answers
            when ``equivalent`` says so).

    Raises:
        TypeError: the seed's hit-rate tuning (``threshold``, ``target_hit_rate``,
            ``adjustment_interval``, ``threshold_min``/``max``, ``adjustment_step``,
            ``max_turn_count``): the message names ``max_error_rate`` and ``context``.

    Learning needs verification, which needs the real function: use
    `get_or_compute` (or its async twin). A bare `lookup` serves what is already
    known to be safe and never verifies.
    """

    def __init__(
        self,
        cluster: CacheCluster | CacheBackend | None = None,
        embed_fn: Callable[[str], Any] | None = None,
        *seed_args: Any,
        max_error_rate: float = 0.02,
        equivalent: Callable[[Any, Any], bool] | None = None,
        policy: AdaptivePolicy | None = None,
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
        **seed_tuning: Any,
    ) -> None:
        _refuse_seed_tuning(seed_tuning, seed_args)
        self.policy = policy or AdaptivePolicy(max_error_rate)
        super().__init__(
            cluster,
            embed_fn,
            *seed_args,
            threshold=max(self.policy.floor, 1e-6),
            model=model,
            dim=dim,
            ttl=ttl,
            top_k=top_k,
            lexical_guard=lexical_guard,
            tie_margin=tie_margin,
            refusal_margin=refusal_margin,
            layer=layer,
            index_config=index_config,
            exact_backend=exact_backend,
            vector_backend=vector_backend,
            key_builder=key_builder,
            serializer=serializer,
            miss=miss,
        )
        self._equivalent = equivalent or _exact

    def get(
        self, query: str, default: Any = ..., *, context: Any = None, turn_count: Any = None
    ) -> Any:
        """Return the cached answer for ``query`` (or a close rewording), else ``default``.

        Raises:
            TypeError: ``turn_count=`` (the seed's multi-turn guard; pass the
                conversation as ``context=`` instead).
        """
        if turn_count is not None:
            raise TypeError(_TURN_COUNT)
        return super().get(query, default, context=context)

    async def aget(
        self, query: str, default: Any = ..., *, context: Any = None, turn_count: Any = None
    ) -> Any:
        """Async `get`."""
        if turn_count is not None:
            raise TypeError(_TURN_COUNT)
        return await super().aget(query, default, context=context)

    @property
    def max_error_rate(self) -> float:
        """The bound on the share of wrong semantic hits."""
        return self.policy.max_error_rate

    @property
    def current_threshold(self) -> float:
        """The seed's tuned threshold: not kept here (raises AttributeError)."""
        raise AttributeError(
            "current_threshold is the seed's hit-rate-tuned threshold; here each candidate "
            "is served by its learned error estimate: see max_error_rate, Lookup.score and "
            "metrics.snapshot()"
        )

    def _with_stats(self) -> bool:
        return True

    def _choose(
        self, text: str, hits: list[Any], prior: Any
    ) -> tuple[list[Candidate], list[Candidate], str | None]:
        feats = self._features(text)
        curve = self.policy.curve(prior)
        refused: float | None = None
        for key, score, ctext, obs in hits:
            cand = Candidate(key, float(score), ctext, list(obs))
            if cand.score < self.policy.floor:
                self.metrics.add("threshold_rejections")
                return [], [], "threshold"
            if self._beneath_refusal(refused, cand.score):
                return [], [], "guard"
            why = self._guard_reason(feats, cand)
            if why is not None:
                self.metrics.add("guard_rejections")
                refused = cand.score if refused is None else refused
                continue
            self.policy.observe(cand.score)
            action, weight = self.policy.decide(cand.score, cand.observations, curve)
            if action == "serve":
                return [cand], [], None
            cand.weight = weight
            if action == "verify":
                self.metrics.add("learned_rejections")
            return [], [cand], "learned"
        return [], [], "guard" if hits else "empty"

    def _same_answer(self, a: Any, b: Any) -> bool:
        if super()._same_answer(a, b):
            return True
        try:
            return bool(self._equivalent(a, b))
        except Exception as exc:  # a failing judge is a cache fault, not the user's
            self._fault("equivalent()", exc)
            return False

    def _labels(self, value: Any, verify: list[Candidate]) -> list[tuple[str, float, bool, float]]:
        items = []
        for cand in verify:
            try:
                ok = bool(self._equivalent(cand.value, value))
            except Exception as exc:  # a failing judge is a cache fault, not the user's
                self._fault("equivalent()", exc)
                continue
            self.metrics.add("verifications")
            if not ok:
                self.metrics.add("verified_wrong")
            items.append((cand.key, cand.score, ok, cand.weight))
        return items

    def _after_compute(self, text: str, ctx: str, value: Any, verify: list[Candidate]) -> None:
        items = self._labels(value, verify)
        if items and self._index is not None:
            self._index.feedback(items, context=ctx)

    async def _aafter_compute(
        self, text: str, ctx: str, value: Any, verify: list[Candidate]
    ) -> None:
        items = self._labels(value, verify)
        if items and self._index is not None:
            await self._index.afeedback(items, context=ctx)

    def record(self, key: str, score: float, correct: bool, *, context: Any = None) -> None:
        """Record an outside verdict on a served hit (a user's thumbs-down, a judge run
        offline): ``key`` and ``score`` as the `Lookup` reported them."""
        from omnicache_cluster.semantic.guard import context_hash

        if self._index is None:
            raise ValueError("nothing was looked up through this cache yet")
        self._index.feedback(
            [(key, float(score), bool(correct), 1.0)], context=context_hash(context)
        )
