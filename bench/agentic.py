"""The agentic multi-turn benchmark as a script: `python bench/agentic.py --preset cpu`.

The same client as `tokenyard bench agentic` (tokenyard/engine/server/bench_agentic.py), with the
same flags; see `--help`.
"""

import argparse
import sys

from tokenyard.engine.server.cli import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/agentic.py")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "agentic", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
