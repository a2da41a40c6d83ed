"""`rekit report RUN_DIR|STUDY_DIR`: one self-contained HTML file with the plots that tell the story."""

from __future__ import annotations

from pathlib import Path

from rekit.errors import ConfigError


def run(args) -> int:
    from rekit.io import atomic_write_text
    from rekit.report.rundata import is_run_dir
    from rekit.tuning.study import is_study_dir

    target = Path(args.path)
    if is_study_dir(target):
        from rekit.report.study_report import build_study_report

        page, kind = build_study_report(target, args.storage), "study"
    elif is_run_dir(target):
        from rekit.report.run_report import build_run_report

        page, kind = build_run_report(target, args.errors), "run"
    else:
        raise ConfigError(f"{target} is neither a run directory (config.yaml + state.json) nor a study directory "
                          "(study.json)")
    out = Path(args.output) if args.output else target / "report.html"
    atomic_write_text(out, page)
    print(f"{kind} report: {out}  ({len(page) / 1e6:.1f} MB, self-contained: open it in any browser)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="an HTML report of a run (curves, confusion, per-class F1, errors) or a study",
                       description="Write one self-contained HTML file (plots embedded as PNG). For a run directory: "
                       "per-fold learning curves, fold scores and the out-of-fold CV score, a normalised confusion "
                       "matrix, per-class F1 with support, precision-recall curves of the largest classes, the most "
                       "confident errors with the entities highlighted, and the resolved config. For a study "
                       "directory (rekit tune): optimisation history, parameter importances and the trials.")
    p.add_argument("path", metavar="DIR", help="run directory or study directory")
    p.add_argument("--output", help="HTML file to write (default: DIR/report.html)")
    p.add_argument("--errors", type=int, default=15, help="how many confident errors to list (default: 15)")
    p.add_argument("--storage", help="study storage URL, when the study is not in DIR/study.db")
    p.set_defaults(func=run)
