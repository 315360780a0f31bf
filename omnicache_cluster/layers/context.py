"""`ContextCache`: conversation context keyed by session id + turn index.

Agents running as Ray tasks hand a conversation from worker to worker; this layer
keeps each turn's context (message history, scratchpad, agent state) in the cluster
so the next worker picks it up. Every turn is tagged ``session:<id>``, so
`invalidate_session` ends a session everywhere at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.layers._base import LAYER_DEFAULT, CacheLayer, config_of, with_overrides
from omnicache_cluster.policies import RequestConfig, session_tag

__all__ = ["ContextCache"]


def _context_key(session_id: str, turn_index: int | None) -> dict[str, Any]:
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"session_id must be a non-empty str, got {session_id!r}")
    if turn_index is not None and (isinstance(turn_index, bool) or not isinstance(turn_index, int)):
        raise TypeError(f"turn_index must be an int or None, got {turn_index!r}")
    return {"session": session_id, "turn": turn_index}


class ContextCache(CacheLayer):
    """Cache of per-session, per-turn context, shared cluster-wide.

    ``turn_index=None`` addresses the session's latest/whole context; an int
    addresses one turn. A miss returns ``default`` (the layer's `miss_value`: ``None`` over a
    `CacheManager`, `MISS` otherwise).

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> cc = ContextCache(InMemoryBackend())
        >>> cc.set("user-1", [{"role": "user", "content": "hi"}], turn_index=0)
        >>> cc.get("user-1", 0)
        [{'role': 'user', 'content': 'hi'}]
        >>> cc.invalidate_session("user-1"), cc.get("user-1", 0)
        (1, MISS)
    """

    layer = "context"

    def get(
        self,
        session_id: str,
        turn_index: int | None = None,
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> Any:
        """Return the context of a session (turn), or ``default`` on a miss."""
        return self._get_value(_context_key(session_id, turn_index), default, config)

    def get_turns(
        self,
        session_id: str,
        turn_indexes: Sequence[int],
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> list[Any]:
        """Return several turns of a session in one batch (one call per shard)."""
        keys = [self._key(_context_key(session_id, t)) for t in turn_indexes]
        return [
            self._or(default) if v is MISS else v
            for v in self._lookup_many(keys, config_of(config))
        ]

    def set(
        self,
        session_id: str,
        messages: Any,
        turn_index: int | None = None,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        config: RequestConfig | None = None,
    ) -> None:
        """Store the context of a session (turn)."""
        self._set_value(
            _context_key(session_id, turn_index),
            messages,
            with_overrides(config, ttl, tags),
            [session_tag(session_id)],
        )

    def invalidate_session(self, session_id: str) -> int:
        """Remove every turn of ``session_id`` (this tenant); return how many."""
        return self._invalidate(session_tag(session_id))

    async def aget(
        self,
        session_id: str,
        turn_index: int | None = None,
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> Any:
        """Async `get`."""
        return await self._aget_value(_context_key(session_id, turn_index), default, config)

    async def aget_turns(
        self,
        session_id: str,
        turn_indexes: Sequence[int],
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> list[Any]:
        """Async `get_turns`."""
        keys = [self._key(_context_key(session_id, t)) for t in turn_indexes]
        values = await self._alookup_many(keys, config_of(config))
        return [self._or(default) if v is MISS else v for v in values]

    async def aset(
        self,
        session_id: str,
        messages: Any,
        turn_index: int | None = None,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        config: RequestConfig | None = None,
    ) -> None:
        """Async `set`."""
        await self._aset_value(
            _context_key(session_id, turn_index),
            messages,
            with_overrides(config, ttl, tags),
            [session_tag(session_id)],
        )

    async def ainvalidate_session(self, session_id: str) -> int:
        """Async `invalidate_session`."""
        return await self._ainvalidate(session_tag(session_id))
