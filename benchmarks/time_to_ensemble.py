"""Wall time from start to a finished K-fold ensemble on one GPU (issue 17), side by side:

  hf_tuned    HF Trainer tuned (bf16, dynamic padding, length grouping, fused AdamW), folds in
              sequence: ONE fold is trained and evaluated, its time multiplied by K (said in the table)
  sequential  `rekit train --concurrent-folds 1`: the product's whole run, folds one after another
  concurrent  `rekit train --concurrent-folds N` (default auto): folds at the same time, one stream each

Every system trains the same rows (the first --rows of KLUE-RE train.csv), the same model shape
(random init: no hub here) from a local model directory, 1 epoch per fold, batch 32, the same
scratch tokenizer. rekit's runs are real `rekit train` runs (train_cv: encoding, K folds with an
evaluation and a saved best checkpoint each, out-of-fold merge, summary), timed from the call to
the finished run directory. Reported: wall seconds, aggregate training samples/s (every fold's
training rows / wall), peak GPU GiB, each fold's final training loss (concurrent folds must match
sequential ones within noise: same batches and schedule, other dropout masks).

  python benchmarks/time_to_ensemble.py --out OUT                       # RoBERTa-large shape, H200
  python benchmarks/time_to_ensemble.py --out OUT --shape base
  python benchmarks/time_to_ensemble.py --out /tmp/t --smoke            # CPU, seconds (the test runs this)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "src"))

import throughput  # noqa: E402 (after the sys.path insert: shapes, data, HF helpers)
from rekit.config import RunConfig  # noqa: E402
from rekit.data.readers import write_csv  # noqa: E402
from rekit.training.cv import train_cv  # noqa: E402
from rekit.training.folds import make_folds  # noqa: E402


def prepare(args) -> tuple[Path, Path, list, object]:
    """The training CSV (the first --rows rows) and a local model directory of the shape."""
    from transformers import RobertaModel

    records, label_map, tok, _ = throughput.load_data(args)
    records = records[: args.rows]
    data = args.work / "train.csv"
    write_csv(records, data)
    config = throughput.roberta_config(args, tok, len(label_map))
    model_dir = args.work / f"model-{args.shape}"
    torch.manual_seed(0)
    encoder = RobertaModel(config, add_pooling_layer=False)
    encoder.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    args.tokenizer, args.params_m = tok, round(sum(x.numel() for x in encoder.parameters()) / 1e6, 1)
    return data, model_dir, records, config


PHASES = {  # where a rekit run's wall time goes (--breakdown); the rest is training steps (graph capture included)
    "read + encode": ("rekit.training.cv", "read_training_file", "rekit.encoding.tokenize", "REEncoder.encode"),
    "build fold (model init, features)": ("rekit.training.cv", "FoldRunner.build"),
    "trainer setup (to device, executor)": ("rekit.training.loop", "FoldTrainer.__init__"),
    "evaluate": ("rekit.training.loop", "FoldTrainer.evaluate"),
    "save training state": ("rekit.training.checkpoint", "save_state"),
    "save best weights": ("rekit.modeling.model", "REModel.save_weights"),
    "fold results (oof, clear state)": ("rekit.training.cv", "FoldRunner.finish"),
    "merge (oof.csv, summary, cards)": ("rekit.training.cv", "finalize"),
}


class Breakdown:
    """Seconds spent in each PHASES function during a run (GPU work queued before a phase is
    synchronised at its entry, so it counts as training); nested calls count once, outermost."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.depth, self.saved = 0, []

    def timed(self, phase: str, fn):
        def wrapper(*a, **k):
            if self.depth:
                return fn(*a, **k)
            throughput.sync()
            t0, self.depth = time.perf_counter(), 1
            try:
                return fn(*a, **k)
            finally:
                throughput.sync()
                self.depth = 0
                self.seconds[phase] += time.perf_counter() - t0
        return wrapper

    def __enter__(self):
        import importlib

        for phase, spec in PHASES.items():
            for module, name in zip(spec[::2], spec[1::2]):
                owner = importlib.import_module(module)
                *path, attr = name.split(".")
                for part in path:
                    owner = getattr(owner, part)
                self.saved.append((owner, attr, owner.__dict__[attr]))
                setattr(owner, attr, self.timed(phase, getattr(owner, attr)))
        return self

    def __exit__(self, *exc):
        for owner, attr, fn in reversed(self.saved):
            setattr(owner, attr, fn)

    def report(self, wall: float) -> dict:
        out = {k: round(v, 1) for k, v in self.seconds.items()}
        out["training steps (rest)"] = round(wall - sum(self.seconds.values()), 1)
        return out


