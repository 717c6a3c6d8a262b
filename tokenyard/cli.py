"""The ``tokenyard`` command: ``serve | generate | chat | kernels | bench``.

Each part adds its own subcommands (``add_commands(subparsers)``); a part that cannot be imported
(for instance a missing optional dependency) is reported when its command is asked for.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

PARTS = (
    "tokenyard.registry.cli",
    "tokenyard.engine.cli",
    "tokenyard.engine.server.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenyard", description="kernel-first LLM inference for agentic workloads")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in PARTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part is not in this build
            raise
        module.add_commands(subparsers)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
