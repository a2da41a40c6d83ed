"""CPU inference, side by side in one run: PyTorch eager vs onnxruntime fp32 vs int8, one ensemble.

For a finished run (default: the 5-fold scratch-small run that benchmarks/export_parity.py
trains), exports it (fp32 and int8, reused if present) and measures on KLUE-RE dev rows:
  samples/s   predict_proba over --rows examples in batches of 64, end to end (tokenising
              included), best of --repeats rounds after a warm-up (the systems take turns in each round);
              `encode_s` is the tokenising alone
  p50/p99 ms  latency of predict_proba on one example, over --single calls
All three use --threads intra-op threads (the machine's cores by default). The load average
is recorded: on a shared machine the absolute numbers move, the ratios less.

  python benchmarks/export_parity.py --out results/parity.json      # trains the run first
  python benchmarks/cpu_inference.py --out results/cpu_inference.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "klue-re"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="/tmp/rekit-parity/run")
    p.add_argument("--dev", default=str(DATA / "dev.csv"))
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--single", type=int, default=100, help="one-example calls for the latency percentiles")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out")
    return p.parse_args(argv)


def throughput(systems: dict, records, repeats: int) -> dict:
    """Best seconds per system over `repeats` rounds; the systems alternate within each round, so
    a change in the machine's load hits all of them alike instead of whichever ran last."""
    for model in systems.values():
        model.predict_proba(records[:64])  # warm-up: first-call allocations, session setup
    best = dict.fromkeys(systems, float("inf"))
    for _ in range(repeats):
        for name, model in systems.items():
            t = time.perf_counter()
            model.predict_proba(records)
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def latency(model, records, single: int) -> dict:
    lat = []
    for i in range(single):
        r = records[i % len(records)]
        t = time.perf_counter()
        model.predict_proba([r])
        lat.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    import rekit
    from rekit.data.readers import ReadOptions, read_records
    from rekit.export.onnx import export_run

    run = Path(args.run)
    records, _ = read_records(args.dev, ReadOptions(limit=args.rows))
    exports = {}
    for name, quantize in (("onnx-fp32", False), ("onnx-int8", True)):
        d = run.parent / name
        if not (d / "rekit-onnx.json").is_file():
            export_run(run, d, quantize=quantize, overwrite=True, echo=lambda *a: None)
        exports[name] = d
    import torch

    torch.set_num_threads(args.threads)
    systems = {"pytorch-eager": rekit.load(run, device="cpu", batch_size=64)}
    for name, d in exports.items():
        systems[f"onnxruntime-{name[5:]}"] = rekit.load(d, batch_size=64, threads=args.threads)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "threads": args.threads,
              "rows": len(records), "folds": len(systems["pytorch-eager"].backend.dirs), "batch_size": 64,
              "load_avg_before": [round(x, 2) for x in os.getloadavg()], "systems": {}}
    enc = systems["onnxruntime-fp32"].backend.encoder
    t = time.perf_counter()
    enc.encode(records)
    result["encode_s"] = round(time.perf_counter() - t, 3)
    best = throughput(systems, records, args.repeats)
    for name, model in systems.items():
        result["systems"][name] = {"samples_per_s": round(len(records) / best[name], 1),
                                   "batch_seconds": round(best[name], 3), **latency(model, records, args.single)}
        print(name, result["systems"][name], file=sys.stderr)
    base = result["systems"]["pytorch-eager"]["samples_per_s"]
    for s in result["systems"].values():
        s["speedup_vs_eager"] = round(s["samples_per_s"] / base, 2)
    result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