def run_rekit(args, data: Path, model_dir: Path, concurrent: str) -> dict:
    out = args.work / f"run-{concurrent}"
    cfg = RunConfig.from_dict({}, {
        "train": str(data), "model": str(model_dir), "output": str(out), "overwrite": True, "folds": args.folds,
        "epochs": 1, "batch_size": args.batch_size, "lr": args.lr, "max_length": args.max_length,
        "progress": False, "concurrent_folds": concurrent, "device": args.device})
    throughput.reset_memory()
    with contextlib.ExitStack() as stack:
        phases = stack.enter_context(Breakdown()) if args.breakdown else None
        t0 = time.perf_counter()
        summary = train_cv(cfg, echo=lambda *a, **k: print(*a, flush=True))
        wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    last = {r["fold"]: r for r in rows}
    trained = sum(f["n_train"] for f in summary["folds"])
    result = {"system": "rekit concurrent" if concurrent != "1" else "rekit sequential",
              "concurrent_folds": concurrent, "wall_s": round(wall, 1), "samples_per_s": round(trained / wall, 1),
              "peak_gib": throughput.peak_gib(), "extrapolated": False,
              "final_loss": [round(last[k]["train_loss"], 4) for k in sorted(last)],
              "cv_micro_f1": round(summary["cv"]["micro_f1"], 2)}
    if phases:
        result["breakdown_s"] = phases.report(wall)
    shutil.rmtree(out, ignore_errors=True)  # a large model's K checkpoints: gigabytes
    return result


