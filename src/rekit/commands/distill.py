"""`rekit distill RUN --output RUN2`: one student model from a run's fold ensemble (issue 18), or
K students on K folds with --folds K."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from rekit import configfile, lock, rundir
from rekit.commands import READ_FIELDS, add_config_flags, add_field_flag, explicit_flags
from rekit.config import DistillSettings
from rekit.data.formats.source import check_file
from rekit.errors import RekitError
from rekit.modeling.source import check_model_source

# `rekit train` options a student may set (the rest come from the teacher's config.yaml).
STUDENT_FIELDS = ("model", "scratch_size", "scratch_vocab_size", "marker", "first_segment", "head", "max_length",
                  "dropout", "trust_remote_code", "output", "overwrite", "epochs", "lr", "layer_decay", "batch_size",
                  "grad_accum", "eval_batch_size", "weight_decay", "warmup_ratio", "scheduler", "max_grad_norm",
                  "label_smoothing", "rdrop", "precision", "compile", "pad_multiple", "eval_every", "save_every",
                  "oom_retry", "seed", "deterministic", "device", "progress", "report_to",
                  # --folds K only: how the K students train (as `rekit train`'s folds do)
                  "concurrent_folds", "only_folds", "metric", "patience")


# What a student takes from `--config FILE` besides its distill: section: the model/train options
# above, except where it goes (output, overwrite: the file's are the teacher's; flags only).
FROM_RUN_CONFIG = tuple(k for k in STUDENT_FIELDS if k not in ("output", "overwrite"))


def options(args) -> tuple[dict, dict]:
    """(student options, distillation settings): the file's (--config), then the flags given."""
    names = {f.name for f in dataclasses.fields(DistillSettings)}
    flags = {k: v for k, v in explicit_flags(args).items() if k not in names}  # --folds is the students'
    given = [f.name for f in dataclasses.fields(DistillSettings) if hasattr(args, f.name)]
    checked = DistillSettings.from_dict({k: getattr(args, k) for k in given}, flags=True)  # before torch is imported
    settings = {k: getattr(checked, k) for k in given}
    if args.config:
        data = configfile.load(args.config)
        flags = {**configfile.run_options(data, FROM_RUN_CONFIG), **flags}
        settings = {**configfile.section(data, "distill"), **settings}
    return flags, settings


def _check_paths(args, flags: dict, settings: dict) -> None:
    """What can be checked without torch: the teacher run, the files, the output directory."""
    run = Path(args.run_dir)
    if not run.is_dir():
        raise RekitError(f"{run}: no such run directory")
    rundir.model_dirs(run)  # finished folds, or one line about what is missing
    if not (run / rundir.OOF_CSV).is_file():
        raise RekitError(f"{run} has no out-of-fold probabilities (no {rundir.OOF_CSV}); distil a run made by "
                         "`rekit train` with 2 or more folds")
    for path in (args.train, settings.get("unlabeled")):
        if path:
            check_file(Path(path))
    if "model" in flags:
        check_model_source(flags["model"])
    rundir.check_new(flags.get("output"), bool(flags.get("overwrite")), resumable=False)
    lock.check_free(flags["output"])


def run(args) -> int:
    flags, settings = options(args)
    if "progress" not in flags:
        flags["progress"] = sys.stderr.isatty()  # bars only on a terminal, not in a log file
    _check_paths(args, flags, settings)
    from rekit.api.distilling import distill

    out = Path(flags.pop("output"))
    train = flags.pop("train", None)
    reads = {k: flags.pop(k) for k in READ_FIELDS if k in flags}
    try:
        result = distill(args.run_dir, out, train=train, echo=print, **settings, **reads, **flags)
    except KeyboardInterrupt as e:
        why = f" ({e})" if str(e) else ""
        print(f"rekit: interrupted{why}; {out} is left unfinished: run the command again with --overwrite",
              file=sys.stderr)
        return 130
    _say_where(out, args.run_dir, int(settings.get("folds") or 1), result.status)
    return 0 if result.status in ("finished", "partial") else 1


def _say_where(out: Path, teacher: str, k: int, status: str) -> None:
    what = "one model" if k == 1 else f"{k} students on {k} folds"
    print(f"run directory: {out}  ({what} distilled from {teacher}; {out}/distill.json)")
    if status == "partial":  # --only-folds
        print(f"  partial: only the folds asked for are trained, and a distilled run does not resume; "
              f"rekit predict {out} --allow-partial uses them")
        return
    models = f"model:         {out}/fold-0/" if k == 1 else f"models:        {out}/fold-*/   out-of-fold: {out}/oof.csv"
    print(f"  {models}   summary: {out}/summary.json   metrics: {out}/metrics.jsonl")
    print(f"next: rekit evaluate {out} --input DEV   or   rekit predict {out} --input TEST --output submission.csv")


def register(sub) -> None:
    p = sub.add_parser("distill", help="distil a run's fold ensemble into one model (a new run directory)",
                       description="Train one student model on every training row of RUN_DIR from its fold "
                       "ensemble's out-of-fold probabilities (and, with --unlabeled, from the ensemble's "
                       "probabilities on more sentences), so predicting costs one model instead of K. The loss per "
                       "labeled row is alpha * CE(gold label) + (1 - alpha) * T^2 * KL(ensemble_T || student_T); "
                       "an unlabeled row has the KL term only. The student's settings are the teacher's "
                       "(config.yaml) unless given here. The output is a normal run directory with one model "
                       "(fold-0/, trained on every row, nothing held out: the last epoch is kept) that "
                       "`rekit predict`, `evaluate`, `export`, `serve` and rekit.load take as they are. With "
                       "--folds K it is a K-fold run like `rekit train`'s: K students, each trained on the "
                       "labeled rows outside its fold plus every unlabeled sentence and keeping its best "
                       "checkpoint on its fold's held-out rows (gold labels only), averaged when served.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run made by `rekit train` (2 or more folds)")
    p.add_argument("--config", metavar="FILE", help="YAML file: its distill: section and the model/train options "
                   "below that it sets (not output/overwrite; other sections are left to their commands; flags win); "
                   "see configs/offline-klue.yaml")
    p.add_argument("--train", help="the teacher's training file, if it is no longer where its config.yaml says")
    group = p.add_argument_group("distillation options")
    for f in dataclasses.fields(DistillSettings):
        add_field_flag(group, f, f.default)
    add_config_flags(p, only=STUDENT_FIELDS, sections=("model", "train"))
    add_config_flags(p, only=READ_FIELDS, sections=("data",))
    p.set_defaults(func=run)
