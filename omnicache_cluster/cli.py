"""The ``omnicache-cluster`` command line. Commands return data; `main` prints it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from omnicache_cluster.demo import run_demo

    report = run_demo(tasks=args.tasks, questions_per_task=args.questions, shards=args.shards)
    print(report.render())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnicache-cluster", description="A distributed cache cluster on Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the local single-node demo workload")
    demo.add_argument("--tasks", type=int, default=6, help="Ray tasks (default 6)")
    demo.add_argument("--questions", type=int, default=10, help="questions per task")
    demo.add_argument("--shards", type=int, default=2, help="shard actors (default 2)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
