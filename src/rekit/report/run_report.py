"""`rekit report RUN_DIR`: one HTML page about a run.

Sections, each built from the file that holds its data and replaced by a note when that file is
missing (a running, partial or interrupted run): scores and fold table (summary.json, fold-K/
result.json), learning curves (metrics.jsonl), confusion matrix, per-class F1, precision-recall
curves and most confident errors (oof.csv + labels.json; the sentences from the training file named
in config.yaml), and the resolved config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rekit.report import plots
from rekit.report.html import Page, highlight
from rekit.report.rundata import OOF, RunData, load_oof, load_run

PR_CLASSES = 6


def _fmt_time(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _header(page: Page, run: RunData) -> None:
    reason = run.state.get("reason")
    cards = []
    for metric, name in (("micro_f1", "CV micro-F1"), ("auprc", "CV AUPRC"), ("accuracy", "CV accuracy")):
        value, source = run.score(metric)
        if value is not None:
            cards.append((name + (" (mean of folds)" if source == "folds" else ""),
                          f"{value:.4f}" if metric == "accuracy" else f"{value:.2f}"))
    s = run.summary or {}
    cards += [("status", run.status), ("folds", f"{len(run.folds)}/{run.setting('folds', '?')}"),
              ("model", str(run.setting("model"))), ("training time", _fmt_time(s.get("train_seconds")))]
    page.cards(cards)
    if reason:
        page.note(f"state: {run.status}: {reason}")
    if run.status != "finished":
        page.note("this run did not finish every fold: out-of-fold sections need summary.json and oof.csv, "
                  "so only what exists is shown")


def _fold_table(page: Page, run: RunData) -> None:
    page.h2("Fold scores", "folds")
    if not run.folds:
        page.note("no fold has finished yet")
        return
    rows = []
    for f in run.folds:
        b = f.get("best") or {}
        rows.append([f"fold {f.get('fold')}", f.get("n_train", "-"), f.get("n_valid", "-"), f.get("best_epoch", "-"),
                     b.get("micro_f1", float("nan")), b.get("auprc", float("nan")), b.get("accuracy", float("nan")),
                     b.get("valid_loss", float("nan")), f.get("stopped") or ""])
    cv = (run.summary or {}).get("cv")
    if cv:
        rows.append(["out-of-fold CV", cv.get("n", "-"), "", "", cv.get("micro_f1", float("nan")),
                     cv.get("auprc", float("nan")), cv.get("accuracy", float("nan")), float("nan"), ""])
    page.table(["", "train rows", "valid rows", "best epoch", "micro-F1", "AUPRC", "accuracy", "valid loss", "note"],
               rows, total_last=bool(cv))
    page.p(f"best checkpoint per fold chosen by {run.setting('metric', 'micro_f1')}; micro-F1 and AUPRC in %, "
           "accuracy as a fraction (KLUE conventions).")


def _curves(page: Page, run: RunData) -> None:
    page.h2("Learning curves", "curves")
    rows = run.metrics()
    if not rows:
        page.note("metrics.jsonl is missing or empty")
        return
    page.image(plots.learning_curves(rows), "learning curves per fold: loss, micro-F1 and AUPRC per epoch")


def _confusion(page: Page, run: RunData, oof: OOF) -> None:
    page.h2("Confusion matrix", "confusion")
    page.image(plots.confusion_heatmap(oof.gold, oof.pred, run.labels),
               "row-normalised confusion matrix of the out-of-fold predictions")


def _per_class(page: Page, run: RunData, oof: OOF) -> None:
    from rekit.data.labels import LabelMap
    from rekit.metrics import per_class_report

    page.h2("Per-class F1", "per-class")
    rows = run.per_class()
    if not rows:
        lm = LabelMap(tuple(run.labels), run.no_relation if run.no_relation in run.labels else None)
        rows = per_class_report(oof.gold, oof.pred, lm)
    rows = [r for r in rows if r.get("support")]
    page.image(plots.per_class_f1(rows), "per-class F1 with support")
    page.table(["label", "support", "precision", "recall", "F1"],
               [[r["label"], r["support"], r["precision"], r["recall"], r["f1"]]
                for r in sorted(rows, key=lambda r: -r["support"])])


def _pr(page: Page, run: RunData, oof: OOF) -> None:
    page.h2("Precision-recall curves", "pr")
    support = np.bincount(oof.gold, minlength=len(run.labels))
    classes = [int(c) for c in np.argsort(-support, kind="stable")[:PR_CLASSES] if support[c] > 0]
    page.image(plots.pr_curves(oof.gold, oof.probs, run.labels, classes),
               "precision-recall curves of the largest classes")


def _sentences(run: RunData) -> tuple[dict, str | None]:
    """id -> Record from the training file named in config.yaml; (empty, why) when it cannot be read."""
    from rekit.data.readers import ReadOptions, read_records
    from rekit.errors import RekitError

    path = run.setting("train")
    if not path:
        return {}, "config.yaml names no training file"
    if not Path(path).is_file():
        return {}, f"the training file {path} (config.yaml data.train) is not there any more"
    try:
        opts = ReadOptions(format=run.setting("format"), on_mismatch=run.setting("on_mismatch", "error"),
                           on_bad_row=run.setting("on_bad_row", "error"), columns=run.setting("columns") or None,
                           entity_keys=run.setting("entity_keys") or None, offsets=run.setting("offsets", "auto"),
                           limit=run.setting("max_train_samples"), max_skip_share=run.setting("max_skip_share", 0.01))
        records, _ = read_records(path, opts)
    except (RekitError, OSError) as e:
        return {}, f"the training file {path} could not be read: {e}"
    return {r.id: r for r in records}, None


def _errors(page: Page, run: RunData, oof: OOF, n: int) -> None:
    page.h2("Most confident errors", "errors")
    pred = oof.pred
    conf = oof.probs[np.arange(len(pred)), pred]
    wrong = np.flatnonzero(pred != oof.gold)
    if not len(wrong):
        page.p("no out-of-fold errors")
        return
    top = wrong[np.argsort(-conf[wrong], kind="stable")][:n]
    records, why = _sentences(run)
    if why:
        page.note(f"sentences not shown: {why}")
    rows = []
    for i in top:
        r = records.get(oof.ids[i])
        if r is not None:
            text = highlight(r.sentence, [(r.subject.start, r.subject.end, "subj", f"subject ({r.subject.type})"),
                                          (r.object.start, r.object.end, "obj", f"object ({r.object.type})")])
        else:
            text = "(sentence not available)"
        rows.append([oof.ids[i], text, run.labels[oof.gold[i]], run.labels[pred[i]], float(conf[i]),
                     float(oof.probs[i, oof.gold[i]])])
    page.raw('<p><mark class="subj">subject</mark> <mark class="obj">object</mark> '
             f"&mdash; the {len(rows)} wrong out-of-fold predictions the model was surest of</p>")
    page.table(["id", "sentence", "gold", "predicted", "p(predicted)", "p(gold)"], rows, raw_cols=(1,))


def build_run_report(path: str | Path, n_errors: int = 15) -> str:
    run = load_run(path)
    page = Page(f"rekit run report: {run.dir.name}", f"{run.dir.resolve()}  ·  updated {run.state.get('updated', '?')}")
    _header(page, run)
    _fold_table(page, run)
    _curves(page, run)
    oof = load_oof(run)
    if oof is None:
        page.h2("Out-of-fold analysis", "oof")
        page.note("no oof.csv (the run has not finished every fold): no confusion matrix, per-class scores, "
                  "precision-recall curves or error list")
    else:
        _confusion(page, run, oof)
        _per_class(page, run, oof)
        _pr(page, run, oof)
        _errors(page, run, oof, n_errors)
    page.h2("Resolved config", "config")
    try:
        page.pre((run.dir / "config.yaml").read_text(encoding="utf-8"))
    except OSError:
        page.note("config.yaml is missing")
    return page.render()
