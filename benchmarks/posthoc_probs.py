"""Post-hoc checks on a quality run's saved probabilities (`klue_re_quality.py --save-probs`), on a CPU.

Every check is chosen on the out-of-fold rows (training data) and reported on dev beside it:

  - the ensembles: the recipe's folds, --variant's folds, both averaged, and each fold alone;
  - a weight on the no-relation class before the argmax (the OOF-best weight, and a sweep);
  - a softmax temperature (the OOF-best by AUPRC, and a sweep);
  - the geometric instead of the arithmetic mean of the members;
  - the OOF micro-F1 reweighted to dev's label mix as EM estimates it from the unlabeled dev inputs;
  - the OOF scores on the rows whose sentence is unique in train, and on the others.

    python benchmarks/posthoc_probs.py OUT/probs.npz --train out/klue-re/train.csv [--json OUT/posthoc.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WEIGHTS = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0)
TEMPERATURES = (0.7, 1.0, 1.5, 2.0, 3.0)


def scorer(train_csv: str):
    from rekit.data.labels import LabelMap
    from rekit.data.readers import read_records
    from rekit.metrics import evaluate

    records, _ = read_records(train_csv)
    label_map = LabelMap.infer([x.label for x in records])

    def score(y, probs) -> list[float]:
        m = evaluate(y, probs, label_map)
        return [round(float(m["micro_f1"]), 2), round(float(m["auprc"]), 2)]
    return score, label_map, [x.sentence for x in records]


def unique_sentence_oof(z, score, sentences: list[str]) -> dict:
    """Each run's OOF scores on the training rows whose sentence no other row has (no sentence shared
    across folds), beside the other rows."""
    from collections import Counter

    count = Counter(sentences)
    alone = np.array([count[x] == 1 for x in sentences])
    res = {"rows": int(alone.sum())}
    for name, prefix in (("recipe", "oof_"), ("variant", "var_oof_")):
        if f"{prefix}probs" in z.files:
            p, y = oof(z, prefix)
            res[name] = {part: score(y[m], p[m]) if m.any() else None for part, m in (("unique", alone), ("shared", ~alone))}
    return res


def oof(z, prefix: str):
    """(probs, labels) of one run's out-of-fold rows in training-row order, or None."""
    if f"{prefix}probs" not in z.files:
        return None
    order = np.argsort(z[f"{prefix}index"])
    return z[f"{prefix}probs"][order], z[f"{prefix}y"][order]


def members(z, kind: str) -> list[np.ndarray]:
    k, out = 0, []
    while f"dev_{kind}{k}" in z.files:
        out.append(z[f"dev_{kind}{k}"])
        k += 1
    return out


def ensembles(z, score) -> dict:
    dy, rec, var = z["dev_y"], members(z, "fold"), members(z, "var_fold")
    a, b = oof(z, "oof_"), oof(z, "var_oof_")
    res = {"recipe": {"dev": score(dy, np.mean(rec, 0)), "oof": score(a[1], a[0])},
           "folds_dev": [score(dy, p) for p in rec]}
    if var:
        res["variant"] = {"dev": score(dy, np.mean(var, 0)), "oof": score(b[1], b[0]) if b else None}
        res["both"] = {"dev": score(dy, np.mean(rec + var, 0)), "oof": score(a[1], (a[0] + b[0]) / 2) if b else None}
        res["variant_folds_dev"] = [score(dy, p) for p in var]
        res["fold_pairs_dev"] = [score(dy, (p + q) / 2) for p, q in zip(rec, var)]
    if "dev_student" in z.files:
        res["student_dev"] = score(dy, z["dev_student"])
    return res


def shifted_oof(z, neg: int) -> dict:
    """Each run's OOF micro-F1 with every training row weighted by est(y) / train(y): est is the label
    mix of dev re-estimated by EM from the recipe ensemble's dev probabilities (no dev labels). Does
    label shift alone explain why dev ranks models otherwise than the OOF rows?"""
    from rekit.adapt import em_priors, label_prior

    op, oy = oof(z, "oof_")
    prior = label_prior(oy, op.shape[1])
    est = em_priors(np.mean(members(z, "fold"), 0), prior)[1]
    runs = {"recipe": op, **({"variant": oof(z, "var_oof_")[0]} if "var_oof_probs" in z.files else {})}
    return {"estimated_no_relation_share": round(float(est[neg]), 4),
            **{name: weighted_micro_f1(oy, p, (est / prior)[oy], neg) for name, p in runs.items()}}


def weighted_micro_f1(y, probs, w, neg: int) -> float:
    """Micro-F1 over the labels other than `neg` (as KLUE's), each row counted with weight w."""
    from rekit.metrics import micro_f1

    return round(micro_f1(y, probs.argmax(1), probs.shape[1], neg, sample_weight=w), 2)


def no_relation_weight(probs, w: float, neg: int):
    q = probs.copy()
    q[:, neg] *= w
    return q


def tempered(probs, t: float):
    q = np.exp(np.log(np.clip(probs, 1e-12, None)) / t)
    return q / q.sum(1, keepdims=True)


def sweep(z, score, fn, values, pick: int) -> dict:
    """fn(probs, value) on the recipe's OOF rows and its dev ensemble; the value chosen on OOF (by
    micro-F1 if pick == 0, AUPRC if 1)."""
    (op, oy), dev = oof(z, "oof_"), np.mean(members(z, "fold"), 0)
    rows = {str(v): {"oof": score(oy, fn(op, v)), "dev": score(z["dev_y"], fn(dev, v))} for v in values}
    best = max(rows, key=lambda v: (rows[v]["oof"][pick], -abs(float(v) - 1.0)))
    return {"chosen_on_oof": best, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("probs", help="probs.npz written by klue_re_quality.py --save-probs")
    p.add_argument("--train", required=True, help="the training file of that run (for the label order)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    z = np.load(args.probs, allow_pickle=False)
    score, label_map, sentences = scorer(args.train)
    neg = label_map.label2id.get("no_relation", 0)
    rec = members(z, "fold")
    geo = np.exp(np.mean([np.log(np.clip(q, 1e-12, None)) for q in rec], 0))
    res = {"ensembles": ensembles(z, score),
           "no_relation_weight": sweep(z, score, lambda q, w: no_relation_weight(q, w, neg), WEIGHTS, 0),
           "temperature": sweep(z, score, tempered, TEMPERATURES, 1),
           "geometric_mean_dev": score(z["dev_y"], geo / geo.sum(1, keepdims=True)),
           "label_shift_weighted_oof_micro_f1": shifted_oof(z, neg),
           "unique_sentence_oof": unique_sentence_oof(z, score, sentences)}
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
