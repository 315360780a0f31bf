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
  probability (more often when its estimate is borderline), so what is learned about
  high similarities stays honest. Such a label counts ``1 / probability`` in the
  shared prior (importance weighting), because unserved candidates are labelled
  every time and served ones only sometimes.
* **Shared prior.** Every label also goes to a histogram per (tenant, namespace,
  model). From it, ``g(s)`` is an upper 95% bound of the error rate of serving every
  candidate at similarity ``s`` or above; until enough labels exist it is 1 (nothing
  is served), so a new deployment starts safe.
* **Per entry.** An entry's own labels move its estimate away from the prior: with
  ``W`` wrong labels at similarity ``>= s - slack`` and ``C`` correct ones at ``<= s``,
  ``p(s) = (m * g(s) + W) / (m + W + C)`` for a prior strength ``m``. An entry shown
  wrong near ``s`` stops being served there; one verified correct many times is
  served below the global level. A new entry has only the prior, so a low-traffic
  entry can still be served where the prior alone is safe.

A candidate is served when ``p(s) <= safety * max_error_rate`` (``safety`` = 1).
The estimates live in the semantic index actor, so every process of the cluster
learns from every other's verifications.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from omnicache_cluster.semantic.cache import Candidate, SemanticCache

if TYPE_CHECKING:
    from omnicache_cluster.actors.semantic import SemanticIndexConfig
    from omnicache_cluster.client import CacheCluster

__all__ = ["AdaptivePolicy", "AdaptiveSemanticCache"]

_Z95 = 1.645  # one-sided 95%


def _exact(a: Any, b: Any) -> bool:
    return bool(a == b)


