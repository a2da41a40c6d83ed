"""`rekit train`: K-fold training into a run directory."""

from __future__ import annotations

from pathlib import Path

from rekit.commands import add_config_flags, explicit_flags
from rekit.config import RunConfig


def run(args) -> int:
    from rekit.training.cv import train_cv

    flags = explicit_flags(args)
    cfg = RunConfig.from_yaml(args.config, flags) if args.config else RunConfig.from_dict({}, flags)
    summary = train_cv(cfg)
    out = Path(cfg.train.output)
    print(f"run directory: {out}")
    print(f"  fold models:   {out}/fold-*/  (weights, tokenizer, labels.json)")
    if summary.get("status") == "finished":
        print(f"  CV summary:    {out}/summary.json   out-of-fold: {out}/oof.csv")
    print(f"  metrics:       {out}/metrics.jsonl   config: {out}/config.yaml")
    print(f"next: rekit predict {out} --input TEST --output submission.csv")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a K-fold ensemble (writes a run directory)",
                       description="Train one model per fold, keep each fold's best checkpoint, and score the "
                       "out-of-fold predictions. Options come from --config and flags (flags win).")
    p.add_argument("--config", help="YAML file with data/model/train sections (see configs/)")
    add_config_flags(p)
    p.set_defaults(func=run)
