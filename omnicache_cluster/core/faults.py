"""`FaultLog`: count the faults a component fails open on, and log them sparingly.

A cache in front of an LLM call must not turn a dead Redis into a failed request, and
it must not flood the log either: every fault is counted, and a warning is written at
most once per interval (with the count so far), so an outage of an hour costs a
handful of log lines, not one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["FaultLog"]


class FaultLog:
    """A fault counter that logs at most once per ``interval_s``.

    Args:
        what: names the component in the log line (``"L2 of shard omnicache-shard-0"``).
        logger: where warnings go.
        interval_s: the least time between two warnings.
        clock: monotonic seconds, injectable for tests.

    Example:
        >>> faults = FaultLog("disk L2", logging.getLogger("doc"), interval_s=60)
        >>> faults.record("write", OSError("disk full"))
        >>> faults.count, faults.by_kind
        (1, {'write': 1})
    """

    __slots__ = ("_clock", "_interval", "_last", "_logger", "by_kind", "count", "what")

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: float | None = None
        self.count = 0
        self.by_kind: dict[str, int] = {}

    def record(self, kind: str, exc: BaseException | str) -> bool:
        """Count one fault of ``kind``; return whether it was logged."""
        self.count += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self._logger.warning(
            "%s: %s failed, failing open: %s [%d faults so far; logged at most every %gs]",
            self.what,
            kind,
            detail,
            self.count,
            self._interval,
        )
        return True
