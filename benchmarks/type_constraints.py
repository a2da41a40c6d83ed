"""What `--type-constraints` does to a finished run's out-of-fold predictions (training data only).

For each fold of RUN, the labels each entity-type pair takes are learned from that fold's own
training rows (every row of TRAIN but the fold's held-out ones), applied to the fold's held-out
probabilities, and both are scored: the choice a user can make without a test set.

    python benchmarks/type_constraints.py --run RUN --train TRAIN.csv [--out result.json]

TRAIN must be the file RUN was trained on (the held-out indices refer to its rows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def constrained_oof(dirs: list[Path], records, label_map) -> list[tuple]:
    """Per finished fold: (name, held-out indices, raw OOF probabilities, constrained ones, mask of
    the allowed labels); each fold's constraints learned from its own training rows."""
    from rekit import rundir
    from rekit.data.constraints import allowed_mask, constrain, learn_type_pairs

    out = []
    for d in dirs:
        if not ((d / rundir.FOLD_OOF).is_file() and (d / rundir.RESULT).is_file()):
            continue
        idx, probs, _ = rundir.load_fold(d)
        held = set(idx.tolist())
        pairs = learn_type_pairs(r for i, r in enumerate(records) if i not in held)
        rows = [records[i] for i in idx]
        out.append((d.name, idx, probs, constrain(probs, rows, pairs, label_map.labels),
                    allowed_mask(rows, pairs, label_map.labels)))
    return out


def fold_scores(run: Path, train_path: str) -> list[dict]:
    import numpy as np

    from rekit import rundir
    from rekit.data.labels import LabelMap
    from rekit.data.readers import read_records
    from rekit.metrics import evaluate

    records, _ = read_records(train_path)
    label_map = LabelMap.load(run / "labels.json")
    y = np.asarray([label_map.label2id[r.label] for r in records])
    rows = []
    for name, idx, raw, con, allowed in constrained_oof(rundir.fold_dirs(run), records, label_map):
        raw_m, con_m = evaluate(y[idx], raw, label_map), evaluate(y[idx], con, label_map)
        rows.append({"fold": name, "rows": len(idx),
                     "raw": {k: round(float(raw_m[k]), 2) for k in ("micro_f1", "auprc")},
                     "constrained": {k: round(float(con_m[k]), 2) for k in ("micro_f1", "auprc")},
                     "argmax_changed": int((raw.argmax(1) != con.argmax(1)).sum()),
                     "gold_ruled_out": int((~allowed[np.arange(len(idx)), y[idx]]).sum())})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a finished `rekit train` run directory")
    p.add_argument("--train", required=True, help="the training file the run was trained on")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    rows = fold_scores(args.run, args.train)
    print("| fold | held-out rows | micro-F1 raw -> constrained | AUPRC raw -> constrained | argmax changed "
          "| gold label ruled out |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['fold']} | {r['rows']:,} | {r['raw']['micro_f1']:.2f} -> {r['constrained']['micro_f1']:.2f} | "
              f"{r['raw']['auprc']:.2f} -> {r['constrained']['auprc']:.2f} | {r['argmax_changed']} | {r['gold_ruled_out']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
