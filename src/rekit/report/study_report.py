"""`rekit report STUDY_DIR`: one HTML page about a hyper-parameter study.

Optimisation history, parameter importances (optuna.importance, fANOVA; needs at least two completed
trials that differ), each trial's intermediate scores, the trials table and the best trial's
settings. Trial run directories are normal runs: `rekit report STUDY_DIR/trial-NNNN` for one.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from rekit.report import plots
from rekit.report.html import Page
from rekit.tuning.objective import STEP_STRIDE
from rekit.tuning.storage import mask
from rekit.tuning.study import format_params, open_study


def _param(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _importances(ost) -> tuple[dict | None, str | None]:
    import optuna

    complete = [t for t in ost.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return None, f"parameter importances need at least 2 completed trials; this study has {len(complete)}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(ost)), None
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        return None, f"parameter importances could not be computed ({e})"


def build_study_report(path: str | Path, storage: str | None = None) -> str:
    study = open_study(Path(path), storage)
    ost = study.load()
    s = study.settings
    trials = ost.get_trials(deepcopy=False)
    counts = Counter(t.state.name.lower() for t in trials)
    page = Page(f"rekit study report: {study.name}", f"{study.dir.resolve()}  ·  storage {mask(study.url)}")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value) if complete else None
    page.cards([("trials", str(len(trials))), *((k, str(v)) for k, v in sorted(counts.items())),
                (f"best {s.metric}", f"{best.value:.4g}" if best else "-"),
                ("objective", f"mean of folds {s.folds}" if s.folds else "out-of-fold CV")])
    if best:
        page.p(f"best: trial {best.number} ({format_params(best.params)}); "
               f"train it on every fold: rekit tune --output {study.dir} --export best.yaml && "
               "rekit train --config best.yaml")
    page.p("search space: " + "; ".join(p.describe() for p in study.params))

    page.h2("Optimisation history", "history")
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state.name == "PRUNED" and t.intermediate_values]
    if complete or pruned:
        page.image(plots.optimization_history([t.number for t in complete], [t.value for t in complete], s.metric,
                                              pruned), "optimisation history")
    else:
        page.note("no trial has finished yet")

    page.h2("Parameter importances", "importances")
    importances, why = _importances(ost)
    if importances:
        page.image(plots.param_importances(importances), "parameter importances")
    else:
        page.note(why or "")

    curves = {t.number: sorted(t.intermediate_values.items()) for t in trials if t.intermediate_values}
    if curves:
        page.h2("Intermediate scores", "intermediate")
        page.image(plots.intermediate_values(curves, s.metric), "intermediate scores per trial")
        page.p(f"one point per evaluation, folds in order (step = fold x {STEP_STRIDE} + evaluation); "
               "the pruner compares trials at the same step.")

    page.h2("Trials", "trials")
    names = [p.name for p in study.params]
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        note = t.user_attrs.get("pruned_at") or t.user_attrs.get("error") or t.user_attrs.get("score_from") or ""
        if "failed_trial" in t.system_attrs:
            note = f"re-run of trial {t.system_attrs['failed_trial']}; {note}"
        rows.append([t.number, t.state.name.lower(), t.value if t.value is not None else "-",
                     *(_param(t.params.get(n, "-")) for n in names),
                     f"{duration:.0f} s" if duration is not None else "-", str(note)])
    page.table(["trial", "state", s.metric, *names, "time", "note"], rows)
    page.h2("Base config", "config")
    import yaml

    page.pre(yaml.safe_dump(study.base, sort_keys=False, allow_unicode=True))
    return page.render()
