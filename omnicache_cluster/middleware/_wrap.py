"""What the middleware decorators share: signature-keeping wrappers and call keys."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["call_arguments", "keep_signature", "require_coroutine_function"]

F = TypeVar("F", bound=Callable[..., Any])

#: Parameters that name the bound object, not the request: never part of a key.
_RECEIVERS = frozenset({"self", "cls"})


def call_arguments(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Return the call's arguments by parameter name, defaults filled in, so that
    ``f(x, 2)``, ``f(x, k=2)`` and ``f(x)`` with ``k=2`` as default make one key.

    Raises:
        TypeError: the arguments do not fit the signature (as calling it would).
    """
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in _RECEIVERS}


def keep_signature(
    fn: Callable[..., Any],
    sync_call: Callable[[tuple[Any, ...], dict[str, Any]], Any],
    async_call: Callable[[tuple[Any, ...], dict[str, Any]], Awaitable[Any]],
) -> Any:
    """Return a wrapper of ``fn`` with its name, docs and signature that runs
    ``async_call`` for a coroutine function and ``sync_call`` otherwise."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            return await async_call(args, kwargs)

        wrapper: Any = awrapper
    else:

        @functools.wraps(fn)
        def swrapper(*args: Any, **kwargs: Any) -> Any:
            return sync_call(args, kwargs)

        wrapper = swrapper
    wrapper.__signature__ = inspect.signature(fn)
    return wrapper


def require_coroutine_function(fn: Callable[..., Any], what: str) -> None:
    """Raise ``TypeError`` unless ``fn`` is an ``async def`` function."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{what} wraps async functions; got {fn!r} (use the sync middleware)")