def run_hf_fold(args, records: list, config) -> dict:
    """HF Trainer tuned on fold 1 of the same split (train 1 epoch, predict its validation rows);
    the wall time of the K-fold ensemble is K times this fold's."""
    from transformers import (
        DataCollatorWithPadding,
        RobertaForSequenceClassification,
        Trainer,
        TrainingArguments,
    )

    from rekit.data.labels import LabelMap
    from rekit.encoding.tokenize import REEncoder

    throughput.reset_memory()
    t0 = time.perf_counter()
    label_map = LabelMap.infer([r.label for r in records])
    feats = REEncoder(args.tokenizer, "typed_entity_marker_punct", args.max_length).encode(records, label_map)
    train_idx, valid_idx = make_folds([r.label for r in records], args.folds, "stratified", 0.1, 42).splits[0]

    def rows(idx):
        return throughput._Rows([{"input_ids": feats.input_ids[i], "labels": feats.labels[i]} for i in idx])

    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config)
    import inspect

    grouping = ({"train_sampling_strategy": "group_by_length"}
                if "train_sampling_strategy" in inspect.signature(TrainingArguments.__init__).parameters
                else {"group_by_length": True})
    cuda = args.device != "cpu" and torch.cuda.is_available()
    steps = -(-len(train_idx) // args.batch_size)
    targs = TrainingArguments(output_dir=str(args.work / "hf"), per_device_train_batch_size=args.batch_size,
                              per_device_eval_batch_size=256, num_train_epochs=1, learning_rate=args.lr,
                              warmup_steps=int(0.1 * steps), save_strategy="no", report_to=[], disable_tqdm=True,
                              seed=42, bf16=cuda, optim="adamw_torch_fused" if cuda else "adamw_torch",
                              dataloader_pin_memory=cuda, use_cpu=not cuda, logging_steps=max(1, steps // 10),
                              **grouping)
    collator = DataCollatorWithPadding(tokenizer=args.tokenizer, pad_to_multiple_of=8)
    trainer = Trainer(model=model, args=targs, train_dataset=rows(train_idx), data_collator=collator)
    trainer.train()
    trainer.predict(rows(valid_idx))
    throughput.sync()
    fold_s = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    wall = fold_s * args.folds
    return {"system": "HF Trainer tuned", "concurrent_folds": "1", "wall_s": round(wall, 1),
            "samples_per_s": round(len(train_idx) * args.folds / wall, 1), "peak_gib": throughput.peak_gib(),
            "extrapolated": True, "fold_s": round(fold_s, 1), "final_loss": [round(losses[-1], 4)] if losses else []}


def markdown(results: list[dict], meta: dict) -> str:
    seq = next((r["wall_s"] for r in results if r["system"] == "rekit sequential"), None)
    lines = [f"{meta['device']}, {meta['shape']} shape ({meta['params_m']}M parameters), {meta['rows']:,} rows, "
             f"{meta['folds']} folds x 1 epoch, batch {meta['batch_size']}",
             "", "| system | folds at once | wall s | vs rekit sequential | samples/s | peak GiB | final loss per fold |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['system']} | | error: {r['error'][:80]} | | | | |")
            continue
        note = f" (1 fold x {meta['folds']})" if r.get("extrapolated") else ""
        ratio = f"{r['wall_s'] / seq:.2f}x" if seq else ""
        lines.append(f"| {r['system']}{note} | {r['concurrent_folds']} | {r['wall_s']:.1f} | {ratio} | "
                     f"{r['samples_per_s']:,.1f} | {r['peak_gib']} | {', '.join(map(str, r['final_loss']))} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/rekit-time-to-ensemble"))
    p.add_argument("--smoke", action="store_true", help="tiny shape, synthetic data, 2 folds, CPU (seconds)")
    p.add_argument("--data", type=Path, default=throughput.DATA)
    p.add_argument("--shape", choices=throughput.SHAPES, default="large")
    p.add_argument("--systems", default="hf_tuned,sequential,concurrent")
    p.add_argument("--concurrent", default="auto", help="--concurrent-folds of the concurrent system")
    p.add_argument("--rows", type=int, default=10000, help="the first ROWS rows of the training file, for every system")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--device", default="auto")
    p.add_argument("--breakdown", action="store_true", help="also time rekit's phases (read, build, evaluate, saves)")
    args = p.parse_args(argv)
    if args.smoke:
        args.shape, args.rows, args.folds, args.vocab, args.max_length = "tiny", 160, 2, 800, 96
        args.device, args.concurrent = "cpu", "2"
        args.steps, args.batch_size = 12, 16  # load_data's synthetic corpus size
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    data, model_dir, records, config = prepare(args)
    cuda = args.device != "cpu" and torch.cuda.is_available()
    meta = {"device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()})",
            "torch": torch.__version__, "shape": args.shape, "rows": len(records), "folds": args.folds,
            "batch_size": args.batch_size, "prep_s": round(time.time() - t, 1),
            "params_m": args.params_m,
            "mean_tokens": round(float(np.mean([len(r.sentence) for r in records])), 1),
            "command": " ".join(["python", "benchmarks/time_to_ensemble.py", *(argv if argv is not None else sys.argv[1:])])}
    print(json.dumps(meta), flush=True)
    results: list[dict] = []
    systems = {"hf_tuned": lambda: run_hf_fold(args, records, config),
               "sequential": lambda: run_rekit(args, data, model_dir, "1"),
               "concurrent": lambda: run_rekit(args, data, model_dir, args.concurrent)}
    for name in args.systems.split(","):
        try:
            r = systems[name]()
        except Exception as e:  # noqa: BLE001 - one failing system must not lose the others' numbers
            import traceback

            traceback.print_exc()
            r = {"system": name, "error": f"{type(e).__name__}: {e}"}
        results.append(r)
        print(json.dumps(r), flush=True)
        (args.out / f"time_to_ensemble_{args.shape}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    table = markdown(results, meta)
    (args.out / f"time_to_ensemble_{args.shape}.md").write_text(table)
    print(table)
    return results


if __name__ == "__main__":
    main()
