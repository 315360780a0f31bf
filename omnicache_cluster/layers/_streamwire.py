"""The pure half of `StreamingResponseCache`: who leads a stream, what it publishes,
and what a follower reads. No I/O here; the sync and async drivers do it.

Wire format, all under the layer's wire layer (``<layer>.wire``), all short-lived:

* ``("claim", final key)`` → ``{"id": stream id}``: written through the backend's
  single-flight ``get_or_compute``, so among concurrent first callers exactly one
  gets its own id back and leads; the others follow that id.
* ``("head", stream id)`` → ``{"parts": n, "state": ..., "error": ...}``: how many
  parts the leader has published and whether it is ``streaming``, ``done``,
  ``failed`` or ``abandoned``. Written after the parts it counts.
* ``("part", stream id, i)`` → a list of chunks, in order.

The final entry (the whole chunk list under the request's key) is written only when
the upstream stream ended normally; a failed or abandoned stream leaves nothing
behind but wire entries that expire.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from omnicache_cluster.core.sentinel import MISS

__all__ = ["Publisher", "Reader", "StreamInterrupted", "claim_key"]

STREAMING, DONE, FAILED, ABANDONED = "streaming", "done", "failed", "abandoned"
RESTART = "restart"


class StreamInterrupted(RuntimeError):
    """The stream being replayed ended half-way: its leader failed, was abandoned or
    stopped responding after this follower had already received chunks."""


def claim_key(final_key: str) -> tuple[str, str]:
    """The wire key that decides who leads the stream of ``final_key``."""
    return ("claim", final_key)


def head_key(stream_id: str) -> tuple[str, str]:
    """The wire key of a stream's progress record."""
    return ("head", stream_id)


def part_key(stream_id: str, index: int) -> tuple[str, str, int]:
    """The wire key of a stream's ``index``-th published part."""
    return ("part", stream_id, index)


class Publisher:
    """The leader's side: buffers chunks and says when and what to publish.

    Args:
        stream_id: this stream's id (the claim's value).
        flush_interval: least seconds between two publications while streaming.
        clock: monotonic seconds.
    """

    def __init__(
        self, stream_id: str, flush_interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream_id = stream_id
        self.chunks: list[Any] = []
        self._flushed = 0
        self._parts = 0
        self._interval = flush_interval
        self._clock = clock
        self._last = -math.inf  # the first chunk is published at once

    def head(self, state: str = STREAMING, error: str | None = None) -> tuple[Any, dict[str, Any]]:
        """Return the head record (key, value) for the parts published so far."""
        return head_key(self.stream_id), {"parts": self._parts, "state": state, "error": error}

    def add(self, chunk: Any) -> bool:
        """Buffer one (cacheable) chunk; return whether a publication is due."""
        self.chunks.append(chunk)
        return self._clock() - self._last >= self._interval

    def take_parts(self) -> list[tuple[Any, list[Any]]]:
        """Return the part to publish (the chunks not published yet), if any."""
        self._last = self._clock()
        if self._flushed == len(self.chunks):
            return []
        part = self.chunks[self._flushed :]
        self._flushed = len(self.chunks)
        self._parts += 1
        return [(part_key(self.stream_id, self._parts - 1), part)]


class Reader:
    """A follower's side: which parts to fetch, which chunks to yield, when to stop.

    Args:
        stream_id: the leader's stream id.
        stall_timeout: seconds without any progress after which the leader counts
            as gone.
        clock: monotonic seconds.
    """

    def __init__(
        self, stream_id: str, stall_timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream_id = stream_id
        self.yielded = 0
        self._next_part = 0
        self._stall = stall_timeout
        self._clock = clock
        self._changed = clock()
        self._seen: Any = MISS

    def wanted(self, head: Any) -> list[Any]:
        """Return the part keys to fetch for ``head`` (empty when none are new)."""
        if head != self._seen:
            self._seen = head
            self._changed = self._clock()
        if head is MISS:
            return []
        return [part_key(self.stream_id, i) for i in range(self._next_part, head["parts"])]

    def take(self, parts: list[Any]) -> list[Any]:
        """Return the chunks of the fetched ``parts``, in order, up to a missing one."""
        out: list[Any] = []
        for part in parts:
            if part is MISS:  # written to another shard, not visible yet: next poll
                break
            out.extend(part)
            self._next_part += 1
        self.yielded += len(out)
        if out:
            self._changed = self._clock()
        return out

    def outcome(self, head: Any) -> str | None:
        """Return ``done``/``failed``/``abandoned``/``stalled`` once the stream ended
        for this follower, ``None`` while it goes on."""
        if head is not MISS and head["state"] != STREAMING:
            if head["state"] == DONE and self._next_part < head["parts"]:
                return None  # the last parts are still to be read
            return str(head["state"])
        if self._clock() - self._changed > self._stall:
            return "stalled"
        return None

    def verdict(self, head: Any) -> str | None:
        """Return ``done``, ``restart`` (start the request over), or ``None`` (go on).

        Raises:
            StreamInterrupted: the stream ended early and this follower cannot start
                over (it yielded chunks already, or the leader failed).
        """
        outcome = self.outcome(head)
        if outcome is None or outcome == DONE:
            return outcome
        if self.can_restart(outcome):
            return RESTART
        raise self.interrupted(outcome, head)

    def interrupted(self, outcome: str, head: Any) -> StreamInterrupted:
        """The error a follower raises when it cannot start over."""
        error = head.get("error") if isinstance(head, dict) else None
        detail = f": {error}" if error else ""
        return StreamInterrupted(
            f"the stream this call was replaying {outcome} after {self.yielded} chunks{detail}"
        )

    def can_restart(self, outcome: str) -> bool:
        """Whether the follower may start the request over (it yielded nothing yet, and
        the leader stopped rather than failed)."""
        return self.yielded == 0 and outcome in (ABANDONED, "stalled")


class Backoff:
    """Poll intervals: short while chunks arrive, growing while nothing changes."""

    def __init__(self, first: float, longest: float) -> None:
        self._first = first
        self._longest = longest
        self.delay = first

    def next(self, progressed: bool) -> float:
        """Return the sleep before the next poll."""
        self.delay = self._first if progressed else min(self.delay * 1.5, self._longest)
        return self.delay


def describe_error(exc: BaseException) -> str:
    """A short, storable description of the leader's failure."""
    return f"{type(exc).__name__}: {exc}"[:500]
