"""The one exception hierarchy of omnicache-cluster.

::

    OmnicacheError
    ├── TransientError            retried by the client within its deadline
    │   ├── ShardUnavailable      a shard actor died or is restarting
    │   ├── Moved                 the shard no longer owns the key's slot
    │   ├── Timeout               a call or a wait ran past its deadline
    │   └── L2Unavailable         the durable backend (Redis, disk) failed
    └── PermanentError            raised to the caller, never retried
        ├── ConfigError           a setting is invalid (names the setting)
        ├── CodecError            bytes that do not decode, or an unsafe codec
        ├── ValueTooLarge         an encoded value over ``max_value_bytes``
        └── QuotaExceeded         a tenant went over one of its limits

Wrong argument types and values raise the built-in ``TypeError`` and ``ValueError``
(an unencodable value is a ``TypeError`` naming its type), so ordinary Python code
handles them as it handles any other bad argument.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigError",
    "L2Unavailable",
    "Moved",
    "OmnicacheError",
    "PermanentError",
    "QuotaExceeded",
    "ShardUnavailable",
    "Timeout",
    "TransientError",
    "ValueTooLarge",
]


class OmnicacheError(Exception):
    """Root of every error raised by omnicache-cluster."""


class TransientError(OmnicacheError):
    """A fault that can go away on its own: the client retries it within a deadline."""


class PermanentError(OmnicacheError):
    """A fault that retrying cannot fix: raised to the caller."""


class ShardUnavailable(TransientError):
    """A shard actor is dead, restarting or unreachable."""


class Moved(TransientError):
    """A shard answered that it does not own a key's slot under its ring epoch.

    Attributes:
        epoch: the ring epoch the shard is at.
    """

    def __init__(self, message: str, epoch: int = 0) -> None:
        super().__init__(message)
        self.epoch = epoch


class Timeout(TransientError):
    """A call or a wait ran past its deadline."""


class L2Unavailable(TransientError):
    """The durable L2 backend (Redis, disk) could not be reached."""


class ConfigError(PermanentError, ValueError):
    """A setting is invalid; the message names the setting."""


class CodecError(PermanentError):
    """Bytes that do not decode, a wrong envelope version, or a bad signature."""


class ValueTooLarge(PermanentError, ValueError):
    """An encoded value is larger than ``max_value_bytes``; nothing was stored."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"encoded value is {size} bytes, over max_value_bytes={limit}")
        self.size = size
        self.limit = limit


class QuotaExceeded(PermanentError):
    """A tenant went over one of its limits.

    Attributes:
        tenant: the tenant that hit the limit.
        limit: the name of the limit (``max_bytes``, ``computes_per_minute``, ...).
    """

    def __init__(self, tenant: str, limit: str, detail: str = "") -> None:
        msg = f"tenant {tenant!r} exceeded {limit}"
        super().__init__(f"{msg}: {detail}" if detail else msg)
        self.tenant = tenant
        self.limit = limit
