"""`rekit runs [DIR]`: list run directories with their scores and key settings;
`rekit compare A B`: what differs between two runs (config, CV scores, per-class F1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from rekit.errors import ConfigError, RekitError

if TYPE_CHECKING:
    from rekit.report.rundata import RunData

COLUMNS = (  # header, key in the run's config
    ("model", "model"), ("marker", "marker"), ("head", "head"), ("lr", "lr"), ("epochs", "epochs"),
    ("bs", "batch_size"),
)
SORTS = ("name", "micro_f1", "auprc", "time")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _score_cell(run, metric: str) -> str:
    value, source = run.score(metric)
    if value is None:
        return "-"
    return f"{value:.2f}" + ("*" if source == "folds" else "")


def _metric_cell(value: float | None, source: str, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}" + ("*" if source == "folds" else "")


def _folds_cell(run) -> str:
    total = run.setting("folds")
    done = len(run.folds)
    return str(total) if done == total else f"{done}/{total}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _score_or(run: RunData, metric: str, default: float) -> float:
    value = run.score(metric)[0]
    return value if value is not None else default


def _row(run_dir: Path, name: str) -> tuple[list[str], RunData]:
    """One listing row and its run; a run whose files are malformed raises (see `list_runs`)."""
    from rekit.report.rundata import load_run

    r = load_run(run_dir)
    row = [name, r.status, _score_cell(r, "micro_f1"), _score_cell(r, "auprc"),
           *(_fmt(r.setting(key)) for _, key in COLUMNS), _folds_cell(r)]
    for metric in ("micro_f1", "auprc"):
        r.score(metric)  # a malformed score fails here, not while sorting
    return row, r


def list_runs(root: Path, sort: str = "name") -> str:
    """A table of the runs under `root`. A run with malformed files is listed as unreadable (the
    reason is printed below the table); it never hides the others."""
    from rekit.report.rundata import find_runs

    if not root.is_dir():
        raise ConfigError(f"{root}: no such directory")
    paths = find_runs(root)
    if not paths:
        return f"no run directories under {root}"
    good: list[tuple[list[str], RunData]] = []
    bad: list[tuple[str, str]] = []
    for p in paths:
        name = os.path.relpath(p, root) if p != root else p.name
        try:
            good.append(_row(p, name))
        except (RekitError, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            bad.append((name, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if sort in ("micro_f1", "auprc"):
        good.sort(key=lambda x: -_score_or(x[1], sort, float("-inf")))
    elif sort == "time":
        good.sort(key=lambda x: x[1].state.get("updated", ""))
    header = ["run", "status", "micro-F1", "AUPRC", *(h for h, _ in COLUMNS), "folds"]
    rows = [row for row, _ in good] + [[name, "unreadable", *["-"] * (len(header) - 2)] for name, _ in bad]
    out = table(rows, header)
    if any(r.score("micro_f1")[1] == "folds" for _, r in good):
        out += "\n* mean of the folds that ran (no out-of-fold score: only some folds were trained)"
    for name, why in bad:
        out += f"\nunreadable {name}: {why}"
    return out


def _flat(config: dict) -> dict:
    return {k: v for section in config.values() if isinstance(section, dict) for k, v in section.items()}


def compare_runs(a_dir: Path, b_dir: Path, top: int = 0) -> str:
    from rekit.report.rundata import load_run

    a, b = load_run(a_dir), load_run(b_dir)
    out = [f"A: {a.dir}  ({a.status})", f"B: {b.dir}  ({b.status})", ""]
    fa, fb = _flat(a.config), _flat(b.config)
    diffs = [[k, _fmt(fa.get(k)), "->", _fmt(fb.get(k))] for k in dict.fromkeys([*fa, *fb])
             if fa.get(k) != fb.get(k) and k != "output"]
    out.append("config differences:" if diffs else "config: identical (apart from the output directory)")
    if diffs:
        out.append(table(diffs, ["option", "A", "", "B"]))
    out.append("")
    scores = []
    for metric in ("micro_f1", "auprc", "accuracy", "macro_f1"):
        (va, sa), (vb, sb) = a.score(metric), b.score(metric)
        digits = 4 if metric == "accuracy" else 2  # accuracy is a fraction, the others percentages
        cell = f"{vb - va:+.{digits}f}" if va is not None and vb is not None else "-"
        scores.append([metric, _metric_cell(va, sa, digits), _metric_cell(vb, sb, digits), cell])
    out.append("CV scores (out-of-fold; * = mean of the folds that ran):")
    out.append(table(scores, ["metric", "A", "B", "B-A"]))
    pa, pb = {r["label"]: r for r in a.per_class()}, {r["label"]: r for r in b.per_class()}
    out.append("")
    missing = [name for name, per in (("A", pa), ("B", pb)) if not per]
    if missing:
        out.append(f"per-class F1: {' and '.join(missing)} has no per-class scores (they come from the summary.json "
                   "of a run that finished every fold)")
        return "\n".join(out)
    labels = [lab for lab in dict.fromkeys([*pa, *pb]) if pa.get(lab, {}).get("support") or pb.get(lab, {}).get("support")]
    rows: list[tuple[float | None, list[str]]] = []
    for lab in labels:
        f_a, f_b = pa.get(lab, {}).get("f1"), pb.get(lab, {}).get("f1")
        delta = f_b - f_a if f_a is not None and f_b is not None else None
        support = pa.get(lab, pb.get(lab, {})).get("support")
        rows.append((delta, [lab, str(support), _fmt(f_a), _fmt(f_b), "-" if delta is None else f"{delta:+.3f}"]))
    rows.sort(key=lambda r: (r[0] is None, -(abs(r[0]) if r[0] is not None else 0)))
    shown = rows[:top] if top else rows
    out.append("per-class F1 (fractions; support = gold rows; largest changes first):")
    out.append(table([r for _, r in shown], ["label", "support", "A", "B", "B-A"]))
    if top and len(rows) > top:
        out.append(f"... {len(rows) - top} more (--top 0 shows all)")
    return "\n".join(out)


def run_list(args) -> int:
    print(list_runs(Path(args.dir), args.sort))
    return 0


def run_compare(args) -> int:
    print(compare_runs(Path(args.a), Path(args.b), args.top))
    return 0


def register(sub) -> None:
    p = sub.add_parser("runs", help="list the run directories under DIR with CV scores and key settings",
                       description="List every run directory at or under DIR (a study's trials included): status, "
                       "out-of-fold micro-F1 and AUPRC, and the settings that usually differ.")
    p.add_argument("dir", nargs="?", default="runs", help="directory to search (default: runs/)")
    p.add_argument("--sort", choices=SORTS, default="name", help="row order (default: name)")
    p.set_defaults(func=run_list)

    c = sub.add_parser("compare", help="differences between two runs: config, CV scores, per-class F1",
                       description="Show the options that differ between run A and run B, their CV scores side by "
                       "side, and the per-class F1 of each (largest changes first).")
    c.add_argument("a", metavar="A", help="run directory")
    c.add_argument("b", metavar="B", help="run directory")
    c.add_argument("--top", type=int, default=0, help="show only the N classes that changed most (default: all)")
    c.set_defaults(func=run_compare)
