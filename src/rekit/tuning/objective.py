"""One trial: sample a config, train it as a normal run directory, return its CV score.

The objective is `tune.metric` (default micro_f1):
* every fold trained (tune.folds empty): the out-of-fold CV score in the run's summary.json, the
  number `rekit train` reports;
* a subset of folds (tune.folds = [0, 1], faster): `train_cv` stops at status "partial" without an
  out-of-fold file, so the objective is the mean of those folds' best-checkpoint scores (each fold's
  result.json). Comparable across trials of one study, which is all a search needs.

Pruning: after every evaluation the trial reports the fold's score at step
`fold * STEP_STRIDE + evaluation number`, so trials are compared at the same fold and the same
evaluation (epoch) even when they train for different numbers of epochs.
"""

from __future__ import annotations

import json
import os
import socket
from collections import defaultdict

from rekit import rundir
from rekit.errors import ConfigError, RekitError
from rekit.tuning.space import sample
from rekit.tuning.study import Study, format_params, trial_config

STEP_STRIDE = 10_000  # > any number of evaluations in one fold


class TrialFailed(Exception):
    """This trial failed (its sampled values form an invalid config, e.g. a batch size that is not a
    multiple of grad-accum, or training raised, e.g. out of memory): it is marked failed and the
    search goes on. A RekitError from training (missing data, ...) would hit every trial: it stops
    the worker instead."""


class PruneOnEval:
    """`train_cv` callback: report each evaluation to the trial; raise TrialPruned when told to."""

    def __init__(self, trial, metric: str, warmup_evals: int):
        self.trial, self.metric, self.warmup = trial, metric, warmup_evals
        self.evals: dict[int, int] = defaultdict(int)

    def __call__(self, fold: int, row: dict) -> None:
        import optuna

        self.evals[fold] += 1
        value = row.get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), fold * STEP_STRIDE + self.evals[fold])
        if self.evals[fold] > self.warmup and self.trial.should_prune():
            raise optuna.TrialPruned(f"fold {fold} epoch {row.get('epoch', '?')} ({self.metric} {value:.4g})")


def objective_value(summary: dict, run, metric: str) -> tuple[float, str]:
    """(score, where it came from) for a finished or partial run directory."""
    if summary.get("status") == "finished" and metric in (summary.get("cv") or {}):
        return float(summary["cv"][metric]), "out-of-fold CV"
    scores = {}
    for d in rundir.fold_dirs(run):
        result = json.loads((d / rundir.RESULT).read_text(encoding="utf-8"))
        scores[result["fold"]] = float(result["best"][metric])
    if not scores:
        raise RuntimeError(f"{run}: no fold finished, so there is no score")
    return sum(scores.values()) / len(scores), f"mean of folds {sorted(scores)}"


class Objective:
    """Callable for `optuna.Study.optimize`."""

    def __init__(self, study: Study, progress: bool = False, echo=print):
        self.study, self.progress, self.echo = study, progress, echo

    def __call__(self, trial) -> float:
        import optuna

        from rekit.training.cv import train_cv

        s = self.study.settings
        run = self.study.trial_dir(trial.number)
        # Who runs it: lets `rekit tune` fail and re-queue it at once if this process dies.
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        trial.set_user_attr("run_dir", str(run.resolve()))
        for stale in ("error", "pruned_at", "score_from"):  # a re-queued trial inherits its original's notes
            if trial.user_attrs.get(stale) is not None:
                trial.set_user_attr(stale, None)
        values = sample(trial, self.study.params)
        try:
            cfg = trial_config(self.study.base, values, run, s.folds, self.progress)
        except ConfigError as e:
            trial.set_user_attr("error", f"invalid combination: {e}")
            raise TrialFailed(str(e)) from None
        self.echo(f"trial {trial.number}: {format_params(values)} -> {run}")
        try:
            summary = train_cv(cfg, echo=lambda msg: self.echo(f"  trial {trial.number}: {msg}"),
                               callbacks=[PruneOnEval(trial, s.metric, s.warmup_evals)])
        except optuna.TrialPruned as e:
            trial.set_user_attr("pruned_at", str(e))
            rundir.write_state(run, "pruned", reason=f"pruned at {e}")
            raise
        except RekitError as e:
            trial.set_user_attr("error", str(e)[:500])
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}".splitlines()[0][:500])
            raise TrialFailed(f"{type(e).__name__}: {e}") from e
        value, source = objective_value(summary, run, s.metric)
        trial.set_user_attr("score_from", source)
        return value
