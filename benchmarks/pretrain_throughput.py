"""Where a `rekit pretrain` step's time goes, per encoder size and batch size, on one GPU.

For each (size, batch) it times, on the KLUE-RE sentences (train + dev, as the quality recipe
pretrains on them):
  host_rowloop_ms   preparing one batch on the host the way rekit did until 2026-12-03 (a Python
                    loop over the rows; kept here as the baseline)
  host_ms           the same batch with rekit's vectorised collation (mlm_data.PackedRows)
  step_ms           a whole pretraining step as `rekit pretrain` runs it (collate, copy, CUDA-graph
                    replay, LR step), after warm-up: the pace a run actually gets
  gpu_ms            the GPU alone: one batch of a typical shape replayed (no host work between)
and samples/s and tokens/s of the whole step. When step_ms is close to gpu_ms the GPU sets the
pace; when it is well above, the host does. Each setting runs with both MLM heads:
  masked   rekit's: vocabulary logits at the masked positions only, padded to a size fixed by the
           batch shape so the step stays one CUDA graph
  all      the baseline (rekit until 2026-12-03): logits at every position, unmasked ones ignored

  python benchmarks/pretrain_throughput.py --out OUT                  # one GPU, medium and base
  python benchmarks/pretrain_throughput.py --out /tmp/p --smoke       # seconds on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rekit.config import PretrainSettings  # noqa: E402
from rekit.data.readers import read_records  # noqa: E402
from rekit.data.synthetic import make_splits  # noqa: E402
from rekit.encoding.collate import to_device  # noqa: E402
from rekit.modeling import scratch  # noqa: E402
from rekit.modeling.mlm_data import (  # noqa: E402
    IGNORE,
    encode_corpus,
    unique_texts,
)
from rekit.runtime import autocast_dtype, resolve_device, seed_everything  # noqa: E402
from rekit.training.mlm import MLMStep  # noqa: E402
from rekit.training.pretrain import _trainer, scratch_mlm_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "klue-re"


def rowloop_batch(corpus, idx, multiple_of: int, pad_id: int):
    """The baseline: padding a batch with a Python loop over its rows (rekit's code until 2026-12-03)."""
    width = -(-max(len(corpus.input_ids[i]) for i in idx) // multiple_of) * multiple_of
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    words = torch.full((len(idx), width), -1, dtype=torch.long)
    for row, i in enumerate(idx):
        n = len(corpus.input_ids[i])
        ids[row, :n] = torch.as_tensor(corpus.input_ids[i])
        words[row, :n] = torch.as_tensor(corpus.word_ids[i])
    lengths = torch.as_tensor([len(corpus.input_ids[i]) for i in idx])
    return ids, words, (torch.arange(width)[None, :] < lengths[:, None]).long()


def all_positions_loss(model, batch) -> torch.Tensor:
    """The baseline head: vocabulary logits at every position (fixed shapes without padded targets)."""
    logits = model.cls(model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                       .last_hidden_state)
    labels = batch["labels"].reshape(-1)
    total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels,
                                              ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)


def host_ms(collate, batches, gen) -> tuple[float, float]:
    """ms per batch: the row-loop padding + masking, and rekit's collation (padding + masking)."""
    t = time.perf_counter()
    for idx in batches:
        _, words, _ = rowloop_batch(collate.corpus, idx, collate.multiple_of, collate.pad_id)
        collate.choose(words, gen)
    loop = (time.perf_counter() - t) / len(batches) * 1e3
    t = time.perf_counter()
    for idx in batches:
        collate(idx, gen)
    return loop, (time.perf_counter() - t) / len(batches) * 1e3


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(size: str, batch: int, head: str, tokenizer, corpus, args, device) -> dict:
    seed_everything(0)
    s = PretrainSettings(batch_size=batch, epochs=1000, progress=False, save_every=-1, device=str(device),
                         graphs=device.type == "cuda")
    model = scratch_mlm_model(tokenizer, size, max_positions=512)
    with tempfile.TemporaryDirectory() as work:
        t = _trainer(model, tokenizer, corpus, corpus.subset([]), s, Path(work), device,
                     autocast_dtype(s.precision, device), echo=lambda *a: None)
        if head == "all":
            t.step = MLMStep(model, t.step.optimizer, t.step.amp_dtype, s.max_grad_norm, device, t.step.graphs is not None,
                             all_positions_loss, graph_keys=("input_ids", "attention_mask", "labels"))
        t.start()
        steps = t.schedule.remaining(t.progress)
        sample = [next(steps) for _ in range(args.host_batches)]
        loop_ms, vec_ms = host_ms(t.collate, sample, t.gen)
        tokens, n = 0, 0
        for k, idx in enumerate(steps):  # warm-up (captures every common shape), then timed steps
            if k == args.warmup:
                sync(device)
                t0 = time.perf_counter()
            if k >= args.warmup:
                tokens += sum(len(corpus.input_ids[i]) for i in idx)
                n += 1
            t.train_step(idx)
            t.progress.step += 1
            if n == args.steps:
                break
        sync(device)
        step_s = (time.perf_counter() - t0) / n
        fixed = to_device(t.collate(sample[len(sample) // 2], t.gen), device)
        for _ in range(5):
            t.step.run(fixed)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps // 2):
            loss = t.step.run(fixed)
        sync(device)
        gpu_s = (time.perf_counter() - t0) / (args.steps // 2)
        stats = t.step.close()
    return {"size": size, "batch": batch, "head": head, "parameters": sum(p.numel() for p in model.parameters()),
            "host_rowloop_ms": round(loop_ms, 2), "host_ms": round(vec_ms, 2), "step_ms": round(step_s * 1e3, 2),
            "gpu_ms": round(gpu_s * 1e3, 2), "samples_per_s": round(batch / step_s, 1),
            "tokens_per_s": round(tokens / n / step_s, 1), "final_loss": round(float(loss), 3), "graphs": stats}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--train", default=str(SHARED / "train.csv"))
    p.add_argument("--extra", default=str(SHARED / "dev.csv"), help="more sentences (unlabeled use)")
    p.add_argument("--sizes", default="medium,base")
    p.add_argument("--batches", default="128,256,512")
    p.add_argument("--heads", default="masked,all", help="MLM heads to time (masked: rekit's; all: the baseline)")
    p.add_argument("--steps", type=int, default=300, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=400, help="steps before timing (graph captures happen here)")
    p.add_argument("--host-batches", type=int, default=50)
    p.add_argument("--vocab", type=int, default=12000)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, few steps, CPU")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.batches, args.steps, args.warmup, args.host_batches, args.vocab = "tiny", "16", 6, 4, 4, 800
    device = resolve_device("cpu" if args.smoke else "auto")
    if args.smoke:  # synthetic sentences: no data files, seconds on a CPU
        texts = unique_texts([r.sentence for r in make_splits(seed=0, n_train=300, n_test=0)[0]])
    else:
        texts = unique_texts([r.sentence for path in (args.train, args.extra) if path for r in read_records(path)[0]])
    tokenizer = scratch.train_tokenizer(texts, args.vocab)
    corpus = encode_corpus(tokenizer, texts, 256)
    rows = []
    settings = [(size, int(b), head) for size in args.sizes.split(",") for b in args.batches.split(",")
                for head in args.heads.split(",")]
    for size, b, head in settings:
        try:
            rows.append(measure(size, b, head, tokenizer, corpus, args, device))
        except torch.cuda.OutOfMemoryError:
            rows.append({"size": size, "batch": b, "head": head, "error": "out of GPU memory"})
        print(json.dumps(rows[-1]), flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu")
    result = {"machine": f"{machine}, torch {torch.__version__}, Python {platform.python_version()}",
              "sentences": len(corpus), "mean_tokens": round(float(np.mean(corpus.lengths())), 1), "rows": rows}
    (out / "pretrain_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = [f"{result['machine']}; {result['sentences']:,} sentences, {result['mean_tokens']} tokens on average", "",
             "| size | batch | MLM head | parameters | host, row loop (ms) | host, rekit (ms) | whole step (ms) | GPU alone (ms) "
             "| samples/s | tokens/s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['batch']} | {r['head']} | {r['error']} |")
            continue
        lines.append(f"| {r['size']} | {r['batch']} | {r['head']} | {r['parameters'] / 1e6:.1f}M | {r['host_rowloop_ms']} | "
                     f"{r['host_ms']} | {r['step_ms']} | {r['gpu_ms']} | {r['samples_per_s']:,.0f} | "
                     f"{r['tokens_per_s']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
