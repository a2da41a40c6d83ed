"""`rekit predict` and `rekit evaluate`: the fold ensemble on a file."""

from __future__ import annotations

import argparse
import json
import sys

from rekit.commands import READ_FIELDS, add_config_flags, read_options
from rekit.errors import RekitError


def _load_ensemble(args):
    from rekit.ensemble import Ensemble

    return Ensemble.load(args.run_dir, weights=args.weights, device=args.device, batch_size=args.batch_size,
                         trust_remote_code=args.trust_remote_code, progress=True)


def _read_input(args):
    from rekit.data.readers import read_records

    records, report = read_records(args.input, read_options(args))
    print(report.summary(), file=sys.stderr)
    return records


def predict(args) -> int:
    from rekit.predict import write_predictions

    ens = _load_ensemble(args)
    records = _read_input(args)
    probs = ens.predict_proba(records)
    write_predictions(args.output, records, probs, ens.label_map_)
    print(f"wrote {len(records):,} predictions ({len(ens.dirs)} fold models averaged) to {args.output}")
    return 0


def evaluate(args) -> int:
    from rekit.predict import score, split_known, write_predictions

    ens = _load_ensemble(args)
    records = _read_input(args)
    known, n_unknown, n_unlabeled = split_known(records, ens.label_map_, args.unknown_labels, args.input)
    if not known:
        raise RekitError(f"{args.input}: no labeled rows to evaluate")
    probs = ens.predict_proba(known)
    report = score(known, probs, ens.label_map_)
    report.update(skipped_unknown_labels=n_unknown, skipped_unlabeled=n_unlabeled)
    print(f"{len(known):,} rows, {len(ens.dirs)} fold models: micro-F1 {report['micro_f1']:.2f}  "
          f"AUPRC {report['auprc']:.2f}  accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.2f}")
    if n_unknown or n_unlabeled:
        print(f"not scored: {n_unknown} rows with labels unknown to the model, {n_unlabeled} unlabeled rows")
    if args.output:
        write_predictions(args.output, known, probs, ens.label_map_)
        print(f"predictions: {args.output}")
    if args.report:
        from rekit.io import atomic_write_text

        atomic_write_text(args.report, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"metrics report: {args.report}")
    return 0


def _add_ensemble_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory made by `rekit train` (or one model directory)")
    p.add_argument("--input", required=True, help="file to predict (any format `rekit train` reads; labels optional)")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per fold model (default: equal)")
    p.add_argument("--batch-size", type=int, default=256, help="examples per inference batch (default: 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the run directory (trusted sources only)")
    add_config_flags(p, only=READ_FIELDS, sections=("data",))


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict a file with a run's fold ensemble (submission CSV or JSONL)",
                       description="Average the fold models' softmax probabilities and write id,pred_label,probs "
                       "(CSV, the competition format) or JSON Lines if --output ends in .jsonl.")
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
