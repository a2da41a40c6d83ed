"""`rekit train`: K-fold training into a run directory; `--resume` continues a stopped one."""

from __future__ import annotations

import sys
from pathlib import Path

from rekit import lock
from rekit.commands import add_config_flags, explicit_flags
from rekit.config import RunConfig, read_yaml
from rekit.data.formats.source import check_file
from rekit.errors import ConfigError
from rekit.modeling.source import check_model_source
from rekit.rundir import DISTILL

# Flags that may accompany --resume: they change how the run is executed, not what it computes
# (accumulation is exact, so --grad-accum only changes memory use: the way out after an OOM).
# trust_remote_code: a saved config that allows model code needs the flag again, explicitly.
RESUME_FLAGS = ("device", "progress", "trust_remote_code", "grad_accum", "oom_retry", "eval_batch_size")
RESUME_HELP = ("--device", "--progress/--no-progress", "--grad-accum", "--oom-retry", "--eval-batch-size",
               "--trust-remote-code")


def resume_config(args) -> RunConfig:
    """The run directory's own config.yaml, with only the harmless flags applied."""
    run = Path(args.resume)
    lock.check_free(run)  # a run another process is writing (maybe not yet its config.yaml): say so
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run} is not a rekit run directory (no config.yaml); nothing to resume")
    if (run / DISTILL).is_file():
        raise ConfigError(f"{run} was made by `rekit distill`, which does not resume; run that command again "
                          "with --overwrite")
    flags = explicit_flags(args)
    other = sorted(k for k in flags if k not in RESUME_FLAGS)
    if args.config or other:
        names = ["--config"] * bool(args.config) + ["--" + k.replace("_", "-") for k in other]
        raise ConfigError(f"--resume continues {run} with its saved config.yaml, so {', '.join(names)} cannot "
                          f"change; with --resume pass only {', '.join(RESUME_HELP)} (start a new run to train "
                          "differently)")
    cfg = RunConfig.from_yaml(run / "config.yaml", {**flags, "output": str(run)})
    if cfg.model.trust_remote_code and not flags.get("trust_remote_code"):
        raise ConfigError(f"{run}/config.yaml allows the model to run its own Python code; pass "
                          "--trust-remote-code with --resume if you trust where this run directory came from")
    return cfg


def _auto_progress(args, flags: dict) -> dict:
    """Without --progress/--no-progress (or a config file that sets it), bars are shown only when
    stderr is a terminal: redrawn bars fill a log file with noise."""
    if "progress" in flags or sys.stderr.isatty():
        return flags
    if args.config and not args.resume:
        data = read_yaml(args.config)
        if isinstance(data, dict) and ("progress" in data or "progress" in (data.get("train") or {})):
            return flags
    return {**flags, "progress": False}


def run(args) -> int:
    if args.resume:
        auto = _auto_progress(args, explicit_flags(args))
        if "progress" in auto:
            args.progress = auto["progress"]
        cfg = resume_config(args)
    else:
        flags = _auto_progress(args, explicit_flags(args))
        cfg = RunConfig.from_yaml(args.config, flags) if args.config else RunConfig.from_dict({}, flags)
        if cfg.data.train:
            check_file(Path(cfg.data.train))  # a mistyped path fails at once, before torch is imported
        check_model_source(cfg.model.model)  # so does a missing --model path, a link loop, pickle-only weights
    from rekit.training.cv import train_cv
    from rekit.training.distributed import env_rank

    out = Path(cfg.train.output or "")
    worker = env_rank() > 0  # a torchrun process other than the main one: it stays quiet
    try:
        summary = train_cv(cfg, resume=bool(args.resume))
    except KeyboardInterrupt as e:
        if worker:
            return 130
        if cfg.train.output and (out / "config.yaml").is_file():
            why = f" ({e})" if str(e) else ""
            print(f"rekit: interrupted{why}. Continue with: rekit train --resume {out}", file=sys.stderr)
            return 130
        raise
    if worker:
        return 0
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
                       "out-of-fold predictions. Options come from --config and flags (flags win). A stopped run "
                       "(crash, kill, Ctrl-C) continues with --resume RUN_DIR: finished folds are kept and the "
                       "current one restarts from its last saved training state.")
    p.add_argument("--config", help="YAML file with data/model/train sections (see configs/); the pretrain "
                   "and distill sections of the other commands are checked and left to them")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the stopped run in RUN_DIR with its own config.yaml (only " + ", ".join(RESUME_HELP)
                   + " may be given with it)")
    add_config_flags(p)
    p.set_defaults(func=run)
