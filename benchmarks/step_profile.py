"""Where a training step's time goes: torch.profiler over rekit's own step (the `fit()` loop),
eager, compiled and as whole-step CUDA graphs (graphs / graphs-inductor variants), on the
RoBERTa-large shape at batch 32 — the breakdown BENCHMARKS.md cites.

For each variant: ms per step (synchronised wall clock over the profiled steps), the profiler's
CPU-side total vs CUDA kernel total per step, and the top operators. With `reduce-overhead`,
PyTorch's own log says whether CUDA graphs were used (TORCH_LOGS=perf_hints shows skip reasons).

A variant may carry options after "+": `+sdpa=efficient|cudnn|flash|math` forces one attention
kernel (default: PyTorch's choice), `+clip=separate` clips with clip_grad_norm_ before the step
instead of inside the fused AdamW (rekit's default; training/optim.py clip_and_step), `+ddp=1`
wraps the model in DistributedDataParallel over a one-process NCCL group, as `rekit train
--parallel ddp` does (training/loop.py wrap_ddp): DDP's hooks, bucket copies and its (one-rank)
all-reduce run inside the step graphs, so the difference to the same variant without it is DDP's
own cost per step, before any traffic between GPUs.

  TORCH_LOGS=perf_hints,recompiles python benchmarks/step_profile.py --out results/
  python benchmarks/step_profile.py --out results/ --variants graphs-inductor-static,graphs-inductor-static+clip=separate
  python benchmarks/step_profile.py --out results/ --warmup 30 --variants graphs-static,graphs-static+ddp=1
  python benchmarks/step_profile.py --out /tmp/p --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rekit.config import RunConfig  # noqa: E402
from rekit.encoding.collate import Collator, iterate  # noqa: E402
from rekit.encoding.tokenize import Features  # noqa: E402
from rekit.runtime import autocast  # noqa: E402
from rekit.training import graphs as graphs_module  # noqa: E402
from rekit.training.graphs import DDP_MIN_EAGER, StepGraphs  # noqa: E402
from rekit.training.loop import wrap_ddp  # noqa: E402
from rekit.training.optim import clip_and_step, make_optimizer, make_scheduler  # noqa: E402
from rekit.training.step import GRAPH_MODES, always_pad, compile_forward  # noqa: E402
from throughput import SHAPES, rekit_model, roberta_config  # noqa: E402


class _Tok:
    pad_token_id = 0

    def __len__(self):
        return 32000


def synthetic(n, lengths, seed=0):
    rng = np.random.default_rng(seed)
    f = Features()
    for i in range(n):
        t = int(lengths[i % len(lengths)])
        f.input_ids.append(rng.integers(5, 32000, t).tolist())
        f.subj_pos.append(1)
        f.obj_pos.append(min(5, t - 1))
        f.labels.append(int(rng.integers(0, 30)))
    return f


def separate_clip_and_step(optimizer, params, max_grad_norm):
    """The unfolded update (rekit before clip_and_step): clip_grad_norm_ rescales the gradients in memory."""
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)
    optimizer.step()


def options(variant: str) -> tuple[str, dict]:
    """'graphs-static+sdpa=efficient+clip=separate' -> ('graphs-static', {'sdpa': 'efficient', 'clip': 'separate'})."""
    base, *opts = variant.split("+")
    return base, dict(o.split("=", 1) for o in opts)


def sdpa_context(backend: str | None):
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
             "flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}
    return sdpa_kernel(names[backend])


def run_variant(name, args, config, device, compile_mode, lengths, opts=None):
    opts = opts or {}
    patch = opts.get("clip") == "separate"
    if patch:
        graphs_module.clip_and_step = separate_clip_and_step
    try:
        with sdpa_context(opts.get("sdpa")), one_process_group(opts.get("ddp") == "1"):
            return _run_variant(name, args, config, device, compile_mode, lengths, opts)
    finally:
        graphs_module.clip_and_step = clip_and_step


@contextlib.contextmanager
def one_process_group(on: bool):
    """A one-process process group (NCCL on a GPU, gloo on a CPU) for the `+ddp=1` variants."""
    if not on:
        yield
        return
    import os
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]))
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0) if cuda else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _run_variant(name, args, config, device, compile_mode, lengths, opts):
    cfg = RunConfig.from_dict({}, {"lr": 2e-5, "batch_size": args.batch_size}).train
    model = rekit_model(args, config, 30).to(device).train()
    graphed = compile_mode in GRAPH_MODES and device.type == "cuda"
    opt = make_optimizer(model, cfg, device, capturable=graphed)
    sched = make_scheduler(opt, cfg, 10_000)
    ddp = opts.get("ddp") == "1"
    # DDP with graphs: built on, and every step run on, one non-default stream (as in loop.py).
    run_stream = torch.cuda.Stream(device) if ddp and graphed else None
    with torch.cuda.stream(run_stream) if run_stream is not None else contextlib.nullcontext():
        net = wrap_ddp(model, device, graphed) if ddp else model
    forward = compile_forward(net, compile_mode if device.type == "cuda" else "off")
    amp = torch.bfloat16 if device.type == "cuda" else None
    graphs = StepGraphs(forward, model, opt, amp, 1.0, min_eager=DDP_MIN_EAGER if ddp else 1,
                        stream=run_stream) if graphed else None
    n_steps = args.warmup + args.steps
    feats = synthetic(n_steps * args.batch_size, lengths)
    batches = [list(range(i * args.batch_size, (i + 1) * args.batch_size)) for i in range(n_steps)]
    collate = Collator(feats, 0, multiple_of=16 if device.type == "cuda" else 1, always_pad=always_pad(compile_mode))
    stream = iterate(feats, batches, collate, device)

    def step():
        batch = next(stream)
        if graphs is not None:  # the whole step as one CUDA graph replay (rekit's default on CUDA)
            loss = graphs.step(batch)
            if loss is not None:
                sched.step()
                return loss.detach().clone()
            opt.zero_grad(set_to_none=True)
        if compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(device, amp):
            _, loss = forward(**batch)
        loss.backward()
        (separate_clip_and_step if opts.get("clip") == "separate" else clip_and_step)(opt, list(model.parameters()), 1.0)
        opt.zero_grad(set_to_none=True)
        sched.step()
        return loss.detach()

    def timed(n: int) -> float:
        """Seconds for n steps, synchronised."""
        t0 = time.perf_counter()
        with torch.cuda.stream(run_stream) if run_stream is not None else contextlib.nullcontext():
            for _ in range(n):
                step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    warm = timed(args.warmup)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        wall = timed(args.steps)
    ka = prof.key_averages()
    # Kernels only (device-side rows): operator rows repeat their kernels' time.
    cuda_total = (sum(e.self_device_time_total for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
                  / 1e3 / args.steps if device.type == "cuda" else None)
    cpu_total = sum(e.self_cpu_time_total for e in ka) / 1e3 / args.steps
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = ka.table(sort_by=sort, row_limit=12, max_name_column_width=48)
    cuda_kernels = sum(e.count for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
    kernels = cuda_kernels / args.steps if device.type == "cuda" else None
    res = {"variant": name, "ms_per_step": round(1e3 * wall / args.steps, 2),
           "samples_per_s": round(args.batch_size * args.steps / wall, 1), "warmup_s": round(warm, 1),
           "cuda_kernel_ms_per_step": None if cuda_total is None else round(cuda_total, 2),
           "cpu_op_ms_per_step": round(cpu_total, 2), "kernels_per_step": kernels}
    print(json.dumps(res), flush=True)
    print(table, flush=True)
    return res, table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--shape", choices=SHAPES, default="large")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--variants", default="eager-static,compiled-static,eager-varied,compiled-varied")
    args = p.parse_args(argv)
    if args.smoke:
        args.shape, args.steps, args.warmup = "tiny", 3, 2
        args.variants = "eager-static,eager-varied,graphs-static,eager-static+sdpa=math+clip=separate,eager-static+ddp=1"
    args.max_length = 256
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = _Tok()
    config = roberta_config(args, tok, 30)
    out, tables = [], []
    for v in args.variants.split(","):
        base, opts = options(v)
        mode = ("reduce-overhead" if v.startswith("compiled") else "graphs-inductor" if v.startswith("graphs-inductor")
                else "graphs" if v.startswith("graphs") else "off")
        lengths = [60, 64] if base.endswith("static") else [40, 52, 64, 76, 90, 110]  # static: 64 wide, with padding
        try:
            res, table = run_variant(v, args, config, device, mode, lengths, opts)
        except Exception as e:  # noqa: BLE001 - keep the other variants' numbers
            res, table = {"variant": v, "error": f"{type(e).__name__}: {e}"}, ""
            print(json.dumps(res), flush=True)
        out.append(res)
        tables.append(f"### {v}\n\n```\n{table}\n```\n")
        (args.out / "step_profile.json").write_text(json.dumps(out, indent=2))
        (args.out / "step_profile.md").write_text("\n".join(tables))
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return out


if __name__ == "__main__":
    main()
