"""The `rekit` command: parse, call the library, say where the results went.

Each subcommand lives in `rekit/commands/<name>.py`. User mistakes (bad files, bad options)
print one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rekit.errors import RekitError

# In the order `rekit --help` lists them.
COMMANDS = ("demo", "pretrain", "train", "distill", "tune", "predict", "export", "serve", "runs", "report")


def build_parser() -> argparse.ArgumentParser:
    from rekit import __version__

    parser = argparse.ArgumentParser(
        prog="rekit", description="Relation extraction: train a K-fold ensemble of transformer classifiers "
        "and write a leaderboard-ready submission. Start with `rekit demo`.")
    parser.add_argument("--version", action="version", version=f"rekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"rekit.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except RekitError as e:
        print(f"rekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
