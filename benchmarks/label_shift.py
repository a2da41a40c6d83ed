"""Does prior adaptation help under label shift? A check that needs no dev labels.

Takes a trained fold model, rows of the training file it never saw (`--skip-first N`: the
model was trained on the first N rows only), and builds test sets from them with a chosen
no_relation share (KLUE-RE dev has about 60 %, train 29 %) by resampling per class. Reports
micro-F1 / AUPRC / accuracy of: the raw probabilities, EM prior adaptation, EM after a
temperature or BCTS calibration fit on the model's own out-of-fold (fold-validation) rows,
and the oracle re-weighting with the true test prior (an upper bound no real run has).

    python benchmarks/label_shift.py --model RUN/fold-0 --data train.csv --skip-first 6000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def shifted_sample(y: np.ndarray, no_rel: int, share: float, n: int, rng) -> np.ndarray:
    """Indices of n rows: `share` of them no_relation, the rest in the pool's relation mix."""
    neg, pos = np.flatnonzero(y == no_rel), np.flatnonzero(y != no_rel)
    k = int(round(n * share))
    return np.concatenate([rng.choice(neg, k, replace=k > len(neg)), rng.choice(pos, n - k, replace=n - k > len(pos))])


def main(argv: list[str] | None = None) -> int:
    from rekit import adapt, rundir
    from rekit.data.readers import read_records
    from rekit.ensemble import Ensemble
    from rekit.metrics import evaluate

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a fold model directory (with oof.safetensors)")
    p.add_argument("--data", required=True, help="the training file")
    p.add_argument("--skip-first", type=int, required=True, help="rows the model was trained/validated on")
    p.add_argument("--shares", type=float, nargs="+", default=[0.294, 0.6], help="no_relation shares to test")
    p.add_argument("--n", type=int, default=6000)
    p.add_argument("--max-rows", type=int, default=20000, help="unseen rows to predict (CPU time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    records, _ = read_records(args.data)
    ens = Ensemble([Path(args.model)], device="cpu")
    lm = ens.label_map_
    unseen = records[args.skip_first : args.skip_first + args.max_rows]
    probs = ens.predict_proba(unseen).astype(np.float64)
    y = np.asarray([lm.label2id[r.label] for r in unseen])
    seen_y = np.asarray([lm.label2id[r.label] for r in records[: args.skip_first]])
    prior = adapt.label_prior(seen_y, len(lm))
    idx, oof, _ = rundir.load_fold(Path(args.model))
    oof_y = seen_y[idx]
    t_only = adapt.fit_temperature(oof, oof_y)
    t, b = adapt.fit_bcts(oof, oof_y)
    no_rel = lm.label2id[lm.no_relation]
    rng = np.random.default_rng(args.seed)
    results = []
    for share in args.shares:
        pick = shifted_sample(y, no_rel, share, args.n, rng)
        P, Y = probs[pick], y[pick]
        true_prior = np.bincount(Y, minlength=len(lm)) / len(Y)
        variants = {
            "raw": P,
            "em": adapt.em_priors(P, prior)[0],
            "temperature+em": adapt.em_priors(adapt.apply_temperature(P, t_only), prior)[0],
            "bcts+em": adapt.em_priors(adapt.apply_bcts(P, t, b), prior)[0],
            "oracle prior": adapt.reweight(P, prior, true_prior),
        }
        for name, q in variants.items():
            m = evaluate(Y, q, lm)
            est = adapt.em_priors(P, prior)[1][no_rel] if name == "em" else None
            results.append({"no_relation_share": share, "variant": name, "micro_f1": round(m["micro_f1"], 2),
                            "auprc": round(m["auprc"], 2), "accuracy": round(m["accuracy"], 4),
                            **({"em_estimated_share": round(float(est), 3)} if est is not None else {})})
            print(json.dumps(results[-1]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
