"""Training and inference throughput, side by side on one GPU, same data and model shape.

Systems (all start from the same random init and see the same KLUE-RE token sequences):
  hf_community  HF Trainer as the community runs it: fp32, the whole set padded to its longest, batch 16
  hf_tuned      HF Trainer tuned: bf16, dynamic padding, length grouping, fused AdamW, batch 32
  eager         a plain PyTorch loop: bf16 autocast, dynamic padding, length buckets, fused AdamW,
                loss.item() per step for the progress display (what people write by hand)
  rekit         rekit's own `fit()` (the product's loop), one row per --rekit-compile mode
Then inference: rekit's batched predict_proba of one fold model (samples/s per model).

Reported per system: samples/s after warm-up, useful-token MFU (6*N*tokens + attention FLOPs on
non-pad tokens, against 989 TFLOP/s bf16 dense), peak GPU memory, warm-up/compile seconds, and the
training loss over the last steps (rekit must match the eager loop within noise).

  python benchmarks/throughput.py --out results/           # one GPU, RoBERTa-large shape
  python benchmarks/throughput.py --out /tmp/t --smoke     # seconds on CPU (tiny shape; the test runs this)
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rekit.config import RunConfig  # noqa: E402
from rekit.data.labels import LabelMap  # noqa: E402
from rekit.encoding.collate import Collator, bucket_batches  # noqa: E402
from rekit.encoding.markers import mark  # noqa: E402
from rekit.encoding.tokenize import REEncoder  # noqa: E402
from rekit.modeling import scratch  # noqa: E402
from rekit.modeling.inference import predict_proba  # noqa: E402
from rekit.modeling.model import ModelSpec, REModel  # noqa: E402
from rekit.runtime import compile_blocks  # noqa: E402
from rekit.training.loop import fit  # noqa: E402
from rekit.training.optim import make_optimizer, make_scheduler  # noqa: E402

PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16, vendor datasheet
SHAPES = {  # layers, hidden, heads, intermediate
    "large": (24, 1024, 16, 4096),
    "base": (12, 768, 12, 3072),
    "tiny": (2, 128, 2, 512),
}
DATA = ROOT.parent / "shared" / "data" / "klue-re" / "train.csv"


# -- data and model ----------------------------------------------------------------------------
def load_data(args):
    if args.smoke:
        from rekit.data.synthetic import make_corpus

        records = make_corpus(args.steps * args.batch_size + 64, seed=0)
    else:
        from rekit.data.readers import read_records

        records, _ = read_records(args.data)
    label_map = LabelMap.infer([r.label for r in records])
    cfg = RunConfig.from_dict({}, {"model": "scratch"})
    tok = scratch.train_tokenizer([mark(r, cfg.model.marker).text for r in records], args.vocab)
    feats = REEncoder(tok, cfg.model.marker, args.max_length).encode(records, label_map)
    return records, label_map, tok, feats


def roberta_config(args, tok, n_labels):
    from transformers import RobertaConfig

    layers, hidden, heads, inter = SHAPES[args.shape]
    return RobertaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=inter, max_position_embeddings=args.max_length + 2 + tok.pad_token_id,
                         type_vocab_size=1, pad_token_id=tok.pad_token_id, num_labels=n_labels)


def rekit_model(args, config, n_labels):
    from transformers import AutoModel

    torch.manual_seed(0)  # every system starts from the same weights
    encoder = AutoModel.from_config(config)
    return REModel(encoder, ModelSpec("entity", n_labels, "typed_entity_marker_punct", "auto", args.max_length, 0.1))


def flops(config, lengths, train: bool = True) -> float:
    """Useful FLOPs on non-pad tokens: 6N per token (2N forward-only) plus attention score/value matmuls."""
    n = (config.num_hidden_layers * (4 * config.hidden_size ** 2 + 2 * config.hidden_size * config.intermediate_size))
    lengths = np.asarray(lengths, dtype=np.float64)
    attn = 4 * config.num_hidden_layers * config.hidden_size * np.sum(lengths ** 2)
    mult = 3 if train else 1
    return mult * (2 * n * lengths.sum() + attn)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def step_order(feats, batch_size, steps, seed=0):
    """The same length-bucketed batches for every system that buckets (rekit's sampler); past one
    epoch, the next epoch's order is drawn (so --warmup of one epoch measures a second epoch, after
    every batch shape has been seen)."""
    rng, batches = np.random.default_rng(seed), []
    while len(batches) < steps:
        batches += bucket_batches(feats.lengths(), batch_size, rng)
    return batches[:steps]


def summarise(name, args, config, times, lengths_per_step, losses, extra=None):
    """times[i] = seconds at the end of step i (synchronised). Steady state = after warm-up."""
    w = args.warmup
    steady_s = times[-1] - times[w - 1]
    steady_samples = sum(len(x) for x in lengths_per_step[w:])
    steady_lengths = [t for x in lengths_per_step[w:] for t in x]
    rate = steady_samples / steady_s
    return {
        "system": name, "samples_per_s": round(rate, 1),
        "mfu_useful_pct": round(100 * flops(config, steady_lengths) / steady_s / PEAK_BF16, 2),
        "peak_mem_gib": peak_gib(), "warmup_s": round(times[w - 1], 2), "steps": len(times),
        "loss_last": round(float(np.mean(losses[-args.loss_window:])), 4), **(extra or {}),
    }


# -- systems -----------------------------------------------------------------------------------
class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def run_hf(args, config, feats, tuned: bool, device):
    """HF Trainer on RobertaForSequenceClassification ([CLS] head), as the community uses it."""
    from transformers import (
        RobertaForSequenceClassification,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config)
    bs = args.batch_size if tuned else args.community_batch
    n = bs * args.steps
    every = [i % len(feats) for i in range(n)]  # past one epoch the rows come round again
    if tuned:
        rows = [{"input_ids": feats.input_ids[i], "labels": feats.labels[i]} for i in every]
        from transformers import DataCollatorWithPadding

        collator = DataCollatorWithPadding(tokenizer=args.tokenizer, pad_to_multiple_of=8)
    else:  # the community pads the whole set to its longest sequence once, up front
        width = max(feats.lengths())
        pad = args.tokenizer.pad_token_id
        rows = [{"input_ids": torch.tensor(x + [pad] * (width - len(x))),
                 "attention_mask": torch.tensor([1] * len(x) + [0] * (width - len(x))),
                 "labels": torch.tensor(feats.labels[i])} for i, x in ((i, feats.input_ids[i]) for i in every)]
        collator = None
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            sync()
            times.append(time.perf_counter() - t0)

    targs = dict(output_dir=str(args.work / "hf_tmp"), per_device_train_batch_size=bs, max_steps=args.steps,
                 learning_rate=args.lr, warmup_steps=args.warmup, logging_steps=1, save_strategy="no",
                 report_to=[], disable_tqdm=True, seed=0, use_cpu=device.type == "cpu")
    if tuned:
        import inspect

        # transformers 5 renamed group_by_length=True to train_sampling_strategy="group_by_length"
        grouping = ({"train_sampling_strategy": "group_by_length"}
                    if "train_sampling_strategy" in inspect.signature(TrainingArguments.__init__).parameters
                    else {"group_by_length": True})
        targs.update(grouping)
        targs.update(bf16=device.type == "cuda",
                     optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
                     dataloader_pin_memory=True)
    trainer = Trainer(model=model, args=TrainingArguments(**targs), train_dataset=_Rows(rows), data_collator=collator)
    # Useful (non-pad) tokens per step: Trainer draws its own order, so take the same rows' lengths in
    # dataset order; over the steady steps the multiset is the same in expectation.
    all_lengths = [feats.lengths()[i] for i in every]
    lengths_per_step = [all_lengths[s * bs:(s + 1) * bs] for s in range(args.steps)]
    trainer.add_callback(Clock())
    sync()
    t0 = time.perf_counter()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    name = "hf_tuned" if tuned else "hf_community"
    return summarise(name, args, config, times, lengths_per_step, losses, {"batch_size": bs})


def run_eager(args, config, feats, device):
    """The loop people write by hand, done reasonably: bf16 autocast, buckets, fused AdamW."""
    cfg = RunConfig.from_dict({}, {"lr": args.lr, "batch_size": args.batch_size, "warmup_ratio": args.warmup / args.steps}).train
    model = rekit_model(args, config, args.n_labels).to(device).train()
    opt = make_optimizer(model, cfg, device)
    sched = make_scheduler(opt, cfg, args.steps)
    collate = Collator(feats, args.tokenizer.pad_token_id, multiple_of=8 if device.type == "cuda" else 1)
    amp = torch.bfloat16 if device.type == "cuda" else None
    batches = step_order(feats, args.batch_size, args.steps)
    times, losses = [], []
    sync()
    t0 = time.perf_counter()
    for idx in batches:
        batch = {k: v.to(device) for k, v in collate(idx).items()}
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            _, loss = model(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # the per-step host sync of a typical progress bar
        times.append(time.perf_counter() - t0)
    lengths = [[feats.lengths()[i] for i in b] for b in batches]
    return summarise("eager", args, config, times, lengths, losses, {"batch_size": args.batch_size})


def run_rekit(args, config, feats, label_map, device, compile_mode):
    """rekit's own fit(): evaluations every --warmup steps on a tiny valid set give per-segment rates."""
    batches = step_order(feats, args.batch_size, args.steps)
    order = [i for b in batches for i in b]
    train = feats.subset(order)
    valid = feats.subset(order[: args.batch_size])
    cfg = RunConfig.from_dict({}, {
        "lr": args.lr, "batch_size": args.batch_size, "epochs": 1, "warmup_ratio": args.warmup / args.steps,
        "eval_every": args.warmup, "progress": False, "compile": compile_mode, "eval_batch_size": args.batch_size,
        "save_every": -1,  # no resumable state: writing a large model's optimizer state at every evaluation takes seconds
    }).train
    model = rekit_model(args, config, args.n_labels)
    fold_dir = args.work / f"rekit_{compile_mode}"  # checkpoints stay out of the results folder
    sync()
    t0 = time.perf_counter()
    result = fit(model, args.tokenizer, label_map, train, valid, cfg, fold_dir, seed=0, device=device)
    total = time.perf_counter() - t0
    rows = result.history
    first, rest = rows[0], rows[1:]
    steady_s = sum(r["train_seconds"] for r in rest)
    steady_samples = sum(r["train_samples"] for r in rest)
    steady_flops = sum(r["train_flops"] for r in rest) if "train_flops" in rest[0] else None
    if steady_flops is None:  # recompute from the token lengths the loop saw (same batches)
        lengths = [train.lengths()[i] for i in range(first["train_samples"], len(train))]
        steady_flops = flops(config, lengths)
    losses = [r["train_loss"] for r in rows]
    return {
        "system": f"rekit ({compile_mode})", "samples_per_s": round(steady_samples / steady_s, 1),
        "mfu_useful_pct": round(100 * steady_flops / steady_s / PEAK_BF16, 2), "peak_mem_gib": peak_gib(),
        "warmup_s": round(first["train_seconds"], 2), "steps": rows[-1]["step"],
        "loss_last": round(float(losses[-1]), 4), "batch_size": args.batch_size, "wall_s": round(total, 1),
        "overall_samples_per_s": round(sum(r["train_samples"] for r in rows) / sum(r["train_seconds"] for r in rows), 1),
        "step_graphs": result.timing or None,
    }


