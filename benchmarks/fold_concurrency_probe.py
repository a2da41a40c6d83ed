"""How much faster can K folds train at once on one GPU than one after another? (issue 17)

A probe of the mechanisms, independent of rekit's engine: K copies of one encoder (each its own
weights and fused capturable AdamW, like K folds), a whole training step (forward, backward,
AdamW) captured once per copy as a CUDA graph at a fixed shape, then replayed:

- `sequential`: one copy at a time (today's folds in sequence), on one stream;
- `streams`:    one host thread launches every copy's replay in turn, each copy on its own CUDA
                stream, so the GPU may run their kernels side by side;
- `processes`:  K processes on the same GPU, each replaying its own copy (no MPS: the driver
                time-slices between their contexts);
- `stacked`:    one model whose every weight has a leading fold axis (torch.func's
                stack_module_state + vmap over functional_call): each GEMM covers all K copies at
                once (batched), one fused AdamW updates all copies; one graph for the K steps.
- `bmm`:        the same idea without vmap (benchmarks/stacking.py):
                swaps every Linear/LayerNorm/Embedding for a stacked one (batched matmuls over the
                fold axis), the K batches run as one batch of K x B rows, per-fold losses and
                per-fold gradient clipping, one fused AdamW; one graph for the K steps.
- `wide`:       not K folds: ONE copy at batch K x B, the ceiling of what batching the K steps into
                larger kernels could give (same GEMM sizes as `bmm`, none of its overheads).

Reports aggregate samples/s (K x batch x steps / wall seconds) and peak memory per system.

    python benchmarks/fold_concurrency_probe.py --out OUT --shape large --copies 1,2,3,5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import torch

SHAPES = {  # hidden, layers, heads, intermediate
    "large": (1024, 24, 16, 4096),
    "base": (768, 12, 12, 3072),
}


class Copy:
    """One fold's model, optimizer, static inputs and captured step graph."""

    def __init__(self, shape: str, batch: int, length: int, device: torch.device, seed: int):
        from transformers import RobertaConfig, RobertaModel

        hidden, layers, heads, inter = SHAPES[shape]
        torch.manual_seed(seed)
        cfg = RobertaConfig(vocab_size=32000, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=inter,
                            max_position_embeddings=514, attn_implementation="sdpa")
        self.encoder = RobertaModel(cfg, add_pooling_layer=False).to(device)
        self.head = torch.nn.Linear(hidden, 30).to(device)
        params = list(self.encoder.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.AdamW(params, lr=torch.tensor(1e-5, device=device), fused=True, capturable=True)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.ids = torch.randint(5, 32000, (batch, length), generator=gen).to(device)
        self.mask = torch.ones_like(self.ids)
        self.labels = torch.randint(0, 30, (batch,), generator=gen).to(device)
        self.stream = torch.cuda.Stream(device)
        self.graph = torch.cuda.CUDAGraph()

    def _step(self) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = self.encoder(input_ids=self.ids, attention_mask=self.mask).last_hidden_state
            loss = torch.nn.functional.cross_entropy(self.head(h[:, 0]).float(), self.labels)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)
        return loss.detach()

    def capture(self) -> None:
        with torch.cuda.stream(self.stream):
            for _ in range(3):  # optimizer state and cuBLAS workspaces exist before the capture
                self._step()
            self.stream.synchronize()
            with torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
                self.loss = self._step()
        torch.cuda.synchronize()

    def replay(self) -> None:
        with torch.cuda.stream(self.stream):
            self.graph.replay()


class Stacked:
    """K copies as one vmapped model: the same per-copy losses and gradients as K separate models
    (the summed loss's gradient w.r.t. copy k's weights is copy k's own), in batched kernels."""

    def __init__(self, shape: str, k: int, batch: int, length: int, device: torch.device):
        import copy as copy_module

        from torch.func import functional_call, stack_module_state

        copies = [Copy(shape, batch, length, device, seed=i) for i in range(k)]
        modules = [torch.nn.ModuleDict({"encoder": c.encoder, "head": c.head}) for c in copies]
        self.params, self.buffers = stack_module_state(modules)
        self.base = copy_module.deepcopy(modules[0]).to("meta")
        self.ids = torch.stack([c.ids for c in copies])
        self.labels = torch.stack([c.labels for c in copies])
        del copies, modules
        self.opt = torch.optim.AdamW(list(self.params.values()), lr=torch.tensor(1e-5, device=device),
                                     fused=True, capturable=True)
        self.call = functional_call
        self.stream = torch.cuda.Stream(device)
        self.graph = torch.cuda.CUDAGraph()

    def _one(self, params, buffers, ids, labels):
        """One copy's loss, written for one copy; vmap runs it over the fold axis."""
        def part(prefix: str, d: dict) -> dict:
            return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}

        enc = self.call(self.base["encoder"], (part("encoder.", params), part("encoder.", buffers)), (),
                        {"input_ids": ids}).last_hidden_state
        logits = self.call(self.base["head"], part("head.", params), (enc[:, 0],))
        return torch.nn.functional.cross_entropy(logits.float(), labels)

    def _step(self) -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        # The fused attention kernels' backward rejects vmap's batched strides ("LSE is not
        # correctly aligned"), so attention runs as plain matmuls here.
        with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.MATH]):
            losses = torch.vmap(self._one, randomness="different")(self.params, self.buffers, self.ids, self.labels)
        losses.sum().backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)
        return losses.detach()

    capture = Copy.capture
    replay = Copy.replay


