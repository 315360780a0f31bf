"""The in-actor exporter: the actors' counters into ``ray.util.metrics``, periodically.

Ray's metrics agent on each node serves them on its Prometheus endpoint (and so in the
Ray dashboard's Grafana panels), each name prefixed with ``ray_``.

The hot path records nothing new: shards already count hits, misses, sets, evictions
and bytes for their `stats`. A task per actor reads those stats every
``ActorMetricsConfig.interval_s``, turns them into samples (`_samples`), and exports
the *differences* since its last export: ``Counter.inc(delta)`` for counters,
``Gauge.set`` for levels, and the histogram values a `MetricsRecorder` aggregated
meanwhile. Exporting deltas of the actor's own cumulative counts keeps every Ray
counter equal to the actor's count (to within one interval), whatever the interval.

Ray 2.60's agent rebuilds a histogram's ``_sum`` from its bucket counts (bucket
midpoints), so means derived from Ray's ``_sum`` are approximate; the counts per bucket
are exact.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.observability.metrics import (
    METRICS_BY_NAME,
    Labeler,
    MetricSpec,
    MetricsRecorder,
    Samples,
)

__all__ = ["RayMetricsExporter", "start_exporter"]

_log = logging.getLogger(__name__)

Convert = Callable[[Mapping[str, Any], str, Labeler], Samples]
Histograms = list[tuple[MetricSpec, tuple[str, ...], list[tuple[float, int]]]]


class RayMetricsExporter:
    """Keeps the ``ray.util.metrics`` objects of one process and what it last exported.

    Ray metric objects are created on first use, so a process exports only the
    metrics it has values for.
    """

    def __init__(self) -> None:
        self._metrics: dict[str, Any] = {}
        self._last: Samples = {}
        self._gauges: set[tuple[str, tuple[str, ...]]] = set()

    def _metric(self, spec: MetricSpec) -> Any:
        metric = self._metrics.get(spec.name)
        if metric is None:
            from ray.util import metrics as rm

            if spec.kind == "counter":
                metric = rm.Counter(spec.name, spec.help, tag_keys=spec.labels)
            elif spec.kind == "gauge":
                metric = rm.Gauge(spec.name, spec.help, tag_keys=spec.labels)
            else:
                metric = rm.Histogram(
                    spec.name, spec.help, boundaries=list(spec.buckets), tag_keys=spec.labels
                )
            self._metrics[spec.name] = metric
        return metric

    def export(self, samples: Samples, histograms: Histograms | None = None) -> int:
        """Export cumulative counters (as increments), levels and histogram values;
        return how many Ray metric calls were made.

        A gauge series missing from ``samples`` (a tenant that holds nothing any more)
        is set to 0 once, then forgotten.
        """
        calls = 0
        gauges = set()
        for key, value in samples.items():
            name, labels = key
            spec = METRICS_BY_NAME[name]
            tags = dict(zip(spec.labels, labels, strict=True))
            if spec.kind == "counter":
                delta = value - self._last.get(key, 0.0)
                # delta < 0: the source's count restarted; count on from its new value.
                self._last[key] = value
                if delta > 0:
                    self._metric(spec).inc(delta, tags)
                    calls += 1
            else:
                self._metric(spec).set(value, tags)
                gauges.add(key)
                calls += 1
        for name, labels in self._gauges - gauges:
            spec = METRICS_BY_NAME[name]
            self._metric(spec).set(0, dict(zip(spec.labels, labels, strict=True)))
            calls += 1
        self._gauges = gauges
        for spec, labels, pairs in histograms or ():
            hist, tags = self._metric(spec), dict(zip(spec.labels, labels, strict=True))
            for mean, count in pairs:
                for _ in range(count):
                    hist.observe(mean, tags)
                calls += count
        return calls


async def _export_loop(
    recorder: MetricsRecorder,
    collect: Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]],
    convert: Convert,
) -> None:
    exporter = RayMetricsExporter()
    faults = FaultLog(f"metrics export of {recorder.actor}", _log, interval_s=60.0)
    while True:
        await asyncio.sleep(recorder.config.interval_s)
        t0 = time.perf_counter()
        try:
            stats = collect()
            if inspect.isawaitable(stats):
                stats = await stats
            samples = convert(stats, recorder.namespace, recorder.labels)
            for key, value in recorder.counters().items():
                samples[key] = samples.get(key, 0.0) + value
            exporter.export(samples, recorder.drain())
        except Exception as exc:  # metrics must never take the actor down
            faults.record("export", exc)
        recorder.exported(time.perf_counter() - t0)


def start_exporter(
    recorder: MetricsRecorder,
    collect: Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]],
    convert: Convert,
) -> asyncio.Task[None] | None:
    """Start the periodic export of an actor on the running loop.

    Args:
        recorder: the actor's recorder (its config, labels and aggregates).
        collect: returns the actor's stats, or an awaitable of them.
        convert: turns those stats into samples (`shard_samples`, ...).

    Returns:
        The task, or ``None`` when metrics are off or Ray is not initialised (the
        actor class used as a plain object, in unit tests).
    """
    if not recorder.enabled:
        return None
    import ray

    if not ray.is_initialized():
        return None
    return asyncio.get_running_loop().create_task(_export_loop(recorder, collect, convert))