def run_inference(args, config, feats, device):
    """One fold model's predict_proba over the data (rekit's batched, length-sorted inference):
    bf16 autocast over fp32 weights, the weights cast to bf16 (what `rekit predict` does on a GPU),
    and bf16 weights with the encoder layers compiled by inductor (-inductor; compile in warm-up)."""
    n = min(len(feats), args.infer_rows)
    sub = feats.subset(range(n))
    out = []
    for mode in args.infer_modes:
        model = rekit_model(args, config, args.n_labels).to(device).eval()
        amp = torch.bfloat16 if device.type == "cuda" else None
        if mode.startswith("bf16-weights") and device.type == "cuda":
            model, amp = model.to(torch.bfloat16), None
        if mode.endswith("-inductor"):
            compile_blocks(model, dynamic=True)  # regional: one encoder layer compiled, for all lengths
        for bs in args.infer_batch:
            # Warm-up: one whole pass, so every batch shape and mask variant has been seen (the inductor
            # modes compile here: once for all lengths, and again for batches without padding, whose
            # mask transformers drops); its rate is the "incl. warm-up" column. Then the timed pass.
            sync()
            t0 = time.perf_counter()
            predict_proba(model, sub, args.tokenizer.pad_token_id, bs, device, amp)
            sync()
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            predict_proba(model, sub, args.tokenizer.pad_token_id, bs, device, amp)
            sync()
            dt = time.perf_counter() - t0
            out.append({"system": f"inference ({mode}, batch {bs})", "samples_per_s": round(n / dt, 1),
                        "mfu_useful_pct": round(100 * flops(config, sub.lengths(), train=False) / dt / PEAK_BF16, 2),
                        "peak_mem_gib": peak_gib(), "rows": n, "warmup_s": round(warm, 2),
                        "overall_samples_per_s": round(2 * n / (warm + dt), 1)})
        del model
        reset_memory()
    return out


