"""Shared fixtures: one local Ray instance for the whole run, bound to 127.0.0.1."""

from __future__ import annotations

import itertools
import logging
import os
import sys

# Before Ray is imported: keep every Ray socket on loopback, and no token auth for the
# throwaway test cluster (production keeps Ray's default token auth).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest

_names = itertools.count()


def unique(prefix: str) -> str:
    """Return a name unique within this test run."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@pytest.fixture(scope="session")
def ray_session():
    """Start one local Ray for the session (2 CPUs, loopback only). Its dashboard runs,
    as in production: it writes the Prometheus discovery file that
    tests/test_prometheus_server.py scrapes through."""
    import ray

    ray.init(
        address="local",  # never attach to a Ray head another process started
        num_cpus=2,
        include_dashboard=True,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_cluster(ray_session):
    """One 2-shard cluster for the tests that need no special configuration."""
    from omnicache_cluster import CacheCluster

    cluster = CacheCluster.start(num_shards=2, namespace=unique("shared"))
    yield cluster
    cluster.shutdown(stop_ray=False)


@pytest.fixture
def cluster(shared_cluster):
    """A client of the shared cluster under a key namespace unique to this test."""
    return shared_cluster.with_key_namespace(unique("t"))


@pytest.fixture
def fresh_cluster(ray_session):
    """A cluster of its own (for tests that change membership or kill actors)."""
    from omnicache_cluster import CacheCluster

    made = []

    def make(**kwargs):
        kwargs.setdefault("num_shards", 2)
        c = CacheCluster.start(namespace=unique("own"), **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.shutdown(stop_ray=False)


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server for the session, on a free port of 127.0.0.1 (no disk):
    yields its URL. Tests keep apart by key prefix (`unique`)."""
    from omnicache_cluster.testing import RedisServer

    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def python_env():
    """Environment for child Python processes (same loopback and auth settings)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env
