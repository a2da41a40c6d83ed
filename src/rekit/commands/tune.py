"""`rekit tune`: hyper-parameter search (Optuna) into a study directory; `--export` the best config."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import time
from collections import Counter
from pathlib import Path

from rekit.commands import add_config_flags, add_field_flag, explicit_flags
from rekit.errors import ConfigError

EXAMPLE = """\
examples:
  rekit tune --config configs/tune-scratch.yaml --output runs/study --trials 20
  rekit tune --train train.csv --model scratch --output runs/study   # the default search space
  rekit tune --output runs/study --workers 2            # resume, two worker processes
  rekit tune --output runs/study --export best.yaml     # then: rekit train --config best.yaml
  rekit tune --config c.yaml --output runs/study --storage postgresql://user:pw@db-host/optuna
      (run the same line on each machine; each keeps its trials' run directories locally)
"""


METAVARS = {"trials": "N", "timeout": "SECONDS", "startup_trials": "N", "warmup_evals": "N", "seed": "N",
            "storage": "URL", "study_name": "NAME", "workers": "N|auto", "heartbeat": "SECONDS", "retries": "N"}


def _tune_fields():
    from rekit.tuning.settings import TuneSettings

    return [f for f in dataclasses.fields(TuneSettings) if f.metadata.get("flag")]


def add_tune_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("search options (also settable in the config's tune: section)")
    for f in _tune_fields():
        default = f.default if f.default is not dataclasses.MISSING else None
        add_field_flag(group, f, default, flag=f.metadata["flag"], dest=f"tune_{f.name}", metavar=METAVARS.get(f.name))


def tune_flags(args) -> dict:
    return {f.name: getattr(args, f"tune_{f.name}") for f in _tune_fields() if hasattr(args, f"tune_{f.name}")}


def resolve_workers(spec: str) -> int:
    if spec == "auto":
        from rekit.tuning.pool import gpu_ids

        return max(1, len(gpu_ids()))
    return int(spec)


def export(study, path: str) -> None:
    from rekit.tuning.study import export_best, format_params

    best, cfg = export_best(study, path)
    print(f"exported trial {best.number} ({study.settings.metric} {best.value:.4g}; {format_params(best.params)}) "
          f"to {path}")
    print(f"next: rekit train --config {path}   (all {cfg.train.folds} folds, output {cfg.train.output})")


def summarize(study) -> None:
    from rekit.tuning.study import format_params

    ost = study.load()
    trials = ost.get_trials(deepcopy=False)
    counts = Counter(t.state.name.lower() for t in trials)
    print(f"study {study.name!r}: {len(trials)} trials ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})")
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if done:
        best = max(done, key=lambda t: t.value)
        print(f"  best: trial {best.number}, {study.settings.metric} {best.value:.4g} ({format_params(best.params)})"
              f"  run: {study.trial_dir(best.number)}")
    print(f"  trials:  {study.dir}/trial-*/   (run directories: rekit runs {study.dir})")
    print(f"  report:  rekit report {study.dir}")
    print(f"  export:  rekit tune --output {study.dir} --export best.yaml")


def run(args) -> int:
    from tqdm.auto import tqdm

    from rekit.tuning.pool import Pool, recover_dead
    from rekit.tuning.storage import mask
    from rekit.tuning.study import describe, open_study, prepare
    from rekit.tuning.worker import run_trials, work_left

    base, tflags = explicit_flags(args), tune_flags(args)
    if args.export and not args.config:  # export only
        if not base.get("output"):
            raise ConfigError("--export needs the study: pass --output STUDY_DIR")
        export(open_study(Path(base["output"]), tflags.get("storage")), args.export)
        return 0

    study = prepare(args.config, base, tflags)
    s = study.settings
    workers = resolve_workers(s.workers)
    ost = study.load()
    lost = recover_dead(study, ost)  # trials left RUNNING by a worker of this machine that was killed
    if lost:
        print(f"trial(s) {', '.join(map(str, lost))} had lost their worker process: failed and re-queued")
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in ost.get_trials(deepcopy=False))
    print(f"study {study.name!r} in {mask(study.url)}: {finished}/{s.trials} trials done; maximise {s.metric} "
          + (f"on folds {s.folds}" if s.folds else "(out-of-fold CV)") + f"; {workers} worker(s)")
    print("  space: " + "; ".join(p.describe() for p in study.params))
    deadline = time.time() + s.timeout if s.timeout else None
    progress = bool(study.base["train"].get("progress", True))
    if not work_left(ost, s.trials):
        print(f"nothing to run: the study has its {s.trials} trials (raise --trials to run more)")
    elif workers == 1:
        run_trials(study, 0, progress=progress, echo=print, deadline=deadline)
    else:
        bar = tqdm(total=s.trials, initial=min(finished, s.trials), desc="trials", disable=not progress,
                   dynamic_ncols=True)

        def on_trial(t):
            bar.write(describe(t, s.metric))
            if t.state.name in ("COMPLETE", "PRUNED"):
                bar.update(1)

        try:
            Pool(study, workers, echo=bar.write, deadline=deadline).run(on_trial)
        finally:
            bar.close()
    summarize(study)
    if args.export:
        export(study, args.export)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "tune", help="hyper-parameter search (Optuna) over any train/model option; resumable, multi-worker",
        description=textwrap.fill(
            "Search hyper-parameters: each trial trains the base config with sampled values as a normal run "
            "directory STUDY_DIR/trial-NNNN (STUDY_DIR is --output) and scores it (CV micro-F1 by default), "
            "pruning poor trials after each evaluation. The search space is the config file's tune.space "
            "section (see configs/tune-scratch.yaml); without one, a default space over lr, batch size, epochs, "
            "warmup ratio, optimizer and dropout, printed at the start and saved with the study. The study is stored in "
            "STUDY_DIR/study.db (SQLite) or "
            "--storage URL; rerunning resumes it, and several workers (--workers N, or the same command on "
            "other machines with a shared --storage) share it.", 100),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file: data/model/train sections (the base config) and a tune section")
    p.add_argument("--export", metavar="YAML", help="write the best trial's config for `rekit train --config` "
                   "(with --config: after tuning; without: export only)")
    add_tune_flags(p)
    add_config_flags(p)
    p.set_defaults(func=run)