# -- main --------------------------------------------------------------------------------------
def markdown(results, meta) -> str:
    lines = [f"Machine: {meta['device']}; torch {meta['torch']}; shape {meta['shape']} ({meta['params_m']}M parameters); "
             f"batch {meta['batch_size']}; {meta['steps']} steps, warm-up {meta['warmup']}; data {meta['data']} "
             f"(mean {meta['mean_tokens']:.1f} tokens/example).", "",
             "| system | samples/s | useful-token MFU % | peak GiB | warm-up s | loss (last steps) | samples/s incl. warm-up |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['system']} | failed: {r['error'][:80]} | | | | | |")
            continue
        lines.append(f"| {r['system']} | {r['samples_per_s']:,} | {r['mfu_useful_pct']} | {r.get('peak_mem_gib')} | "
                     f"{r.get('warmup_s', '')} | {r.get('loss_last', '')} | {r.get('overall_samples_per_s', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/rekit-throughput"), help="scratch space for checkpoints")
    p.add_argument("--smoke", action="store_true", help="tiny shape, synthetic data, CPU-friendly (seconds)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--shape", choices=SHAPES, default="large")
    p.add_argument("--systems", default="hf_community,hf_tuned,eager,rekit,inference")
    p.add_argument("--rekit-compile", default="off,graphs,graphs-inductor", help="comma-separated --compile modes to measure")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=100, help="steps excluded from the steady-state rate")
    p.add_argument("--loss-window", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--community-batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--infer-batch", default="512,1024,2048")
    p.add_argument("--infer-modes", default="bf16-autocast,bf16-weights")
    p.add_argument("--infer-rows", type=int, default=20000)
    args = p.parse_args(argv)
    if args.smoke:
        args.shape, args.steps, args.warmup, args.vocab, args.loss_window = "tiny", 8, 3, 800, 3
        args.max_length, args.infer_rows, args.infer_batch = 96, 200, "64"
    args.infer_batch = [int(x) for x in str(args.infer_batch).split(",")]
    args.infer_modes = args.infer_modes.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows stay fp32, as the community runs them

    t = time.time()
    records, label_map, tok, feats = load_data(args)
    args.tokenizer, args.n_labels = tok, len(label_map)
    config = roberta_config(args, tok, len(label_map))
    params = sum(p.numel() for p in rekit_model(args, config, len(label_map)).parameters())
    cpu = f"CPU ({platform.processor() or platform.machine()})"
    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
            "torch": torch.__version__, "shape": args.shape, "params_m": round(params / 1e6, 1),
            "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
            "data": "synthetic (smoke)" if args.smoke else str(args.data.name), "rows": len(records),
            "mean_tokens": float(np.mean(feats.lengths())), "prep_s": round(time.time() - t, 1),
            "command": " ".join(["python", "benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])])}
    print(json.dumps(meta), flush=True)
    systems = args.systems.split(",")
    results = []

    def attempt(name, fn):
        reset_memory()
        t0 = time.time()
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - one failing system must not lose the others' numbers
            traceback.print_exc()
            out = {"system": name, "error": f"{type(e).__name__}: {e}"}
        for r in out if isinstance(out, list) else [out]:
            r["bench_wall_s"] = round(time.time() - t0, 1)
            results.append(r)
            print(json.dumps(r), flush=True)
        (args.out / "throughput.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))

    if "hf_community" in systems:
        attempt("hf_community", lambda: run_hf(args, config, feats, False, device))
    if "hf_tuned" in systems:
        attempt("hf_tuned", lambda: run_hf(args, config, feats, True, device))
    if "eager" in systems:
        attempt("eager", lambda: run_eager(args, config, feats, device))
    if "rekit" in systems:
        for mode in args.rekit_compile.split(","):
            attempt(f"rekit ({mode})", lambda mode=mode: run_rekit(args, config, feats, label_map, device, mode))
    if "inference" in systems:
        attempt("inference", lambda: run_inference(args, config, feats, device))
    (args.out / "throughput.md").write_text(markdown(results, meta))
    print(markdown(results, meta))
    return results


if __name__ == "__main__":
    main()
