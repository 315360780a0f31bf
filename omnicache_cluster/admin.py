"""The commands of ``omnicache-cluster``, as functions that return data.

Each one works on a client attached to the running cluster by name (its Ray
namespace) and returns plain data; `omnicache_cluster.cli` parses arguments and
prints that data as tables or JSON. So the numbers ``stats`` shows are the live ones
of the shards, not those of a fresh process.

``start`` creates the cluster's actors *detached*, so they outlive the command; when
no Ray runs yet it starts a local head node first (``ray start --head``), bound to
127.0.0.1 like every local mode of this project.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core.keys import CacheKey

if TYPE_CHECKING:
    from omnicache_cluster.client import CacheCluster

__all__ = [
    "DEFAULT_NAMESPACE",
    "cmd_flush",
    "cmd_inspect",
    "cmd_local_flush",
    "cmd_local_inspect",
    "cmd_local_stats",
    "cmd_start",
    "cmd_stats",
    "cmd_status",
    "cmd_stop",
    "cmd_warm",
    "connect",
    "local_backend",
]

DEFAULT_NAMESPACE = "omnicache"


def connect(namespace: str = DEFAULT_NAMESPACE, address: str | None = None) -> CacheCluster:
    """Attach to the cluster running in Ray namespace ``namespace``.

    Raises:
        ConfigError: no cluster runs there.
        ConnectionError: no Ray cluster at ``address`` (or none running locally).
    """
    from omnicache_cluster.client import CacheCluster

    return CacheCluster.connect(namespace=namespace, address=address)


# -- start / stop ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_start_head(num_cpus: int | None) -> str:
    """Start a local Ray head node that outlives this process, every socket on
    127.0.0.1; return its address."""
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    cmd = [
        str(ray_bin) if ray_bin.exists() else "ray",
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=180)
    return f"127.0.0.1:{port}"


def _init_ray(address: str | None, num_cpus: int | None, new_head: bool) -> bool:
    """Initialise Ray in this process; return whether a new head node was started.

    Attaches to Ray at ``address``, else to the local one; starts a head node when
    none runs (or when ``new_head``).
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import logging

    import ray

    if ray.is_initialized():
        return False
    if not new_head:
        try:
            ray.init(address=address or "auto", logging_level=logging.WARNING)
            return False
        except ConnectionError:
            if address is not None:
                raise
    ray.init(address=_ray_start_head(num_cpus), logging_level=logging.WARNING)
    return True


def cmd_start(
    namespace: str = DEFAULT_NAMESPACE,
    *,
    shards: int = 2,
    max_mb_per_shard: int = 256,
    address: str | None = None,
    num_cpus: int | None = None,
    new_head: bool = False,
) -> dict[str, Any]:
    """Start a cache cluster whose actors stay up after this process exits.

    Uses the Ray this process is attached to, else the one at ``address`` (default:
    the local one), else (or with ``new_head``) starts a local Ray head node on
    127.0.0.1.

    Raises:
        ConfigError: a cluster already runs in ``namespace``.
    """
    import ray

    from omnicache_cluster.client import CacheCluster

    started_ray = _init_ray(address, num_cpus, new_head)
    cluster = CacheCluster.start(
        num_shards=shards,
        namespace=namespace,
        max_bytes_per_shard=max_mb_per_shard * 1024 * 1024,
        detached=True,
    )
    context = ray.get_runtime_context()
    return {
        "namespace": namespace,
        "shards": shards,
        "max_bytes_per_shard": max_mb_per_shard * 1024 * 1024,
        "ray_address": context.gcs_address,
        "started_ray": started_ray,
        "dashboard_url": _dashboard_url(),
        "ring_epoch": cluster.ring_epoch,
    }


def _dashboard_url() -> str | None:
    try:
        import ray

        url = ray._private.worker.get_dashboard_url()
    except Exception:  # no dashboard (ray without [default]) or not reachable
        return None
    return (url if url.startswith("http") else f"http://{url}") if url else None


def cmd_stop(cluster: CacheCluster) -> dict[str, Any]:
    """Kill the cluster's actors (its entries are lost); Ray itself keeps running."""
    ring_members = cmd_status(cluster)["shards"]
    cluster.shutdown(stop_ray=False)
    return {"namespace": cluster.namespace, "stopped_shards": len(ring_members)}


# -- status / stats -------------------------------------------------------------------


