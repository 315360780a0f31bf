"""What the cache saved: tokens and money per model, recorded where hits happen and
summed cluster-wide by the coordinator.

A layer that serves an LLM answer from the cache calls `record_saving` with the model
and the tokens the call would have cost. That is a dict update in the calling process;
a daemon thread sends the sums to the cluster's coordinator every second (and
`flush_savings` does it at once), so a hit pays no extra actor call. Savings recorded
in a process that dies within that second are lost.

Cost is tokens times a `PriceTable` (US dollars per million tokens, input and output),
applied when the saving is recorded; `ClusterMetrics` can re-price the tokens with
another table.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.observability.metrics import LabelLimiter

__all__ = [
    "DEFAULT_PRICES",
    "ModelPrice",
    "PriceTable",
    "SavingsBook",
    "flush_savings",
    "price_table",
    "record_saving",
    "set_price_table",
]

_log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
# One saving as sent to the coordinator: (model, calls, prompt tokens, completion
# tokens, cost in USD).
SavingRow = tuple[str, int, int, int, float]


@dataclass(frozen=True)
class ModelPrice:
    """US dollars per million tokens of one model."""

    input_per_mtok: float
    output_per_mtok: float

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")


class PriceTable:
    """Prices per model. A model name matches its exact entry, else the longest entry
    it starts with (``gpt-4o-2024-08-06`` is priced as ``gpt-4o``); else it is free.

    Args:
        prices: model name -> `ModelPrice` or ``(input, output)`` USD per 1M tokens.

    Example:
        >>> table = PriceTable({"my-model": (1.0, 2.0)})
        >>> table.cost("my-model-v2", prompt_tokens=1_000_000, completion_tokens=500_000)
        2.0
    """

    def __init__(self, prices: Mapping[str, ModelPrice | tuple[float, float]]) -> None:
        self._prices: dict[str, ModelPrice] = {}
        for model, price in prices.items():
            if not isinstance(model, str) or not model:
                raise ValueError(f"model names must be non-empty str, got {model!r}")
            self._prices[model] = price if isinstance(price, ModelPrice) else ModelPrice(*price)
        # Longest first, so that the most specific prefix wins.
        self._by_length = sorted(self._prices, key=len, reverse=True)

    def price(self, model: str) -> ModelPrice | None:
        """Return the price of ``model`` (exact or longest prefix), or ``None``."""
        found = self._prices.get(model)
        if found is not None:
            return found
        for name in self._by_length:
            if model.startswith(name):
                return self._prices[name]
        return None

    def cost(self, model: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> float:
        """Return the US dollars ``prompt_tokens`` in and ``completion_tokens`` out cost."""
        p = self.price(model)
        if p is None:
            return 0.0
        return (prompt_tokens * p.input_per_mtok + completion_tokens * p.output_per_mtok) / 1e6

    def with_prices(self, prices: Mapping[str, ModelPrice | tuple[float, float]]) -> PriceTable:
        """Return a table with ``prices`` added or replacing entries of this one."""
        return PriceTable({**self._prices, **prices})

    def as_dict(self) -> dict[str, tuple[float, float]]:
        """Return ``model -> (input, output)`` USD per 1M tokens."""
        return {m: (p.input_per_mtok, p.output_per_mtok) for m, p in self._prices.items()}

    def __repr__(self) -> str:
        return f"PriceTable({self.as_dict()!r})"


#: Public list prices (USD per 1M tokens, input / output) of some common models, as the
#: providers published them in 2025. Prices change: pass your own table, or
#: ``DEFAULT_PRICES.with_prices({...})``, to `set_price_table` or `record_saving`.
DEFAULT_PRICES = PriceTable(
    {
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "claude-3-5-haiku": (0.80, 4.00),
        "claude-3-5-sonnet": (3.00, 15.00),
        "claude-3-7-sonnet": (3.00, 15.00),
        "claude-sonnet-4": (3.00, 15.00),
        "claude-opus-4": (15.00, 75.00),
    }
)

_table = DEFAULT_PRICES


def set_price_table(table: PriceTable) -> None:
    """Set the price table `record_saving` uses in this process."""
    global _table
    if not isinstance(table, PriceTable):
        raise TypeError(f"table must be a PriceTable, got {type(table).__qualname__}")
    _table = table


def price_table() -> PriceTable:
    """Return the price table `record_saving` uses in this process."""
    return _table


class SavingsBook:
    """Savings per model, summed (the coordinator holds the cluster's).

    Args:
        max_models: distinct model names kept apart; later ones are summed as ``other``.
    """

    def __init__(self, max_models: int = 32) -> None:
        self._models = LabelLimiter(max_models)
        self._rows: dict[str, list[float]] = {}

    def add(self, rows: Iterable[SavingRow]) -> int:
        """Add savings rows; return how many."""
        n = 0
        for model, calls, prompt, completion, cost in rows:
            row = self._rows.setdefault(self._models(str(model)), [0, 0, 0, 0.0])
            row[0] += int(calls)
            row[1] += int(prompt)
            row[2] += int(completion)
            row[3] += float(cost)
            n += 1
        return n

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Return ``model -> {calls, prompt_tokens, completion_tokens, cost_usd}``."""
        return {
            model: {
                "calls": int(r[0]),
                "prompt_tokens": int(r[1]),
                "completion_tokens": int(r[2]),
                "cost_usd": float(r[3]),
            }
            for model, r in self._rows.items()
        }


class _Ledger:
    """This process's savings not yet sent, per cluster namespace, and the sender."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[str, dict[str, list[float]]] = {}
        self._thread: threading.Thread | None = None
        self._handles: dict[str, Any] = {}
        self._faults = FaultLog("sending cache savings", _log, interval_s=60.0)

    def add(self, namespace: str, model: str, prompt: int, completion: int, cost: float) -> None:
        with self._lock:
            row = self._pending.setdefault(namespace, {}).setdefault(model, [0, 0, 0, 0.0])
            row[0] += 1
            row[1] += prompt
            row[2] += completion
            row[3] += cost
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="omnicache-savings", daemon=True
                )
                self._thread.start()
                atexit.register(self.flush, None, 5.0)

    def _run(self) -> None:
        event = threading.Event()
        while not event.wait(FLUSH_INTERVAL_S):
            self.flush(None, 10.0)

    def flush(self, namespace: str | None, timeout_s: float) -> bool:
        """Send the pending savings (of one namespace, or all); return whether all
        were acknowledged (what was not is kept for the next try)."""
        with self._send_lock:  # one sender at a time: no row is sent twice
            with self._lock:
                names = [namespace] if namespace is not None else list(self._pending)
                batches = {n: self._pending.pop(n) for n in names if self._pending.get(n)}
            ok = True
            for ns, rows in batches.items():
                if not self._send(ns, rows, timeout_s):
                    ok = False
                    with self._lock:  # back, merged with what came meanwhile
                        into = self._pending.setdefault(ns, {})
                        for model, r in rows.items():
                            cur = into.setdefault(model, [0, 0, 0, 0.0])
                            for i in range(4):
                                cur[i] += r[i]
            return ok

    def _send(self, namespace: str, rows: dict[str, list[float]], timeout_s: float) -> bool:
        try:
            import ray

            from omnicache_cluster.actors.remote import COORDINATOR_NAME

            if not ray.is_initialized():
                return False
            handle = self._handles.get(namespace)
            if handle is None:
                handle = ray.get_actor(COORDINATOR_NAME, namespace=namespace)
                self._handles[namespace] = handle
            payload = [(m, int(r[0]), int(r[1]), int(r[2]), float(r[3])) for m, r in rows.items()]
            ray.get(handle.add_savings.remote(payload), timeout=timeout_s)
            return True
        except Exception as exc:  # kept and retried; a cache never fails its caller
            self._handles.pop(namespace, None)
            self._faults.record("send", exc)
            return False


_ledger = _Ledger()


def record_saving(
    cluster: Any,
    model: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    *,
    prices: PriceTable | None = None,
) -> float:
    """Record one LLM call answered from the cache; return what it saved, in USD.

    Non-blocking (safe in an event loop): the saving reaches the coordinator within
    about a second, or at `flush_savings`.

    Args:
        cluster: the `CacheCluster` that served the hit (or its Ray namespace).
        model: the model the call was for.
        prompt_tokens: input tokens the call would have used.
        completion_tokens: output tokens it would have produced.
        prices: the price table (this process's, `set_price_table`, by default).

    Raises:
        ValueError: an empty model name or a negative token count.
    """
    namespace = cluster if isinstance(cluster, str) else cluster.namespace
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty str, got {model!r}")
    for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    cost = (prices or _table).cost(model, prompt_tokens, completion_tokens)
    _ledger.add(namespace, model, prompt_tokens, completion_tokens, cost)
    return cost


def flush_savings(cluster: Any = None, timeout_s: float = 10.0) -> bool:
    """Send this process's pending savings now (of ``cluster``, or of every cluster);
    return whether the coordinator acknowledged them all."""
    namespace = None if cluster is None or isinstance(cluster, str) else cluster.namespace
    return _ledger.flush(cluster if isinstance(cluster, str) else namespace, timeout_s)
