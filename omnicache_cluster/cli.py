"""The ``omnicache-cluster`` command line: ``start``, ``status``, ``stats``, ``inspect``,
``flush``, ``warm``, ``stop``, ``scale`` and ``demo``; and ``omnicache``, the seed's.

It attaches to the running cluster by name (``--namespace``, the Ray namespace; and
``--address`` of the Ray cluster, the local one by default). The commands are the
functions of `omnicache_cluster.admin`, which return data; this module parses the
arguments and prints that data as tables (``--json`` for JSON).

``stats``, ``inspect`` and ``flush`` also run on a single-process cache: with
``--local`` they open the backend the ``OMNICACHE_*`` variables configure (disk or
Redis, as the seed's CLI did) and print JSON. The ``omnicache`` command is the same
command line with ``--local`` as the default for those three (``--cluster`` for the
cluster), so the seed's ``omnicache stats / flush / inspect KEY`` keep working.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from omnicache_cluster.admin import (
    DEFAULT_NAMESPACE,
    cmd_flush,
    cmd_inspect,
    cmd_local_flush,
    cmd_local_inspect,
    cmd_local_stats,
    cmd_start,
    cmd_stats,
    cmd_status,
    cmd_stop,
    cmd_warm,
    connect,
    local_backend,
)

__all__ = ["main", "seed_main"]

#: The commands that also run on the environment's single-process backend.
_LOCAL_COMMANDS = ("stats", "inspect", "flush")


# -- the command line -------------------------------------------------------------------


def _ask(scope: str) -> bool:
    if not sys.stdin.isatty():
        print(f"refusing to remove {scope} without confirmation; pass --yes", file=sys.stderr)
        return False
    return input(f"Remove {scope}? [y/N] ").strip().lower() in ("y", "yes")


def _run_local(args: argparse.Namespace) -> dict[str, Any]:
    backend, where = local_backend()
    try:
        if args.command == "stats":
            return cmd_local_stats(backend, where)
        if args.command == "inspect":
            return cmd_local_inspect(
                backend, args.key, layer=args.layer, tenant=args.tenant, json_key=args.json_key
            )
        return cmd_local_flush(
            backend,
            where,
            tenant=args.tenant,
            tag=args.tag,
            all_tenants=args.all_tenants,
            confirm=(lambda _s: True) if args.yes else _ask,
        )
    finally:
        backend.close()


def _run_command(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "local", False):
        return _run_local(args)
    if args.command == "start":
        return cmd_start(
            args.namespace,
            shards=args.shards,
            max_mb_per_shard=args.max_mb_per_shard,
            address=args.address,
            num_cpus=args.num_cpus,
            new_head=args.new_head,
        )
    cluster = connect(args.namespace, args.address)
    if args.command == "status":
        return cmd_status(cluster)
    if args.command == "scale":
        from omnicache_cluster._scale import cmd_scale

        return cmd_scale(cluster, args.num_shards)
    if args.command == "stats":
        return cmd_stats(cluster, tenant=args.tenant)
    if args.command == "stop":
        return cmd_stop(cluster)
    if args.command == "inspect":
        return cmd_inspect(
            cluster,
            args.key,
            layer=args.layer,
            tenant=args.tenant,
            key_namespace=args.key_namespace,
            json_key=args.json_key,
        )
    if args.command == "flush":
        return cmd_flush(
            cluster,
            tenant=args.tenant,
            tag=args.tag,
            key_namespace=args.key_namespace,
            confirm=(lambda _s: True) if args.yes else _ask,
        )
    return cmd_warm(
        cluster,
        args.file,
        tenant=args.tenant,
        model=args.model,
        ttl=args.ttl,
        key_namespace=args.key_namespace,
        skip_existing=not args.overwrite,
        progress=not args.json,
    )


def _demo(args: argparse.Namespace) -> int:
    from omnicache_cluster.demo import run_demo

    report = run_demo(tasks=args.tasks, questions_per_task=args.questions, shards=args.shards)
    print(report.render())
    return 0


def _mode(parser: argparse.ArgumentParser, local_default: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--local",
        dest="local",
        action="store_true",
        default=local_default,
        help="the single-process backend OMNICACHE_BACKEND (disk or redis) configures"
        + (" (the default)" if local_default else ""),
    )
    group.add_argument(
        "--cluster",
        dest="local",
        action="store_false",
        help="the running cluster" + ("" if local_default else " (the default)"),
    )


def _parser(
    prog: str = "omnicache-cluster", local_default: bool = False
) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help="the cluster's Ray namespace"
    )
    common.add_argument("--address", default=None, help="Ray address (default: the local one)")
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser = argparse.ArgumentParser(prog=prog, description="A distributed cache cluster on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", parents=[common], help="start a cluster that stays up")
    start.add_argument("--shards", type=int, default=2, help="shard actors (default 2)")
    start.add_argument("--max-mb-per-shard", type=int, default=256, help="MiB per shard")
    start.add_argument("--num-cpus", type=int, default=None, help="CPUs of a new Ray node")
    start.add_argument(
        "--new-head", action="store_true", help="start a new local Ray even if one runs"
    )
    sub.add_parser("status", parents=[common], help="shards, ring epoch, entries, bytes")
    stats = sub.add_parser("stats", parents=[common], help="live counters per tenant and layer")
    stats.add_argument("--tenant", default=None, help="only this tenant's rows")
    _mode(stats, local_default)
    sub.add_parser("stop", parents=[common], help="kill the cluster's actors")
    scale = sub.add_parser("scale", parents=[common], help="add or remove shards, live")
    scale.add_argument("num_shards", type=int, help="the shard count to reach")
    inspect = sub.add_parser("inspect", parents=[common], help="show one entry")
    inspect.add_argument("key", help="a stored key ns:tenant:layer:digest, or a user key")
    inspect.add_argument("--layer", default="default")
    inspect.add_argument("--tenant", default="default")
    inspect.add_argument("--key-namespace", default=None)
    inspect.add_argument("--json-key", action="store_true", help="parse KEY as JSON")
    _mode(inspect, local_default)
    flush = sub.add_parser("flush", parents=[common], help="remove entries")
    flush.add_argument("--tenant", default=None)
    flush.add_argument("--tag", default=None)
    flush.add_argument("--key-namespace", default=None)
    flush.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    flush.add_argument(
        "--all-tenants", action="store_true", help="with --local: every tenant's entries"
    )
    _mode(flush, local_default)
    warm = sub.add_parser("warm", parents=[common], help="load responses from a file")
    warm.add_argument("file", help="a .csv, .jsonl or .json file of rows")
    warm.add_argument("--tenant", default="default")
    warm.add_argument("--model", default="default", help="model of rows that name none")
    warm.add_argument("--ttl", type=float, default=None, help="seconds the entries live")
    warm.add_argument("--key-namespace", default=None)
    warm.add_argument("--overwrite", action="store_true", help="store rows already cached")
    demo = sub.add_parser("demo", help="run the local single-node demo workload")
    demo.add_argument("--tasks", type=int, default=6, help="Ray tasks (default 6)")
    demo.add_argument("--questions", type=int, default=10, help="questions per task")
    demo.add_argument("--shards", type=int, default=2, help="shard actors (default 2)")
    return parser


def _print_local(args: argparse.Namespace, data: dict[str, Any]) -> int:
    """Print a single-process command's data as the seed did (JSON); return the status."""
    if args.command == "inspect" and not data["exists"]:
        print(f"Key not found: {args.key}", file=sys.stderr)
        return 1
    if args.command == "flush" and not args.json:
        if not data["confirmed"]:
            return 1
        print(f"Cache flushed: removed {data['removed']} entries ({data['scope']}).")
        return 0
    print(json.dumps(data, indent=2, default=str))
    return 0 if args.command != "flush" or data["confirmed"] else 1


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "omnicache-cluster",
    local_default: bool = False,
) -> int:
    """Run the command line; return the exit status."""
    from omnicache_cluster._cli_render import render
    from omnicache_cluster.errors import OmnicacheError

    args = _parser(prog, local_default).parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    try:
        data = _run_command(args)
    except (OmnicacheError, ConnectionError, OSError, ValueError) as exc:
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "local", False):
        return _print_local(args, data)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        if args.command == "scale":
            from omnicache_cluster._scale import render_scale

            print(render_scale(data))
        else:
            render(args.command, data)
    if args.command == "warm" and data["failed"]:
        return 2
    if args.command == "flush" and not data["confirmed"]:
        return 1
    return 0


def seed_main(argv: Sequence[str] | None = None) -> int:
    """The ``omnicache`` command: the seed's ``stats / flush / inspect KEY`` on the
    backend ``OMNICACHE_*`` configures (``--cluster`` for the cluster's), and every
    cluster command."""
    return main(argv, prog="omnicache", local_default=True)


if __name__ == "__main__":
    sys.exit(main())