def cmd_status(cluster: CacheCluster) -> dict[str, Any]:
    """Return the ring epoch and, per shard, its slots, entries and bytes."""
    stats = cluster.stats()
    shards = [
        {
            "shard": s["shard"],
            "owned_slots": s.get("owned_slots", 0),
            "entries": s["entries"],
            "bytes": s["bytes"],
            "max_bytes": s.get("max_bytes"),
            "uptime_s": round(float(s.get("uptime_s", 0.0)), 1),
        }
        for s in sorted(stats["shards"], key=lambda s: str(s["shard"]))
    ]
    return {
        "namespace": cluster.namespace,
        "ring_epoch": stats["epoch"],
        "entries": stats["entries"],
        "bytes": stats["bytes"],
        "shards": shards,
    }


def _rate(hits: int, misses: int) -> float:
    return hits / (hits + misses) if hits + misses else 0.0


def _merge_layers(shards: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
    out: dict[tuple[str, str], dict[str, int]] = {}
    for shard in shards:
        for tenant, layers in (shard.get("layers") or {}).items():
            for layer, counts in layers.items():
                acc = out.setdefault((tenant, layer), {"hits": 0, "misses": 0, "sets": 0})
                for name in acc:
                    acc[name] += int(counts.get(name, 0))
    return out


def _tenant_rows(stats: dict[str, Any], layers: dict[tuple[str, str], dict[str, int]]) -> Any:
    tenants: dict[str, dict[str, Any]] = {}
    for (tenant, _layer), c in layers.items():
        t = tenants.setdefault(tenant, {"hits": 0, "misses": 0, "sets": 0})
        for name in ("hits", "misses", "sets"):
            t[name] += c[name]
    for shard in stats["shards"]:
        for tenant, n in (shard.get("tenant_entries") or {}).items():
            t = tenants.setdefault(tenant, {"hits": 0, "misses": 0, "sets": 0})
            t["entries"] = t.get("entries", 0) + n
            t["bytes"] = t.get("bytes", 0) + shard.get("tenant_bytes", {}).get(tenant, 0)
    for tenant, usage in (stats.get("tenants") or {}).items():
        tenants.setdefault(tenant, {"hits": 0, "misses": 0, "sets": 0}).update(usage)
    return tenants


def cmd_stats(cluster: CacheCluster, tenant: str | None = None) -> dict[str, Any]:
    """Return the live counters of the cluster: totals, per tenant and per layer.

    Args:
        cluster: an admin client.
        tenant: only this tenant's rows (the totals stay cluster-wide).
    """
    stats = cluster.stats()
    layers = _merge_layers(stats["shards"])
    tenants = _tenant_rows(stats, layers)
    layer_rows = [
        {"tenant": t, "layer": layer, **c, "hit_rate": _rate(c["hits"], c["misses"])}
        for (t, layer), c in sorted(layers.items())
        if tenant is None or t == tenant
    ]
    tenant_rows = [
        {
            "tenant": t,
            "entries": c.get("entries", 0),
            "bytes": c.get("bytes", 0),
            "hits": c["hits"],
            "misses": c["misses"],
            "sets": c["sets"],
            "hit_rate": _rate(c["hits"], c["misses"]),
            "computes": c.get("computes", 0),
            "lease_waits": c.get("lease_waits", 0),
        }
        for t, c in sorted(tenants.items())
        if tenant is None or t == tenant
    ]
    totals = {k: stats[k] for k in ("entries", "bytes", "hits", "misses", "sets", "hit_rate")}
    totals["evictions"] = stats.get("evictions", {})
    return {
        "namespace": cluster.namespace,
        "ring_epoch": stats["epoch"],
        "totals": totals,
        "tenants": tenant_rows,
        "layers": layer_rows,
    }


# -- inspect / flush / warm -------------------------------------------------------------


def _stored_key(
    cluster: CacheCluster,
    key: str,
    layer: str,
    tenant: str,
    key_namespace: str | None,
    json_key: bool,
) -> str:
    """Return the stored key of ``key``: as given if it is one, else hashed."""
    try:
        return str(CacheKey.parse(key))
    except ValueError:
        pass
    view = cluster.for_tenant(tenant)
    if key_namespace is not None:
        view = view.with_key_namespace(key_namespace)
    return view.key(json.loads(key) if json_key else key, layer)


def _describe(cluster: CacheCluster, skey: str) -> tuple[str, Any]:
    """Return ``(owner shard, describe reply)``; refreshes the ring on *moved*."""
    import ray

    state, options = cluster._state, cluster.options  # the CLI is part of the client
    for _ in range(options.max_moved_rounds):
        ring = state.current_ring(options)
        name = ring.owner(skey)
        reply = ray.get(state.handle_of(name).describe.remote(skey), timeout=options.call_timeout_s)
        if not isinstance(reply, int):
            return name, reply
        state.refresh_ring(options)
    raise RuntimeError(f"{skey} kept moving between shards; try again")


def cmd_inspect(
    cluster: CacheCluster,
    key: str,
    *,
    layer: str = "default",
    tenant: str = "default",
    key_namespace: str | None = None,
    json_key: bool = False,
) -> dict[str, Any]:
    """Return what the cluster holds under one key, without counting a lookup.

    ``key`` is a stored key (``namespace:tenant:layer:digest``) or a user key that is
    hashed with ``layer``, ``tenant`` and ``key_namespace`` (parsed as JSON first
    with ``json_key``, for dict keys such as a layer's request).
    """
    skey = _stored_key(cluster, key, layer, tenant, key_namespace, json_key)
    shard, reply = _describe(cluster, skey)
    out: dict[str, Any] = {"key": skey, "shard": shard, "found": reply is not None}
    if reply is None:
        return out
    prefix = skey.rsplit(":", 2)[0] + ":"  # namespace:tenant:
    expires = reply["expires_at"]
    try:
        value = cluster.options.serializer.loads(reply["value"])
        shown, kind = repr(value), type(value).__name__
    except Exception as exc:  # show what is there even if this process cannot decode it
        shown, kind = f"<undecodable: {exc}>", "bytes"
    out.update(
        bytes=reply["bytes"],
        tags=[t[len(prefix) :] if t.startswith(prefix) else t for t in reply["tags"]],
        ttl_remaining_s=None if expires is None else round(expires - time.time(), 1),
        type=kind,
        value=shown if len(shown) <= 2000 else shown[:2000] + "...",
    )
    return out


def cmd_flush(
    cluster: CacheCluster,
    *,
    tenant: str | None = None,
    tag: str | None = None,
    key_namespace: str | None = None,
    confirm: Callable[[str], bool] = lambda _what: True,
) -> dict[str, Any]:
    """Remove entries: by tag (of ``tenant``, ``default`` if not given), a tenant's
    entries in a key namespace, or everything; asks ``confirm`` first.

    Returns ``{"scope", "confirmed", "removed"}``.
    """
    kns = key_namespace or cluster.key_namespace
    if tag is not None:
        scope = f"entries tagged {tag!r} of tenant {tenant or 'default'!r} in {kns!r}"
    elif tenant is not None:
        scope = f"every entry of tenant {tenant!r} in key namespace {kns!r}"
    else:
        scope = f"EVERY entry of the cluster {cluster.namespace!r}"
    if not confirm(scope):
        return {"scope": scope, "confirmed": False, "removed": 0}
    if tag is None and tenant is None:
        removed = cluster.clear(all_tenants=True)
    else:
        view = cluster.with_key_namespace(kns).for_tenant(tenant or "default")
        removed = view.invalidate(tag) if tag is not None else view.clear()
    return {"scope": scope, "confirmed": True, "removed": removed}


def cmd_warm(
    cluster: CacheCluster,
    path: str | Path,
    *,
    tenant: str = "default",
    model: str = "default",
    ttl: float | None = None,
    key_namespace: str | None = None,
    skip_existing: bool = True,
    progress: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Load a CSV/JSONL/JSON file of responses into the response layer of ``tenant``
    (see `omnicache_cluster.warmer`); return the warm report."""
    from omnicache_cluster.layers.response import ResponseCache
    from omnicache_cluster.warmer import CacheWarmer

    view = cluster.for_tenant(tenant)
    if key_namespace is not None:
        view = view.with_key_namespace(key_namespace)
    warmer = CacheWarmer(ResponseCache(view), progress=progress, console=console)
    report = warmer.warm_from_file(path, model_id=model, ttl=ttl, skip_existing=skip_existing)
    return {"file": str(path), "tenant": tenant, **report.as_dict()}


# -- one process: the backend the environment configures (the seed's CLI) ---------------


def local_backend(env: Mapping[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """Open the backend ``OMNICACHE_*`` variables configure (the seed's
    ``OMNICACHE_BACKEND``, ``OMNICACHE_DISK_PATH``, ``OMNICACHE_REDIS_URL``,
    ``OMNICACHE_NAMESPACE``); return ``(backend, where)``.

    Raises:
        ConfigError: a variable has an invalid value (named), or the backend is
            ``memory``, which lives only in the process that uses it.
    """
    from omnicache_cluster.config import OmnicacheSettings
    from omnicache_cluster.errors import ConfigError

    settings = OmnicacheSettings.from_env(env)
    if settings.backend not in ("disk", "redis"):
        raise ConfigError(
            f"OMNICACHE_BACKEND is {settings.backend!r}: an in-memory cache lives only in "
            "the process that uses it, so a command cannot see it; set OMNICACHE_BACKEND="
            "disk (with OMNICACHE_DISK_PATH) or redis (with OMNICACHE_REDIS_URL), or use "
            "the cluster's commands (omnicache-cluster stats)"
        )
    where: dict[str, Any] = {"backend": settings.backend, "namespace": settings.namespace}
    if settings.backend == "disk":
        where["path"] = settings.disk_path
    else:
        where["url"] = _without_password(settings.redis_url)
    return settings.make_backend(), where


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def cmd_local_stats(backend: Any, where: Mapping[str, Any]) -> dict[str, Any]:
    """Return what the backend holds in its key namespace: entries per tenant and per
    layer (read from the store; hits and misses are counted by the processes that
    serve them, in `CacheManager.metrics`, and are not stored)."""
    prefix = f"{backend.key_namespace}:"
    tenants: dict[str, int] = {}
    layers: dict[str, int] = {}
    for skey in backend.store.keys(prefix):
        try:
            key = CacheKey.parse(skey)
        except ValueError:  # not one of ours
            continue
        tenants[key.tenant] = tenants.get(key.tenant, 0) + 1
        layers[key.layer] = layers.get(key.layer, 0) + 1
    store = backend.store.stats()
    return {
        **where,
        "entries": sum(tenants.values()),
        "tenants": dict(sorted(tenants.items())),
        "layers": dict(sorted(layers.items())),
        "corrupt_records": int(store.get("corrupt", 0)),
    }


def cmd_local_inspect(
    backend: Any,
    key: str,
    *,
    layer: str = "default",
    tenant: str = "default",
    json_key: bool = False,
) -> dict[str, Any]:
    """Return what the backend holds under one key, without counting a lookup.

    ``key`` is a stored key (``namespace:tenant:layer:digest``) or a user key hashed
    with ``layer`` and ``tenant`` in the backend's key namespace (parsed as JSON
    first with ``json_key``). The reply has the seed's fields (``key``, ``exists``,
    ``value_type``, ``value_size_bytes``) plus the stored key, ttl, tags and value.
    """
    try:
        skey = str(CacheKey.parse(key))
    except ValueError:
        skey = backend.for_tenant(tenant).key(json.loads(key) if json_key else key, layer)
    (record,) = backend.store.get_many([skey])
    out: dict[str, Any] = {"key": key, "stored_key": skey, "exists": record is not None}
    if record is None:
        return out
    try:
        value = backend._ser.loads(record.value)  # the CLI is part of the backend
        shown, kind = repr(value), type(value).__name__
    except Exception as exc:  # show what is there even if this process cannot decode it
        value, shown, kind = None, f"<undecodable: {exc}>", "bytes"
    prefix = skey.rsplit(":", 2)[0] + ":"  # namespace:tenant:
    out.update(
        value_type=kind,
        value_size_bytes=len(value) if isinstance(value, bytes | str) else "n/a",
        stored_bytes=len(record.value),
        tags=[t[len(prefix) :] if t.startswith(prefix) else t for t in record.tags],
        ttl_remaining_s=(
            None if record.expires_at is None else round(record.expires_at - time.time(), 1)
        ),
        value=shown if len(shown) <= 2000 else shown[:2000] + "...",
    )
    return out


def cmd_local_flush(
    backend: Any,
    where: Mapping[str, Any],
    *,
    tenant: str | None = None,
    tag: str | None = None,
    all_tenants: bool = False,
    confirm: Callable[[str], bool] = lambda _what: True,
) -> dict[str, Any]:
    """Remove entries of the backend's key namespace: one tenant's (``default``, as
    the seed's ``manager.clear()``), those tagged ``tag``, or every tenant's; asks
    ``confirm`` first. Returns ``{"scope", "confirmed", "removed"}``."""
    ns = backend.key_namespace
    loc = where.get("path") or where.get("url")
    if tag is not None:
        scope = f"entries tagged {tag!r} of tenant {tenant or 'default'!r} in {ns!r} at {loc}"
    elif all_tenants:
        scope = f"EVERY entry of key namespace {ns!r} at {loc}"
    else:
        scope = f"every entry of tenant {tenant or 'default'!r} in key namespace {ns!r} at {loc}"
    if not confirm(scope):
        return {"scope": scope, "confirmed": False, "removed": 0}
    if all_tenants and tag is None:
        keys = backend.store.keys(f"{ns}:")
        removed = sum(backend.store.delete_many(keys)) if keys else 0
    else:
        view = backend.for_tenant(tenant or "default")
        removed = view.invalidate(tag) if tag is not None else view.clear()
    return {"scope": scope, "confirmed": True, "removed": removed}
