"""ONNX export parity on KLUE-RE: PyTorch fp32 vs onnxruntime fp32 vs int8, same 5-fold ensemble.

Trains (or reuses) a 5-fold scratch-small run on the first --train-rows rows of the KLUE-RE
training file, exports it twice (`rekit export`, fp32 and --quantize), predicts the first --rows
dev rows with all three and reports: max |p_onnx - p_torch| over every probability, label
agreement with PyTorch, and micro-F1 / AUPRC of each (int8's change is its accuracy cost).

  python benchmarks/export_parity.py --out results/parity.json          # BENCHMARKS.md numbers
  python benchmarks/export_parity.py --train-rows 300 --epochs 1 --rows 50 --scratch-size tiny   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "klue-re"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default=str(DATA / "train.csv"))
    p.add_argument("--dev", default=str(DATA / "dev.csv"))
    p.add_argument("--run", default="/tmp/rekit-parity/run", help="run directory (reused if it has finished)")
    p.add_argument("--train-rows", type=int, default=3000)
    p.add_argument("--rows", type=int, default=500, help="dev rows to compare on")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--scratch-size", default="small")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--train-device", default="cpu",
                   help="where the run trains (cuda: a GPU host trains a useful model in seconds); the parity "
                   "itself always compares on the CPU, in fp32")
    p.add_argument("--out", help="write the results as JSON here")
    return p.parse_args(argv)


def ensure_run(args) -> Path:
    import rekit

    run = Path(args.run)
    summary = run / "summary.json"
    if summary.is_file() and json.loads(summary.read_text())["status"] == "finished":
        return run
    rekit.train(train=args.train, output=run, model="scratch", folds=args.folds, overwrite=True,
                scratch_size=args.scratch_size, scratch_vocab_size=8000, max_length=args.max_length,
                epochs=args.epochs, lr=5e-4, batch_size=32, max_train_samples=args.train_rows, device=args.train_device)
    return run


def main(argv=None) -> dict:
    args = parse_args(argv)
    import rekit
    from rekit.data.readers import ReadOptions, read_records
    from rekit.export.onnx import export_run
    from rekit.metrics import evaluate

    t0 = time.time()
    run = ensure_run(args)
    train_s = time.time() - t0
    exports = {}
    for name, quantize in (("onnx-fp32", False), ("onnx-int8", True)):
        exports[name] = export_run(run, run.parent / name, quantize=quantize, overwrite=True, echo=lambda *a: None)
    records, _ = read_records(args.dev, ReadOptions(limit=args.rows))
    torch_model = rekit.load(run, device="cpu", batch_size=64)
    lm = torch_model.backend.label_map_
    known = [r for r in records if r.label in lm.label2id]
    y = np.asarray([lm.label2id[r.label] for r in known])
    probs = {"torch-fp32": torch_model.predict_proba(known)}
    for name, d in exports.items():
        probs[name] = rekit.load(d, batch_size=64).predict_proba(known)
    ref = probs["torch-fp32"]
    result = {"rows": len(known), "run": str(run), "train_rows": args.train_rows, "epochs": args.epochs,
              "train_device": args.train_device,
              "folds": args.folds, "scratch_size": args.scratch_size, "train_seconds": round(train_s, 1),
              "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "systems": {}}
    for name, p in probs.items():
        scores = evaluate(y, p, lm)
        result["systems"][name] = {
            "max_abs_diff_vs_torch": float(np.abs(p - ref).max()),
            "label_agreement_vs_torch": float((p.argmax(1) == ref.argmax(1)).mean()),
            "micro_f1": round(float(scores["micro_f1"]), 3), "auprc": round(float(scores["auprc"]), 3)}
    s = result["systems"]
    result["int8_micro_f1_change"] = round(s["onnx-int8"]["micro_f1"] - s["torch-fp32"]["micro_f1"], 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
