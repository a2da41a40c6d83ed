"""`rekit demo`: the offline end-to-end demo."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args) -> int:
    from rekit.demo import run_demo

    run_demo(Path(args.output), progress=args.progress)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="offline end-to-end demo on a generated Korean corpus (under a minute on CPU)",
                       description="Generates a small synthetic Korean RE corpus, trains a scratch model with 2 folds, "
                       "ensembles, evaluates, and writes a submission. Needs no network and no data.")
    p.add_argument("--output", default="rekit-demo", help="demo directory (default: ./rekit-demo)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    p.set_defaults(func=run)