class Bmm:
    """K copies stacked by rekit.training.stacking (see the module docstring)."""

    def __init__(self, shape: str, k: int, batch: int, length: int, device: torch.device):
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import stacking

        copies = [Copy(shape, batch, length, device, seed=i) for i in range(k)]
        self.k, self.stacking = k, stacking
        self.model = stacking.stack([torch.nn.ModuleDict({"encoder": c.encoder, "head": c.head}) for c in copies])
        stacking.set_rows(self.model, batch)
        self.ids = torch.cat([c.ids for c in copies])
        self.mask = torch.ones_like(self.ids)
        self.labels = torch.cat([c.labels for c in copies])
        del copies
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=torch.tensor(1e-5, device=device), fused=True, capturable=True)
        self.stream = torch.cuda.Stream(device)
        self.graph = torch.cuda.CUDAGraph()

    def _step(self) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = self.model["encoder"](input_ids=self.ids, attention_mask=self.mask).last_hidden_state
            logits = self.model["head"](h[:, 0])
        losses = self.stacking.fold_losses(logits, self.labels, torch.nn.CrossEntropyLoss(), self.k)
        losses.sum().backward()
        self.stacking.clip_per_fold(self.params, self.k, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)
        return losses.detach()

    capture = Copy.capture
    replay = Copy.replay


def run_stacked(shape: str, k: int, batch: int, length: int, steps: int, warmup: int, bmm: bool = False) -> dict:
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
    model = (Bmm if bmm else Stacked)(shape, k, batch, length, device)
    model.capture()
    for _ in range(warmup):
        model.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.replay()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "samples_per_s": k * batch * steps / wall,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "final_loss": [round(float(x), 4) for x in model.loss]}


def run_in_process(shape: str, k: int, batch: int, length: int, steps: int, warmup: int, streams: bool) -> dict:
    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
    copies = [Copy(shape, batch, length, device, seed=i) for i in range(k)]
    for c in copies:
        c.capture()
    order = [copies] if streams else [[c] for c in copies]  # all at once, or one after another
    for group in order:
        for _ in range(warmup):
            for c in group:
                c.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for group in order:
        for _ in range(steps):
            for c in group:
                c.replay()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "samples_per_s": k * batch * steps / wall,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "final_loss": [round(float(c.loss), 4) for c in copies]}


def _worker(args, start, queue):
    shape, batch, length, steps, warmup, seed = args
    device = torch.device("cuda")
    c = Copy(shape, batch, length, device, seed)
    c.capture()
    for _ in range(warmup):
        c.replay()
    torch.cuda.synchronize()
    start.wait()
    t0 = time.perf_counter()
    for _ in range(steps):
        c.replay()
    torch.cuda.synchronize()
    queue.put((t0, time.perf_counter(), torch.cuda.max_memory_allocated() / 2**30, float(c.loss)))


def run_processes(shape: str, k: int, batch: int, length: int, steps: int, warmup: int) -> dict:
    ctx = mp.get_context("spawn")
    start, queue = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=((shape, batch, length, steps, warmup, i), start, queue))
             for i in range(k)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return {"wall_s": wall, "samples_per_s": k * batch * steps / wall,
            "peak_gib": sum(r[2] for r in results), "final_loss": [round(r[3], 4) for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", default="large", choices=sorted(SHAPES))
    ap.add_argument("--copies", default="1,2,3,5", help="comma-separated K values")
    ap.add_argument("--systems", default="sequential,streams,processes,stacked,bmm")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in [int(x) for x in a.copies.split(",")]:
        for system in a.systems.split(","):
            if system == "sequential" and k > 1:
                continue  # sequential throughput does not depend on K
            if system in ("stacked", "bmm"):
                r = run_stacked(a.shape, k, a.batch, a.length, a.steps, a.warmup, bmm=system == "bmm")
            elif system == "processes":
                r = run_processes(a.shape, k, a.batch, a.length, a.steps, a.warmup)
            elif system == "wide":
                r = run_in_process(a.shape, 1, a.batch * k, a.length, a.steps, a.warmup, False)
            else:
                r = run_in_process(a.shape, k, a.batch, a.length, a.steps, a.warmup, system == "streams")
            row = {"system": system, "k": k, "shape": a.shape, **r}
            print(json.dumps(row), flush=True)
            rows.append(row)
            torch.cuda.empty_cache()
    (out / f"fold_concurrency_{a.shape}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
