"""`rekit predict` and `rekit evaluate`: the fold ensemble on a file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rekit.api.loading import ONNX_MANIFEST
from rekit.commands import READ_FIELDS, add_config_flags, read_options
from rekit.data.formats.source import check_file
from rekit.errors import RekitError
from rekit.io import check_output
from rekit.modeling.integrity import check_model_dir
from rekit.rundir import model_dirs


def _check_paths(args) -> None:
    """Mistyped paths and unfinished runs fail at once, before the input is read and torch and the
    models are loaded."""
    for run in args.run_dir:
        if not Path(run).exists():
            raise RekitError(f"{run}: no such run directory")
        if not (Path(run) / ONNX_MANIFEST).is_file():  # an ONNX export has no folds to finish
            for d in model_dirs(run, allow_partial=args.allow_partial):
                check_model_dir(d)  # JSON files and safetensors headers: milliseconds
    check_file(Path(args.input))
    for flag in ("output", "report"):
        target = getattr(args, flag, None)
        if target and Path(target).is_dir():
            raise RekitError(f"--{flag} {target} is a directory; name a file in it, e.g. "
                             f"{Path(target) / ('submission.csv' if flag == 'output' else 'report.json')}")
        if target:
            check_output(target, f"--{flag}")  # a read-only or missing folder fails now, not after predicting


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _load_ensemble(args):
    if len(args.run_dir) == 1 and (Path(args.run_dir[0]) / ONNX_MANIFEST).is_file():
        from rekit.export.runtime import OnnxEnsemble  # `rekit export`: onnxruntime, no torch

        return OnnxEnsemble(args.run_dir[0], batch_size=min(args.batch_size, 64), type_constraints=args.type_constraints)
    from rekit.ensemble import Ensemble, oof_run_weights

    kw = dict(device=args.device, batch_size=args.batch_size, trust_remote_code=args.trust_remote_code,
              progress=show_progress(args), compile=args.compile, allow_partial=args.allow_partial, echo=_stderr,
              type_constraints=args.type_constraints)
    if len(args.run_dir) == 1 and not args.fit_weights:
        return Ensemble.load(args.run_dir[0], weights=args.weights, **kw)
    if args.weights:
        raise RekitError("--weights sets fold-model weights of one run; with several runs use --fit-weights or none")
    run_weights = None
    if args.fit_weights:
        first = Ensemble.load(args.run_dir[0], **kw)
        run_weights = oof_run_weights(args.run_dir, first.label_map_)
        print("run weights fit on out-of-fold predictions: "
              + ", ".join(f"{r} {w:.3f}" for r, w in zip(args.run_dir, run_weights)), file=sys.stderr)
    return Ensemble.load_runs(args.run_dir, run_weights, **kw)


def _say_constraints(ens) -> None:
    """One stderr line when the models' type-pair constraints change the probabilities."""
    pairs = ens.type_pairs  # None when --no-type-constraints or when the models have none
    if pairs:
        _stderr(f"type-pair constraints on: a label a row's entity-type pair never took in training gets 0 "
                f"({len(pairs)} pairs; --no-type-constraints turns this off)")


def _adapt(args, ens, probs):
    """--calibrate and --adapt-priors (rekit.adapt.adapt_probs): the runs' out-of-fold files, never the input's labels."""
    from rekit.adapt import adapt_probs  # numpy and the run files only: no torch

    return adapt_probs(probs, args.run_dir, ens.label_map_, args.calibrate, args.adapt_priors, echo=_stderr)


def show_progress(args) -> bool:
    """--progress/--no-progress; by default bars only when stderr is a terminal (not in logs)."""
    return sys.stderr.isatty() if args.progress is None else args.progress


def _read_input(args, report_path):
    """Every input row, in order (see `read_for_prediction`); the read report is saved at
    `report_path` (None: not kept). Nothing readable at all is an error."""
    from rekit.data.readers import read_for_prediction
    from rekit.predict import save_read_report

    rows = read_for_prediction(args.input, read_options(args))
    print(rows.report.summary(report_path), file=sys.stderr)
    save_read_report(rows.report, report_path)
    if not rows.records:
        why = f"all {len(rows.rows):,} rows are unreadable (see {report_path})" if rows.rows else "it has no data rows"
        raise RekitError(f"{args.input}: nothing to predict: {why}")
    return rows


def predict(args) -> int:
    _check_paths(args)
    from rekit.predict import complete_probs, read_report_path, write_predictions

    rows = _read_input(args, read_report_path(args.output))
    ens = _load_ensemble(args)
    _say_constraints(ens)
    check_output(args.output, need_bytes=len(rows.rows) * (12 * len(ens.label_map_) + 64))  # room for the file
    probs = _adapt(args, ens, ens.predict_proba(rows.records))
    write_predictions(args.output, rows.rows, complete_probs(rows.rows, probs, ens.label_map_), ens.label_map_)
    flagged = len(rows.report.flagged) + len(rows.report.repaired)
    print(f"wrote {len(rows.rows):,} predictions, one per input row ({len(ens.dirs)} fold models averaged) to "
          f"{args.output}" + (f"; {flagged:,} rows had their span repaired or were flagged: see "
                             f"{read_report_path(args.output)}" if flagged else ""))
    return 0


