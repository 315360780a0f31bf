"""Local servers for benchmarks: a throwaway ``redis-server`` on 127.0.0.1.

The helpers live in `omnicache_cluster.testing` (the test fixtures use them too);
this module keeps the names the benchmarks import.
"""

from __future__ import annotations

from omnicache_cluster.testing import (
    LOOPBACK,
    RedisServer,
    free_port,
    redis_server_binary,
    redis_server_problem,
    start_redis_server,
    stop,
)

__all__ = [
    "LOOPBACK",
    "RedisServer",
    "free_port",
    "redis_server_binary",
    "redis_server_problem",
    "start_redis_server",
    "stop",
]