class AdaptivePolicy:
    """The decision rule of `AdaptiveSemanticCache`, without I/O (unit-testable).

    Args:
        max_error_rate: the bound on the share of wrong semantic hits.
        prior_strength: ``m``, how many labels the prior is worth against an entry's own.
        explore_rate: probability of verifying a confident hit instead of serving it.
        borderline_explore_rate: the same for a hit whose estimate is above half the
            bound.
        min_labels: labels at or above a similarity before the prior there counts.
        floor: candidates below this similarity are neither served nor verified.
        slack: a wrong label this much below ``s`` still counts against ``s``.
        safety: serve only where the estimate is at most ``safety * max_error_rate``
            (below 1 trades hits for margin; bench/semantic_quality.py measures it).
        rng: the random source of exploration (seeded in tests).
    """

    def __init__(
        self,
        max_error_rate: float,
        *,
        prior_strength: float = 2.0,
        explore_rate: float = 0.05,
        borderline_explore_rate: float = 0.25,
        min_labels: float = 20.0,
        floor: float = 0.5,
        slack: float = 0.02,
        safety: float = 1.0,
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
        self.max_error_rate = float(max_error_rate)
        self.prior_strength = float(prior_strength)
        self.explore_rate = float(explore_rate)
        self.borderline_explore_rate = float(borderline_explore_rate)
        self.min_labels = float(min_labels)
        self.floor = float(floor)
        self.slack = float(slack)
        if not 0.0 < safety <= 1.0:
            raise ValueError(f"safety must be in (0, 1], got {safety!r}")
        self.safety = float(safety)
        self._rng = rng or random.Random()

    def curve(self, prior: Sequence[Sequence[float]] | None) -> list[float]:
        """Return ``g`` per similarity bin: the upper 95% bound of the error rate of
        serving every candidate in that bin or above (1.0 where labels are too few).

        ``prior`` is ``(correct, wrong[, squared weights])`` per bin. Labels are
        weighted (an explored hit counts ``1 / rate``); the bound uses their effective
        sample size ``(sum w)^2 / sum w^2``, not their weighted count.
        """
        correct, wrong = (prior[0], prior[1]) if prior else ([], [])
        squares = prior[2] if prior and len(prior) > 2 and len(prior[2]) else None
        bins = len(correct)
        out = [1.0] * bins
        c_acc = w_acc = s_acc = 0.0
        for b in range(bins - 1, -1, -1):
            c_acc += correct[b]
            w_acc += wrong[b]
            s_acc += squares[b] if squares is not None else correct[b] + wrong[b]
            n = c_acc + w_acc
            n_eff = n * n / s_acc if s_acc > 0 else 0.0
            if n_eff >= self.min_labels:
                p = (w_acc + 1.0) / (n + 2.0)
                out[b] = min(1.0, p + _Z95 * math.sqrt(p * (1.0 - p) / (n_eff + 2.0)))
        # Too few labels at the top: the error of serving from a lower similarity up is
        # an upper bound of serving from a higher one (more similar is not less right).
        for b in range(1, bins):
            out[b] = min(out[b], out[b - 1])
        return out

    def p_wrong(self, score: float, observations: Sequence[tuple[float, bool]], g: float) -> float:
        """Return the estimated probability that serving this entry at ``score`` is wrong."""
        wrong = sum(1 for s, ok in observations if not ok and s >= score - self.slack)
        right = sum(1 for s, ok in observations if ok and s <= score)
        m = self.prior_strength
        return (m * g + wrong) / (m + wrong + right)

    def decide(
        self, score: float, observations: Sequence[tuple[float, bool]], curve: Sequence[float]
    ) -> tuple[str, float]:
        """Return ``("serve" | "verify" | "skip", weight)`` for one candidate.

        ``verify`` means: run the function and label the candidate (weight is the
        inverse of the probability of verifying it); ``skip``: below the floor.
        """
        if score < self.floor:
            return "skip", 1.0
        g = curve[min(len(curve) - 1, int(score * len(curve)))] if curve else 1.0
        p = self.p_wrong(score, observations, g)
        limit = self.safety * self.max_error_rate
        if p > limit:
            return "verify", 1.0
        rate = self.explore_rate if p <= limit / 2 else self.borderline_explore_rate
        if rate > 0 and self._rng.random() < rate:
            return "verify", 1.0 / rate
        return "serve", 1.0


class AdaptiveSemanticCache(SemanticCache):
    """A `SemanticCache` that learns per-entry thresholds under a false-hit bound.

    Args:
        cluster: the cluster client.
        embed_fn: ``text -> vector``, run in the caller.
        max_error_rate: the bound on the share of wrong semantic hits (e.g. 0.02).
        equivalent: ``(cached answer, fresh answer) -> bool``; exact equality by
            default; pass an LLM judge for free-text answers.
        policy: a ready `AdaptivePolicy` (overrides ``max_error_rate``'s defaults).
        model, dim, ttl, top_k, lexical_guard, layer, index_config: as for
            `SemanticCache`.

    Learning needs verification, which needs the real function: use
    `get_or_compute` (or its async twin). A bare `lookup` serves what is already
    known to be safe and never verifies.
    """

    def __init__(
        self,
        cluster: CacheCluster,
        embed_fn: Callable[[str], Any],
        *,
        max_error_rate: float = 0.02,
        equivalent: Callable[[Any, Any], bool] | None = None,
        policy: AdaptivePolicy | None = None,
        model: str = "default",
        dim: int | None = None,
        ttl: float | None = None,
        top_k: int = 4,
        lexical_guard: bool | str = True,
        layer: str = "semantic",
        index_config: SemanticIndexConfig | None = None,
    ) -> None:
        self.policy = policy or AdaptivePolicy(max_error_rate)
        super().__init__(
            cluster,
            embed_fn,
            threshold=max(self.policy.floor, 1e-6),
            model=model,
            dim=dim,
            ttl=ttl,
            top_k=top_k,
            lexical_guard=lexical_guard,
            layer=layer,
            index_config=index_config,
        )
        self._equivalent = equivalent or _exact

    @property
    def max_error_rate(self) -> float:
        """The bound on the share of wrong semantic hits."""
        return self.policy.max_error_rate

    def _with_stats(self) -> bool:
        return True

    def _choose(
        self, text: str, hits: list[Any], prior: Any
    ) -> tuple[list[Candidate], list[Candidate], str | None]:
        feats = self._features(text)
        curve = self.policy.curve(prior)
        for key, score, ctext, obs in hits:
            cand = Candidate(key, float(score), ctext, list(obs))
            if cand.score < self.policy.floor:
                self.metrics.add("threshold_rejections")
                return [], [], "threshold"
            why = self._guard_reason(feats, cand)
            if why is not None:
                self.metrics.add("guard_rejections")
                continue
            action, weight = self.policy.decide(cand.score, cand.observations, curve)
            if action == "serve":
                return [cand], [], None
            cand.weight = weight
            if weight == 1.0:
                self.metrics.add("learned_rejections")
            return [], [cand], "learned"
        return [], [], "guard" if hits else "empty"

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
