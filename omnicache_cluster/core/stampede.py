"""`StampedeShield`: the seed's per-key lock, on top of this process's single-flight.

The seed's shield yielded ``True`` ("you compute") to every caller, and dropped a
key's lock while others still waited on it, so concurrent callers computed anyway.
Here one caller per key leads (``True``); callers arriving while it runs wait for it
to leave the block and get ``False`` (read the cache: the leader stored the value).
It shares the flights of the local backends' ``get_or_compute``. The layers need no
shield: ``get_or_generate`` is single-flight already, across the whole cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StampedeShield"]


class StampedeShield:
    """One caller per key computes; the others wait for it, then read the cache.

    Args:
        timeout: seconds a waiter waits for the leader before `TimeoutError`.

    Example:
        >>> shield = StampedeShield()
        >>> with shield.lock("k") as first:
        ...     first
        True
    """

    def __init__(self, timeout: float = 30.0) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._timeout = float(timeout)

    @contextmanager
    def lock(self, key: str) -> Iterator[bool]:
        """Enter the key's flight: yield ``True`` to lead (compute and store), or wait
        for the leader and yield ``False`` (read what it stored).

        Raises:
            TimeoutError: the leader did not finish within ``timeout`` seconds.
        """
        # The flights live with the local backends' (imported here: core depends on
        # nothing above it at import time).
        from omnicache_cluster.backends._local_flight import _end, _join

        fkey = (id(self), str(key))
        call, leader = _join(fkey)
        if not leader:
            if not call.done.wait(self._timeout):
                raise TimeoutError(f"StampedeShield: waited {self._timeout}s for key {key!r}")
            yield False
            return
        try:
            yield True
        finally:
            _end(fkey, call)
