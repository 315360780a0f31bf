"""Prints the data of the ``omnicache-cluster`` commands as rich tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["render"]


def _bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> Any:
    """A table whose first ``left`` columns are text (left-justified), the rest numbers."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        last = i == len(columns) - 1
        table.add_column(name, justify="left" if i < left else "right", no_wrap=not last)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    return table


def _status(data: dict[str, Any]) -> list[Any]:
    rows = [
        (
            s["shard"],
            s["owned_slots"],
            s["entries"],
            _bytes(s["bytes"]),
            _bytes(s["max_bytes"]),
            f"{s['uptime_s']:.0f} s",
        )
        for s in data["shards"]
    ]
    rows.append(("total", "", data["entries"], _bytes(data["bytes"]), "", ""))
    title = f"cluster {data['namespace']!r}: ring epoch {data['ring_epoch']}"
    return [_table(title, ("shard", "slots", "entries", "bytes", "max bytes", "uptime"), rows)]


def _stats(data: dict[str, Any]) -> list[Any]:
    t = data["totals"]
    evictions = ", ".join(f"{k} {v}" for k, v in (t["evictions"] or {}).items()) or "0"
    head = _table(
        f"cluster {data['namespace']!r}: ring epoch {data['ring_epoch']}",
        ("entries", "bytes", "hits", "misses", "sets", "hit rate", "evictions"),
        [
            (
                t["entries"],
                _bytes(t["bytes"]),
                t["hits"],
                t["misses"],
                t["sets"],
                f"{t['hit_rate']:.1%}",
                evictions,
            )
        ],
    )
    tenants = _table(
        "per tenant",
        ("tenant", "entries", "bytes", "hits", "misses", "sets", "hit rate", "computes"),
        [
            (
                r["tenant"],
                r["entries"],
                _bytes(r["bytes"]),
                r["hits"],
                r["misses"],
                r["sets"],
                f"{r['hit_rate']:.1%}",
                r["computes"],
            )
            for r in data["tenants"]
        ],
    )
    layers = _table(
        "per tenant and layer",
        ("tenant", "layer", "hits", "misses", "sets", "hit rate"),
        [
            (r["tenant"], r["layer"], r["hits"], r["misses"], r["sets"], f"{r['hit_rate']:.1%}")
            for r in data["layers"]
        ],
        left=2,
    )
    return [head, tenants, layers]


def _pairs(title: str, data: dict[str, Any]) -> list[Any]:
    return [_table(title, ("field", "value"), list(data.items()), left=2)]


def _warm(data: dict[str, Any]) -> list[Any]:
    summary = _table(
        f"warmed {data['file']} (tenant {data['tenant']!r})",
        ("rows", "loaded", "skipped", "failed"),
        [(data["total"], data["loaded"], data["skipped"], len(data["failed"]))],
    )
    out = [summary]
    if data["failed"]:
        out.append(
            _table(
                "failed rows",
                ("row", "reason"),
                [(f["row"], f["reason"]) for f in data["failed"]],
                left=2,
            )
        )
    return out


_RENDERERS: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
    "status": _status,
    "stats": _stats,
    "warm": _warm,
    "start": lambda d: _pairs("cache cluster started", d),
    "stop": lambda d: _pairs("cache cluster stopped", d),
    "inspect": lambda d: _pairs("entry", d),
    "flush": lambda d: _pairs("flush", d),
}


def render(command: str, data: dict[str, Any]) -> None:
    """Print the data of ``command`` to stdout as tables."""
    from rich.console import Console

    console = Console(soft_wrap=False, width=max(Console().width, 120))
    for renderable in _RENDERERS[command](data):
        console.print(renderable)
