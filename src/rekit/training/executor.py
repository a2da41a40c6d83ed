"""The fine-tuning step executor: runs one optimizer step on the hardware and returns its
summed loss as a device tensor (no host sync). It owns how the step runs: eagerly with exact
gradient accumulation, as a whole-step CUDA graph replay (graphs.py, plain or with inductor
blocks), under DistributedDataParallel on its own CUDA stream, and the out-of-memory retry with
smaller micro-batches. The loop decides when; the arithmetic of the update is optim.py's.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from rekit.encoding.collate import Collator, iterate, to_device
from rekit.encoding.tokenize import Features
from rekit.runtime import autocast
from rekit.training import graphs as step_graphs
from rekit.training.interrupts import OutOfMemory, oom_advice, release_cuda_memory
from rekit.training.optim import apply_update
from rekit.training.step import GRAPH_MODES, compile_forward


def micro_batches(step_batch: list[int], accum: int) -> list[list[int]]:
    """Cut one optimizer step's examples into at most `accum` near-equal micro-batches."""
    size = -(-len(step_batch) // accum)
    return [step_batch[i : i + size] for i in range(0, len(step_batch), size)]


def wrap_ddp(model: torch.nn.Module, device: torch.device, graphed: bool) -> torch.nn.Module:
    """The model under DistributedDataParallel. Its buffers (position ids) never change, so they are
    not broadcast before every forward. The gradients become views into DDP's buckets, which saves
    copying the averaged gradients back out of them. Eager steps batch the copies into the buckets
    where this PyTorch can (2.13 on): a few kernel launches per bucket instead of one per parameter.
    (Not yet under CUDA graphs: the GPU host here has PyTorch 2.11, so the option is unmeasured
    there.) For CUDA graphs (graphs.py; DDP built on the stream the steps run on) its sampled timing
    statistics are turned off, so none falls on a capture."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    known = inspect.signature(DistributedDataParallel.__init__).parameters
    options: dict[str, Any] = {"gradient_as_bucket_view": True,
               "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers": False}
    if "batched_grad_copy" in known and not graphed:
        options["batched_grad_copy"] = True
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **options)
    if graphed:
        net._set_ddp_runtime_logging_sample_rate(2**31 - 1)  # prototype API; its default samples every 100th step
    return net


class StepExecutor:
    """`run(step_batch, step)`: forward, backward and update of one optimizer step over the
    examples `step_batch` of `train`; the step's loss summed over this process's examples.

    State: `accum` (micro-batches per step; an OOM retry doubles it, the resumable state keeps
    it), the CUDA graphs and the stream (under DDP with graphs, or `own_stream` for a fold that
    trains next to others). `note(text)` records what the user should know."""

    def __init__(self, model, optimizer, train: Features, collator: Collator, cfg, device: torch.device,
                 amp_dtype, compile_mode: str, dist=None, desc: str = "train", note=print, own_stream: bool = False):
        self.model, self.optimizer, self.train, self.collator, self.cfg = model, optimizer, train, collator, cfg
        self.device, self.amp_dtype, self.compile_mode, self.desc, self.note = device, amp_dtype, compile_mode, desc, note
        self.dist = dist if dist is not None and dist.ddp else None
        self.lengths = train.lengths()
        self.accum = cfg.grad_accum
        graphed = compile_mode in GRAPH_MODES
        # DDP with graphs: DDP is built, and every step runs, on one non-default stream (graphs.py).
        # own_stream: this fold trains next to others (concurrent.py), each on its own stream.
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" and (
            (self.dist and graphed) or own_stream) else None
        with self.on_stream():
            self.net: Any = wrap_ddp(model, device, graphed) if self.dist else model
        self.forward = compile_forward(self.net, compile_mode)
        # Under DDP one process's out-of-memory retry would split its steps differently from the others'
        # (their all-reduces would no longer pair up): the OOM stops the run, with advice, instead.
        self.oom_retry = cfg.oom_retry and not self.dist
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.graphs: step_graphs.StepGraphs | None = None  # built by `use_graphs` once the optimizer exists

    def use_graphs(self) -> None:
        if self.compile_mode in GRAPH_MODES:
            self.graphs = step_graphs.StepGraphs(
                self.forward, self.model, self.optimizer, self.amp_dtype, self.cfg.max_grad_norm,
                min_eager=step_graphs.DDP_MIN_EAGER if self.dist else 1, stream=self.stream)

    @contextlib.contextmanager
    def on_stream(self):
        """Run the block on the executor's stream (if any), after all work queued so far."""
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield

    def mine(self, step_batch: list[int]) -> list[int]:
        """This process's examples of the step."""
        return self.dist.shard(step_batch) if self.dist else step_batch

    def run(self, step_batch: list[int], step: int) -> torch.Tensor:
        """Step number `step` (0-based) as a graph replay if it can be one, else eagerly."""
        loss = self.graph_step(step_batch)
        return self.eager_step(step_batch, step) if loss is None else loss

    def graph_step(self, step_batch: list[int]) -> torch.Tensor | None:
        """The step as one CUDA graph replay; None when it must run eagerly (see graphs.py).

        Under DDP every process pads its share to the whole step's width, so all run the same
        shape; a step that does not split evenly (an epoch's last) runs eagerly on all of them."""
        if self.graphs is None or self.accum != 1:
            return None
        if self.dist:
            if len(step_batch) % self.dist.world:
                return None
            mine = self.dist.shard(step_batch)
            batch = to_device(self.collator(mine, width=self.collator.width(self.dist.shards(step_batch))), self.device)
        else:
            mine = step_batch
            batch = to_device(self.collator(step_batch), self.device)
        loss = self.graphs.step(batch)
        return None if loss is None else loss.detach() * len(mine)

    def eager_step(self, step_batch: list[int], step: int) -> torch.Tensor:
        """Forward/backward (retrying smaller micro-batches after an OOM if asked) and the update."""
        self.optimizer.zero_grad(set_to_none=True)  # after graph replays the gradients point into their pool
        while True:
            try:
                step_loss = self.accumulate(step_batch)
                break
            except torch.cuda.OutOfMemoryError:
                pass  # handled below, outside `except`: the exception's frames pin the activations
            self.optimizer.zero_grad(set_to_none=True)  # drop the partial step
            release_cuda_memory(self.device)
            self.after_oom(step_batch, step)
        apply_update(self.model, self.optimizer, self.scaler, self.cfg.max_grad_norm)
        return step_loss

    def after_oom(self, step_batch: list[int], step: int) -> None:
        """Double the accumulation (--oom-retry) or stop with what would fit."""
        cfg = self.cfg
        longest = max(self.lengths[i] for i in step_batch)
        advice = oom_advice(cfg, self.accum, longest, self.model.spec.max_length, can_retry=not self.dist)
        if not self.oom_retry or -(-len(step_batch) // self.accum) == 1:
            raise OutOfMemory(f"{self.desc}: CUDA ran out of memory at step {step + 1} with a {advice}")
        self.accum *= 2
        self.note(f"CUDA out of memory at step {step + 1}: continued with --grad-accum {self.accum} "
                  f"(micro-batch {-(-cfg.batch_size // self.accum)}, same effective batch of {cfg.batch_size})")

    def accumulate(self, step_batch: list[int]) -> torch.Tensor:
        """Forward/backward over the step's micro-batches; the summed loss as a device tensor."""
        parts = micro_batches(self.mine(step_batch), self.accum)
        # DDP averages gradients over processes: scale so the result is the mean over the whole step.
        world = self.dist.world if self.dist else 1
        total = torch.zeros((), device=self.device)
        for j, (part, batch) in enumerate(zip(parts, iterate(self.train, parts, self.collator, self.device))):
            sync_now = not self.dist or j == len(parts) - 1  # all-reduce once, with the last micro-batch
            with contextlib.nullcontext() if sync_now else self.net.no_sync():
                if self.compile_mode == "reduce-overhead":
                    torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs are dead
                with autocast(self.device, self.amp_dtype):
                    _, loss = self.forward(**batch)
                scaled = loss * (len(part) * world / len(step_batch))  # exact mean over the step's examples
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach() * len(part)
        return total

    def close(self) -> dict:
        """After the last step: join the stream, free the graphs' pool; how the steps ran."""
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        stats: dict = self.graphs.stats() if self.graphs is not None else {}
        self.graphs = None  # the graphs' memory pool is freed with them
        return stats
