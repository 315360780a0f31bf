"""`CacheWarmer`: bulk pre-population of a `ResponseCache` from a list, CSV or JSONL.

Rows go through in batches: the keys of a batch are looked up in one batch call
(rows already cached are skipped), the rows without a response are generated, and
the batch is stored with one call per shard. A bad row (unparsable JSON, no query, a
failing generate call, a value that does not encode) is reported with its row number
and reason; the rest of the file still loads. A progress bar (rich) shows the rows
done.

A row is a query string, or a mapping with:

* ``query`` or ``prompt`` (a user message) or ``messages`` (a message list; in CSV a
  JSON string);
* ``response`` (optional when a ``generate_fn`` is given; JSON ``null`` is a valid
  cached value in JSONL, an empty CSV cell counts as missing);
* optionally ``model``, ``params`` (a JSON object), ``system``, ``tools``,
  ``tool_choice``, ``response_format`` — the fields of `ResponseCache`'s key.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.errors import OmnicacheError, ValueTooLarge
from omnicache_cluster.layers._base import _faults, _maybe_await
from omnicache_cluster.layers.response import REQUEST_FIELDS, ResponseCache
from omnicache_cluster.policies import RequestConfig, model_tag

__all__ = ["CacheWarmer", "WarmReport", "read_rows"]

_JSON_CELLS = ("messages", "params", "tools", "tool_choice", "response_format")


@dataclass
class WarmReport:
    """What a warm run did.

    After `CacheWarmer.warm_from_queries` (and its async twin) the report also reads
    like the seed's result dict: ``report["What is RAG?"]`` is ``"hit"`` (was cached),
    ``"warmed"`` (generated and stored) or ``"failed"`` (see ``failed``), and
    ``items()``, ``keys()``, ``len()``, ``in`` and ``== {...}`` work on that mapping.

    Attributes:
        total: rows seen.
        loaded: rows stored.
        skipped: rows already cached (not generated, not stored).
        failed: ``(row number, reason)`` for each row that could not be loaded.
        by_query: the seed's ``query -> "hit" | "warmed" | "failed"`` mapping.
    """

    total: int = 0
    loaded: int = 0
    skipped: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    by_query: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, query: str) -> str:
        return self.by_query[query]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_query)

    def __len__(self) -> int:
        return len(self.by_query)

    def __contains__(self, query: object) -> bool:
        return query in self.by_query

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.by_query == dict(other)
        if isinstance(other, WarmReport):
            return self.as_dict() == other.as_dict()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def keys(self) -> Any:
        """The queries (seed's dict view)."""
        return self.by_query.keys()

    def values(self) -> Any:
        """The outcomes (seed's dict view)."""
        return self.by_query.values()

    def items(self) -> Any:
        """``(query, outcome)`` pairs (seed's dict view)."""
        return self.by_query.items()

    def get(self, query: str, default: Any = None) -> Any:
        """The outcome of ``query``, or ``default``."""
        return self.by_query.get(query, default)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain data."""
        return {
            "total": self.total,
            "loaded": self.loaded,
            "skipped": self.skipped,
            "failed": [{"row": n, "reason": r} for n, r in self.failed],
        }


@dataclass
class _Row:
    number: int
    messages: Any
    model: str
    params: dict[str, Any]
    extras: dict[str, Any]
    response: Any = MISS
    key: Any = None  # the CacheKey, once computed


def _cell(name: str, value: Any) -> Any:
    if isinstance(value, str) and name in _JSON_CELLS and value.strip()[:1] in ("[", "{", '"'):
        return json.loads(value)
    return value


def _parse(number: int, raw: Any, default_model: str, query_column: str) -> _Row:
    """Turn one raw row into a `_Row`; raises ``ValueError`` with the reason."""
    if isinstance(raw, str):
        raw = {"query": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"a row is a query string or an object, got {type(raw).__name__}")
    row = {k: _cell(k, v) for k, v in raw.items() if v is not None or k == "response"}
    messages = row.get("messages")
    prompt = next((row[c] for c in (query_column, "query", "prompt") if row.get(c)), None)
    if messages is None:
        if not isinstance(prompt, str):
            raise ValueError(f"no {query_column!r}, 'prompt' or 'messages'")
        messages = [{"role": "user", "content": prompt}]
    params = row.get("params") or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be an object, got {params!r}")
    extras = {f: row[f] for f in REQUEST_FIELDS if row.get(f) not in (None, "")}
    out = _Row(number, messages, str(row.get("model") or default_model), dict(params), extras)
    if "response" in row and row["response"] != "":
        out.response = row["response"]
    return out


def read_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(row number, raw row)`` from a ``.csv``, ``.jsonl``/``.ndjson`` or
    ``.json`` (a list) file; an undecodable JSON line is yielded as a `ValueError`.

    Raises:
        ValueError: an unknown file extension.
        OSError: the file cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            yield from enumerate(csv.DictReader(f), start=2)  # row 1 is the header
    elif suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, _json_or_error(line)
    elif suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a .json warm file holds a list of rows")
        yield from enumerate(rows, start=1)
    else:
        raise ValueError(f"{path}: expected .csv, .jsonl, .ndjson or .json, got {suffix!r}")


def _json_or_error(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}")


class _Progress:
    """A rich progress bar (or nothing) plus an optional callback."""

    def __init__(
        self,
        enabled: bool,
        console: Any,
        total: int,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self._total = total
        self._done = 0
        self._callback = on_progress
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console if console is not None else Console(stderr=True),
            )
            self._task = self._bar.add_task("warming", total=total)
            self._bar.start()

    def advance(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self._done)
        if self._callback is not None:
            self._callback(self._done, self._total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class CacheWarmer:
    """Pre-populates a `ResponseCache` in batches (see the module docstring).

    Args:
        cache: the response cache to fill (its backend's tenant gets the entries).
        batch_size: rows per batch (one lookup and one store call per shard each).
        progress: show a rich progress bar.
        console: the rich ``Console`` to draw on (stderr by default).
        on_progress: called with ``(rows done, rows total)`` after each batch.

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> w = CacheWarmer(ResponseCache(InMemoryBackend()), progress=False)
        >>> r = w.warm([{"query": "hi", "response": "hello"}, {"response": "x"}])
        >>> r.loaded, r.failed
        (1, [(2, "no 'query', 'prompt' or 'messages'")])
        >>> w.warm(["hi"]).skipped
        1
    """

    def __init__(
        self,
        cache: ResponseCache,
        *,
        batch_size: int = 256,
        progress: bool = True,
        console: Any = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if not isinstance(cache, ResponseCache):
            raise TypeError(f"cache must be a ResponseCache, got {type(cache).__qualname__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self._cache = cache
        self._batch_size = batch_size
        self._progress = progress
        self._console = console
        self._on_progress = on_progress

    # -- the pure steps ------------------------------------------------------------------

    def _prepare(
        self, raw: Sequence[tuple[int, Any]], model_id: str, query_column: str, report: WarmReport
    ) -> list[_Row]:
        rows = []
        for number, item in raw:
            try:
                if isinstance(item, Exception):
                    raise item
                row = _parse(number, item, model_id, query_column)
                row.key = self._cache.key_for(row.messages, row.model, row.params, **row.extras)
            except (ValueError, TypeError) as exc:
                report.failed.append((number, str(exc)))
                continue
            rows.append(row)
        return rows

    @staticmethod
    def _groups(rows: Iterable[_Row]) -> dict[str, list[_Row]]:
        groups: dict[str, list[_Row]] = {}
        for row in rows:
            if row.response is not MISS:
                groups.setdefault(row.model, []).append(row)
        return groups

    def _batches(self, rows: Sequence[tuple[int, Any]]) -> Iterator[Sequence[tuple[int, Any]]]:
        for start in range(0, len(rows), self._batch_size):
            yield rows[start : start + self._batch_size]

    def _run(
        self, raw_rows: Iterable[tuple[int, Any]] | Iterable[Any]
    ) -> tuple[list[tuple[int, Any]], WarmReport, _Progress]:
        numbered = [r if _is_numbered(r) else (i, r) for i, r in enumerate(raw_rows, start=1)]
        report = WarmReport(total=len(numbered))
        progress = _Progress(self._progress, self._console, len(numbered), self._on_progress)
        return numbered, report, progress

    # -- sync ----------------------------------------------------------------------------

    def warm(
        self,
        rows: Iterable[Any],
        *,
        generate_fn: Callable[[Any], Any] | None = None,
        model_id: str = "default",
        skip_existing: bool = True,
        config: RequestConfig | None = None,
        query_column: str = "query",
    ) -> WarmReport:
        """Load ``rows`` (query strings, row mappings, or ``(number, row)`` pairs).

        Args:
            rows: what to load.
            generate_fn: computes the response of a row that has none (called with its
                messages); without it such rows are reported as failed.
            model_id: the model of rows that name none.
            skip_existing: leave rows that are already cached alone.
            config: the `RequestConfig` of the writes (ttl, tags).
            query_column: the column/field holding the query.
        """
        numbered, report, progress = self._run(rows)
        try:
            for raw in self._batches(numbered):
                batch = self._prepare(raw, model_id, query_column, report)
                if skip_existing and batch:
                    found = self._cache.get_keys(
                        [r.key for r in batch], default=MISS, config=config
                    )
                    batch = self._skip(batch, found, report)
                for row in batch:
                    if row.response is MISS:
                        self._generate(row, generate_fn, report)
                for model, group in self._groups(batch).items():
                    self._store(group, model, config, report)
                progress.advance(len(raw))
        finally:
            progress.close()
        return report

    def _generate(self, row: _Row, fn: Callable[[Any], Any] | None, report: WarmReport) -> None:
        if fn is None:
            report.failed.append((row.number, "no response and no generate_fn"))
            return
        try:
            row.response = fn(row.messages)
        except Exception as exc:
            report.failed.append((row.number, f"generate_fn: {type(exc).__name__}: {exc}"))

    def _store(
        self, group: list[_Row], model: str, config: RequestConfig | None, report: WarmReport
    ) -> None:
        steps = _store_steps(group, report)
        tags = [model_tag(model)]
        items = next(steps)
        while True:
            error: Exception | None = None
            try:
                self._cache.set_keys(items, tags=tags, config=config)
            except (TypeError, ValueTooLarge, OmnicacheError, *_faults()) as exc:
                error = exc
            try:
                items = steps.send(error)
            except StopIteration:
                return

    @staticmethod
    def _skip(batch: list[_Row], found: list[Any], report: WarmReport) -> list[_Row]:
        keep = []
        for row, value in zip(batch, found, strict=True):
            if value is MISS:
                keep.append(row)
            else:
                report.skipped += 1
        return keep

    def warm_from_queries(
        self,
        queries: Iterable[str],
        generate_fn: Callable[[Any], Any] | None = None,
        model_id: str = "default",
        ttl: float | None = None,
        skip_existing: bool = True,
    ) -> WarmReport:
        """The seed's call: warm one user-message query each (``generate_fn(messages)``);
        the report also maps each query to ``"hit"``, ``"warmed"`` or ``"failed"``."""
        queries = list(queries)
        keys = self._query_keys(queries, model_id)
        cached = self._cache.get_keys(keys, default=MISS) if skip_existing and keys else []
        report = self.warm(
            queries,
            generate_fn=generate_fn,
            model_id=model_id,
            skip_existing=skip_existing,
            config=RequestConfig(ttl=ttl),
        )
        return _with_outcomes(report, queries, cached)

    def _query_keys(self, queries: list[str], model_id: str) -> list[Any]:
        try:
            return [
                self._cache.key_for([{"role": "user", "content": q}], model_id) for q in queries
            ]
        except (TypeError, ValueError):  # a bad row: warm() reports it
            return []

    async def awarm_from_queries(
        self,
        queries: Iterable[str],
        generate_fn: Callable[[Any], Any] | None = None,
        model_id: str = "default",
        ttl: float | None = None,
        skip_existing: bool = True,
    ) -> WarmReport:
        """Async `warm_from_queries`; ``generate_fn`` may be async."""
        queries = list(queries)
        keys = self._query_keys(queries, model_id)
        cached = await self._cache.aget_keys(keys, default=MISS) if skip_existing and keys else []
        report = await self.awarm(
            queries,
            generate_fn=generate_fn,
            model_id=model_id,
            skip_existing=skip_existing,
            config=RequestConfig(ttl=ttl),
        )
        return _with_outcomes(report, queries, cached)

    def warm_from_file(
        self,
        path: str | Path,
        generate_fn: Callable[[Any], Any] | None = None,
        model_id: str = "default",
        ttl: float | None = None,
        query_column: str = "query",
        skip_existing: bool = True,
    ) -> WarmReport:
        """Warm from a ``.csv``, ``.jsonl``/``.ndjson`` or ``.json`` file (see `read_rows`).

        Raises:
            ValueError: an unknown file type.
            OSError: the file cannot be read.
        """
        return self.warm(
            list(read_rows(path)),
            generate_fn=generate_fn,
            model_id=model_id,
            skip_existing=skip_existing,
            config=RequestConfig(ttl=ttl),
            query_column=query_column,
        )

    # -- async ---------------------------------------------------------------------------

    async def awarm(
        self,
        rows: Iterable[Any],
        *,
        generate_fn: Callable[[Any], Any] | None = None,
        model_id: str = "default",
        skip_existing: bool = True,
        config: RequestConfig | None = None,
        query_column: str = "query",
    ) -> WarmReport:
        """Async `warm`; ``generate_fn`` may be async (a batch's rows run concurrently)."""
        numbered, report, progress = self._run(rows)
        try:
            for raw in self._batches(numbered):
                batch = self._prepare(raw, model_id, query_column, report)
                if skip_existing and batch:
                    found = await self._cache.aget_keys(
                        [r.key for r in batch], default=MISS, config=config
                    )
                    batch = self._skip(batch, found, report)
                missing = [r for r in batch if r.response is MISS]
                await asyncio.gather(*(self._agenerate(r, generate_fn, report) for r in missing))
                for model, group in self._groups(batch).items():
                    await self._astore(group, model, config, report)
                progress.advance(len(raw))
        finally:
            progress.close()
        return report

    async def _agenerate(
        self, row: _Row, fn: Callable[[Any], Any] | None, report: WarmReport
    ) -> None:
        if fn is None:
            report.failed.append((row.number, "no response and no generate_fn"))
            return
        try:
            row.response = await _maybe_await(fn(row.messages))
        except Exception as exc:
            report.failed.append((row.number, f"generate_fn: {type(exc).__name__}: {exc}"))

    async def _astore(
        self, group: list[_Row], model: str, config: RequestConfig | None, report: WarmReport
    ) -> None:
        steps = _store_steps(group, report)
        tags = [model_tag(model)]
        items = next(steps)
        while True:
            error: Exception | None = None
            try:
                await self._cache.aset_keys(items, tags=tags, config=config)
            except (TypeError, ValueTooLarge, OmnicacheError, *_faults()) as exc:
                error = exc
            try:
                items = steps.send(error)
            except StopIteration:
                return

    async def awarm_from_file(
        self,
        path: str | Path,
        generate_fn: Callable[[Any], Any] | None = None,
        model_id: str = "default",
        ttl: float | None = None,
        query_column: str = "query",
        skip_existing: bool = True,
    ) -> WarmReport:
        """Async `warm_from_file` (the file is read in a worker thread)."""
        rows = await asyncio.to_thread(lambda: list(read_rows(path)))
        return await self.awarm(
            rows,
            generate_fn=generate_fn,
            model_id=model_id,
            skip_existing=skip_existing,
            config=RequestConfig(ttl=ttl),
            query_column=query_column,
        )


def _with_outcomes(report: WarmReport, queries: list[Any], cached: list[Any]) -> WarmReport:
    failed = {number for number, _ in report.failed}
    for number, query in enumerate(queries, start=1):
        if not isinstance(query, str):
            continue
        hit = number <= len(cached) and cached[number - 1] is not MISS
        outcome = "hit" if hit else "failed" if number in failed else "warmed"
        report.by_query[query] = outcome
    return report


def _store_steps(
    group: list[_Row], report: WarmReport
) -> Generator[list[tuple[Any, Any]], Exception | None, None]:
    """The store of one group, without I/O: yields the items to store, receives the
    error of that store (or ``None``), and records the outcome in ``report``.

    The whole group goes in one call; if a value does not encode (or is too large),
    each row is stored alone so that only the bad ones are reported.
    """
    error = yield [(r.key, r.response) for r in group]
    if error is None:
        report.loaded += len(group)
        return
    if not isinstance(error, TypeError | ValueTooLarge):  # the cluster, not a row
        reason = f"store: {type(error).__name__}: {error}"
        report.failed.extend((r.number, reason) for r in group)
        return
    for row in group:
        error = yield [(row.key, row.response)]
        if error is None:
            report.loaded += 1
        else:
            report.failed.append((row.number, f"store: {type(error).__name__}: {error}"))


def _is_numbered(item: Any) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], int)
        and not isinstance(item[0], bool)
    )
