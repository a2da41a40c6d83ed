"""`rekit demo`: the whole workflow offline, on a generated corpus, in a few CPU minutes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rekit.config import RunConfig
from rekit.errors import ConfigError

MARKER_FILE = ".rekit-demo"

# Small enough for 2 CPU cores, large enough to learn the synthetic relations.
DEMO_SETTINGS = {
    "model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 2000, "max_length": 96,
    "folds": 2, "epochs": 6, "lr": 1e-3, "batch_size": 32, "warmup_ratio": 0.1, "seed": 7,
}


def run_demo(out: Path, progress: bool = True, echo=print) -> dict:
    from rekit.data.readers import read_records, write_csv
    from rekit.data.synthetic import make_splits
    from rekit.ensemble import Ensemble
    from rekit.predict import score, write_predictions
    from rekit.training.cv import train_cv

    start = time.time()
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER_FILE).exists():
            raise ConfigError(f"{out} exists and was not made by `rekit demo`; pass another --output")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).write_text("made by rekit demo; safe to delete\n", encoding="utf-8")

    train, test = make_splits(seed=0)
    write_csv(train, out / "train.csv")
    write_csv(test, out / "test.csv")
    echo(f"generated a synthetic Korean RE corpus: {len(train)} train / {len(test)} test rows in {out}")

    run = out / "run"
    cfg = RunConfig.from_dict({}, {**DEMO_SETTINGS, "train": str(out / "train.csv"), "output": str(run),
                                   "progress": progress})
    summary = train_cv(cfg, echo=echo)

    ens = Ensemble.load(run)
    records, _ = read_records(out / "test.csv")
    probs = ens.predict_proba(records)
    write_predictions(out / "submission.csv", records, probs, ens.label_map_)
    report = score(records, probs, ens.label_map_)
    elapsed = time.time() - start
    echo(f"test set ({len(records)} rows), {len(ens.dirs)}-fold ensemble: micro-F1 {report['micro_f1']:.2f}  "
         f"AUPRC {report['auprc']:.2f}  accuracy {report['accuracy']:.4f}")
    echo(f"done in {elapsed:.0f} s. Everything is in {out}/:")
    echo("  train.csv, test.csv     the generated data (community CSV layout)")
    echo("  run/                    the run directory: config.yaml, fold-*/ models, metrics.jsonl, oof.csv, summary.json")
    echo("  submission.csv          id,pred_label,probs for test.csv")
    echo(f"try: rekit evaluate {run} --input {out / 'test.csv'}")
    return {"summary": summary, "test": report, "seconds": elapsed}