def evaluate(args) -> int:
    _check_paths(args)
    from rekit.predict import read_report_path, score, split_known, write_predictions

    target = args.output or args.report
    rows = _read_input(args, read_report_path(target) if target else None)
    ens = _load_ensemble(args)
    _say_constraints(ens)
    known, n_unknown, n_unlabeled = split_known(rows.records, ens.label_map_, args.unknown_labels, args.input)
    if not known:
        raise RekitError(f"{args.input}: no labeled rows to evaluate")
    # The label mix is estimated on every input row (labels unused), as on a real test set.
    probs = _adapt(args, ens, ens.predict_proba(known))
    report = score(known, probs, ens.label_map_)
    n_unreadable = len(rows.unreadable)
    report.update(skipped_unknown_labels=n_unknown, skipped_unlabeled=n_unlabeled, skipped_unreadable=n_unreadable)
    print(f"{len(known):,} rows, {len(ens.dirs)} fold models: micro-F1 {report['micro_f1']:.2f}  "
          f"AUPRC {report['auprc']:.2f}  accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.2f}")
    if n_unknown or n_unlabeled or n_unreadable:
        print(f"not scored: {n_unknown} rows with labels unknown to the model, {n_unlabeled} unlabeled rows, "
              f"{n_unreadable} unreadable rows")
    if args.output:
        write_predictions(args.output, known, probs, ens.label_map_)
        print(f"predictions: {args.output}")
    if args.report:
        from rekit.io import atomic_write_text

        atomic_write_text(args.report, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"metrics report: {args.report}")
    return 0


def _add_ensemble_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                   help="run directories made by `rekit train` (or model directories); several runs are ensembled")
    p.add_argument("--input", required=True, help="file to predict (any format `rekit train` reads; labels optional)")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per fold model of a single run (default: equal)")
    p.add_argument("--fit-weights", action="store_true",
                   help="weight several runs by fitting on their out-of-fold predictions (training data only)")
    p.add_argument("--adapt-priors", choices=("none", "em"), default="none",
                   help="em: re-estimate the label mix of the input file from its (unlabeled) rows and re-weight "
                   "the probabilities (Saerens et al. 2002); helps when it differs from training's (default: none)")
    p.add_argument("--calibrate", choices=("none", "temperature", "bcts"), default="none",
                   help="calibrate on the run's out-of-fold predictions before --adapt-priors: temperature, or "
                   "bcts (temperature + per-class bias; recommended with em) (default: none)")
    p.add_argument("--type-constraints", action=argparse.BooleanOptionalAction, default=True,
                   help="models trained with --type-constraints give 0 to labels a row's (subject type, object type) "
                   "pair never took in training; --no-type-constraints predicts without (default: on; models trained "
                   "without it have none)")
    p.add_argument("--batch-size", type=int, default=512,
                   help="examples per inference batch (default: 512; a batch that runs the GPU out of memory is "
                   "split in half)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--compile", action="store_true",
                   help="CUDA: compile the encoder layers with torch.compile (inductor) before predicting; costs "
                   "about 12 s once, then predicts about 8%% faster (BENCHMARKS.md): for large inputs, with --batch-size 1024")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the run directory (trusted sources only)")
    p.add_argument("--allow-partial", action="store_true",
                   help="predict with the finished folds of a run whose other folds did not finish (it says which "
                   "folds it uses); without it such a run is refused")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress bars (default: only when stderr is a terminal)")
    add_config_flags(p, only=tuple(f for f in READ_FIELDS if f != "max_skip_share"), sections=("data",))


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict a file with a run's fold ensemble (submission CSV or JSONL)",
                       description="Average the fold models' softmax probabilities and write id,pred_label,probs "
                       "(CSV, the competition format) or JSON Lines if --output ends in .jsonl: exactly one row per "
                       "input row, same ids, same order. A row with a wrong span is still predicted (span repaired, "
                       "else its offsets clamped to the sentence); a row that can't be read at all gets the "
                       "no-relation label with near-uniform probabilities. Every such row is listed in "
                       "OUTPUT.read_report.json.")
    _add_ensemble_args(p)
    p.add_argument("--output", required=True, help="submission path (.csv or .jsonl)")
    p.set_defaults(func=predict)

    p = sub.add_parser("evaluate", help="predict a labeled file and print the KLUE-RE metrics",
                       description="micro-F1 (without no_relation) and AUPRC as in KLUE-RE, plus accuracy and macro-F1.")
    _add_ensemble_args(p)
    p.add_argument("--output", help="also write the predictions here")
    p.add_argument("--report", help="write all metrics (per-class, confusion matrix) as JSON here")
    p.add_argument("--unknown-labels", choices=("error", "skip"), default="error",
                   help="rows whose gold label the model does not know: error, or skip and count them")
    p.set_defaults(func=evaluate)
