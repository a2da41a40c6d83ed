"""Multi-GPU scaling of `rekit train` through torchrun: DDP and fold-parallel vs one GPU.

Every row is a real `rekit train` command (the product, not a model of it) on the same data and
the same local model directory (random init, tokenizer trained once):

  1gpu            one process, K folds one after another
  folds-N         torchrun N processes, --parallel folds (fold k on GPU k % N)
  ddp-N-weak      torchrun N processes, --parallel ddp, per-GPU batch as in 1gpu (global batch x N)
  ddp-N-strong    torchrun N processes, --parallel ddp, the same global batch as 1gpu

Reported: steady training samples/s (metrics.jsonl rows after each fold's first evaluation,
which holds compilation and warm-up), wall time of the whole command (time to finish K folds),
and scaling efficiency = rate(N) / (N * rate(1)), time-efficiency = T(1) / (N * T(N)).

  python benchmarks/scaling.py --out results/ --gpus 2 --data out/klue-re/train.csv --compile graphs  # 2-GPU host
  python benchmarks/scaling.py --out /tmp/s --smoke               # CPU, 2 gloo processes, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data" / "klue-re" / "train.csv"


def make_model_dir(args, out: Path) -> Path:
    from transformers import BertModel

    from rekit.data.readers import read_records
    from rekit.modeling import scratch

    records, _ = read_records(args.data, None)
    tok = scratch.train_tokenizer([r.sentence for r in records[: args.rows]], args.vocab)
    torch.manual_seed(0)
    d = out / "model"
    BertModel(scratch.encoder_config(args.size, len(tok), 512)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def steady_rate(run: Path, concurrent_folds: bool = False) -> tuple[float, int]:
    """Samples/s over all evaluation segments except each fold's first (compile, warm-up).

    Folds one after another (1gpu, ddp): total samples / total seconds. Folds side by side on
    their own GPUs (folds-N): the sum of the folds' own rates, since their seconds overlap."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    per_fold: dict[int, list[float]] = {}
    for r in rows:
        if r["fold"] not in per_fold:
            per_fold[r["fold"]] = [0, 0.0]
            continue
        per_fold[r["fold"]][0] += r["train_samples"]
        per_fold[r["fold"]][1] += r["train_seconds"]
    samples = sum(int(n) for n, _ in per_fold.values())
    if concurrent_folds:
        rate = sum(n / t for n, t in per_fold.values() if t > 0)
    else:
        seconds = sum(t for _, t in per_fold.values())
        rate = samples / seconds if seconds else float("nan")
    return (rate if rate else float("nan")), samples


def run_one(name, launcher, train_args, out: Path, env, concurrent_folds: bool = False) -> dict:
    run = out / "".join(c if c.isalnum() or c in "-_" else "_" for c in name)  # a plain directory name
    cmd = [*launcher, "-m", "rekit.cli", "train", *train_args, "--output", str(run), "--overwrite"]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    (out / f"{run.name}.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        return {"name": name, "error": (p.stderr or p.stdout)[-600:], "wall_s": round(wall, 1)}
    rate, samples = steady_rate(run, concurrent_folds)
    summary = json.loads((run / "summary.json").read_text())
    return {"name": name, "samples_per_s": round(rate, 1), "steady_samples": samples, "wall_s": round(wall, 1),
            "cv_micro_f1": round(summary["cv"]["micro_f1"], 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--gpus", type=int, default=max(1, torch.cuda.device_count()))
    p.add_argument("--size", default="base", help="scratch size preset of the model (tiny/small/base)")
    p.add_argument("--rows", type=int, default=32470)
    p.add_argument("--folds", type=int, default=5, help="folds per run (the issue's time-to-finish is for 5)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--compile", default="off,graphs",
                   help="comma-separated --compile modes, each a set of rows (graph modes capture DDP's all-reduces "
                   "in the step graphs too)")
    p.add_argument("--only", default="1gpu,folds,ddp-weak,ddp-strong")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.rows, args.vocab, args.eval_every, args.gpus, args.folds = "tiny", 400, 800, 4, 2, 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        from rekit.data.readers import write_csv
        from rekit.data.synthetic import make_corpus

        args.data = args.out / "train.csv"
        write_csv(make_corpus(args.rows, seed=0), args.data)
    model_dir = make_model_dir(args, args.out)
    common = ["--train", str(args.data), "--model", str(model_dir), "--folds", str(args.folds),
              "--epochs", str(args.epochs), "--eval-every", str(args.eval_every), "--max-train-samples", str(args.rows),
              "--no-progress", "--save-every", "-1", "--lr", "5e-5"]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.smoke:
        env["OMP_NUM_THREADS"] = "1"
    n = args.gpus
    torchrun = ["torchrun", "--standalone", "--nproc-per-node", str(n)]
    bs = args.batch_size
    plan = {
        "1gpu": ([sys.executable], ["--batch-size", str(bs)], {"CUDA_VISIBLE_DEVICES": "0"} if torch.cuda.is_available() else {}),
        "folds": (torchrun, ["--batch-size", str(bs), "--parallel", "folds"], {}),
        "ddp-weak": (torchrun, ["--batch-size", str(bs * n), "--parallel", "ddp"], {}),
        "ddp-strong": (torchrun, ["--batch-size", str(bs), "--parallel", "ddp"], {}),
    }
    meta = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (gloo)", "gpus": n,
            "size": args.size, "rows": args.rows, "folds": args.folds, "epochs": args.epochs, "batch_size": bs,
            "compile": args.compile, "torch": torch.__version__,
            "command": " ".join(["python", "benchmarks/scaling.py", *(argv if argv is not None else sys.argv[1:])])}
    print(json.dumps(meta), flush=True)
    results = []
    for mode in args.compile.split(","):
        for key in args.only.split(","):
            launcher, extra, env_extra = plan[key]
            name = key if key == "1gpu" else f"{key.split('-')[0]}-{n}" + (f"-{key.split('-')[1]}" if "-" in key else "")
            r = run_one(f"{name} ({mode})", launcher, [*common, "--compile", mode, *extra], args.out, {**env, **env_extra},
                        concurrent_folds=key == "folds")
            r["mode"], r["key"] = mode, key
            results.append(r)
            print(json.dumps(r), flush=True)
            (args.out / "scaling.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    bases = {r["mode"]: r for r in results if r["key"] == "1gpu" and "error" not in r}
    lines = [f"Machine: {meta['device']} x{n}; torch {meta['torch']}; scratch-{args.size} BERT; {args.rows} rows, "
             f"{args.folds} folds, {args.epochs} epoch(s), batch {bs} per process (1gpu/folds/ddp-weak); "
             "efficiencies against the 1-GPU row of the same --compile mode.", "",
             "| run | samples/s (steady) | scaling efficiency | wall s (all folds) | time efficiency | CV micro-F1 |",
             "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | failed | | {r['wall_s']} | | |")
            continue
        eff = teff = ""
        base = bases.get(r["mode"])
        if base and r is not base:
            eff = f"{100 * r['samples_per_s'] / (n * base['samples_per_s']):.0f} %"
            teff = f"{100 * base['wall_s'] / (n * r['wall_s']):.0f} %"
        lines.append(f"| {r['name']} | {r['samples_per_s']:,} | {eff} | {r['wall_s']} | {teff} | {r['cv_micro_f1']} |")
    (args.out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
