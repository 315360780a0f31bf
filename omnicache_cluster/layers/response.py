"""`ResponseCache`: LLM responses keyed by model + messages + parameters.

Everything that changes what a model answers is part of the key: the model, the
messages, the sampling parameters, and the system prompt, tools, tool choice and
response format (whether passed as arguments or inside ``params``). The key is the
cluster's canonical 128-bit digest, so it is the same in every process and does not
depend on dict order; the seed's ``json.dumps(default=str)`` truncated to 64 bits
was neither.

`get_or_generate` goes through the cluster's single-flight: on a miss, one caller in
the whole cluster calls the model and every concurrent caller gets its answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from omnicache_cluster._flight import record_fault
from omnicache_cluster.core.keys import CacheKey
from omnicache_cluster.layers._base import LAYER_DEFAULT, CacheLayer, merged, with_overrides
from omnicache_cluster.policies import RequestConfig, model_tag

__all__ = ["REQUEST_FIELDS", "ResponseCache", "request_key"]

T = TypeVar("T")

#: Request fields besides messages and params that are part of a response's key.
REQUEST_FIELDS = ("system", "tools", "tool_choice", "response_format")


def request_key(
    messages: Any, model_id: str, params: Mapping[str, Any] | None, extras: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the canonical key object of one LLM request.

    Args:
        messages: the conversation (any canonical-encodable structure).
        model_id: the model name.
        params: sampling and other request parameters.
        extras: ``system``, ``tools``, ``tool_choice`` and ``response_format``.

    Raises:
        TypeError: an unknown extra, or a ``model_id`` that is not a non-empty str.
        ValueError: a field given both in ``params`` and as an extra, differently.
    """
    unknown = set(extras) - set(REQUEST_FIELDS)
    if unknown:
        raise TypeError(f"unexpected request fields {sorted(unknown)}; known: {REQUEST_FIELDS}")
    if not isinstance(model_id, str) or not model_id:
        raise TypeError(f"model_id must be a non-empty str, got {model_id!r}")
    return {"model": model_id, "messages": messages, "params": merged(params, **extras)}


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def usage_tokens(response: Any) -> tuple[int, int] | None:
    """Return ``(prompt, completion)`` tokens of a provider response, if it says.

    Reads OpenAI's ``usage.prompt_tokens`` / ``completion_tokens`` and Anthropic's
    ``usage.input_tokens`` / ``output_tokens``, on dicts or SDK objects.
    """
    usage = _field(response, "usage")
    if usage is None:
        return None
    for prompt_name, completion_name in (
        ("prompt_tokens", "completion_tokens"),
        ("input_tokens", "output_tokens"),
    ):
        prompt, completion = _field(usage, prompt_name), _field(usage, completion_name)
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt, completion
    return None


class ResponseCache(CacheLayer):
    """Cache of LLM responses, shared by every process of the cluster.

    Every method takes the seed's arguments (``messages, model_id, params``), the
    request fields ``system=``, ``tools=``, ``tool_choice=``, ``response_format=``,
    and ``config=`` (a `RequestConfig`). A miss returns ``default`` (the layer's
    `miss_value`: ``None`` over a `CacheManager`, `MISS` otherwise); over a backend a
    cached ``None`` or ``""`` is a hit. Entries are tagged ``model:<model_id>``.

    Args:
        backend: a `CacheCluster`, an `InMemoryBackend` or a `CacheManager`.
        ttl_policy: ttls per layer (`TTLPolicy.from_env()` when omitted).
        layer: the key's layer part (``response``).

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> rc = ResponseCache(InMemoryBackend())
        >>> msgs = [{"role": "user", "content": "2+2?"}]
        >>> rc.get_or_generate(msgs, lambda m: "4", model_id="gpt-4o")
        '4'
        >>> rc.get(msgs, model_id="gpt-4o"), rc.get(msgs, model_id="gpt-4o", system="Be terse")
        ('4', MISS)
    """

    layer = "response"

    def key_for(
        self,
        messages: Any,
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        **request: Any,
    ) -> CacheKey:
        """Return the `CacheKey` of a request (same in every process)."""
        return self._key(request_key(messages, model_id, params, request))

    def get(
        self,
        messages: Any,
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> Any:
        """Return the cached response, or ``default`` on a miss."""
        value = self._get_value(request_key(messages, model_id, params, request), default, config)
        if value is not self._or(default):
            self._saved(model_id, value)
        return value

    def set(
        self,
        messages: Any,
        response: Any,
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> None:
        """Store ``response`` (``None`` and falsy values too), tagged with its model."""
        self._set_value(
            request_key(messages, model_id, params, request),
            response,
            with_overrides(config, ttl, tags),
            [model_tag(model_id)],
        )

    def get_or_generate(
        self,
        messages: Any,
        generate_fn: Callable[[Any], T],
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        *,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> T:
        """Return the cached response, or ``generate_fn(messages)`` computed once in the
        whole cluster (concurrent callers wait for it and get its value or exception).

        A cache fault never fails the call: ``generate_fn`` runs anyway.
        """
        key = self._key(request_key(messages, model_id, params, request))
        called: list[bool] = []

        def generate() -> T:
            called.append(True)
            return generate_fn(messages)

        value = self._cached(
            key, generate, with_overrides(config, ttl, None), [model_tag(model_id)]
        )
        if not called:  # served by the cache, or by another caller's compute
            self._saved(model_id, value)
        return value

    def _saved(self, model_id: str, response: Any) -> None:
        """Count the LLM call a hit saved, priced by model (non-blocking), when the
        response carries its provider's usage and the backend is a cluster."""
        tokens = usage_tokens(response)
        namespace = getattr(self._backend, "namespace", None)
        if tokens is None or not isinstance(namespace, str):
            return
        from omnicache_cluster.observability.cost import record_saving

        try:
            record_saving(namespace, model_id, *tokens)
        except ValueError as exc:  # a bad model name must not fail a hit
            record_fault("savings", exc)

    def invalidate_model(self, model_id: str) -> int:
        """Remove every cached response of ``model_id`` (this tenant, all processes)."""
        return self._invalidate(model_tag(model_id))

    # -- async ------------------------------------------------------------------------

    async def aget(
        self,
        messages: Any,
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        *,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> Any:
        """Async `get`."""
        key_obj = request_key(messages, model_id, params, request)
        value = await self._aget_value(key_obj, default, config)
        if value is not self._or(default):
            self._saved(model_id, value)
        return value

    async def aset(
        self,
        messages: Any,
        response: Any,
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> None:
        """Async `set`."""
        await self._aset_value(
            request_key(messages, model_id, params, request),
            response,
            with_overrides(config, ttl, tags),
            [model_tag(model_id)],
        )

    async def aget_or_generate(
        self,
        messages: Any,
        generate_fn: Callable[[Any], T | Awaitable[T]],
        model_id: str = "default",
        params: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        *,
        config: RequestConfig | None = None,
        **request: Any,
    ) -> T:
        """Async `get_or_generate`; ``generate_fn`` may be sync or async."""
        key = self._key(request_key(messages, model_id, params, request))
        called: list[bool] = []

        def generate() -> T | Awaitable[T]:
            called.append(True)
            return generate_fn(messages)

        value = await self._acached(
            key, generate, with_overrides(config, ttl, None), [model_tag(model_id)]
        )
        if not called:
            self._saved(model_id, value)
        return value  # type: ignore[no-any-return]

    async def ainvalidate_model(self, model_id: str) -> int:
        """Async `invalidate_model`."""
        return await self._ainvalidate(model_tag(model_id))
