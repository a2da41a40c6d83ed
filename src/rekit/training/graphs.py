"""Whole training steps as CUDA graphs: forward, backward, clipping and AdamW, one replay per step.

At batch 32 a transformer step launches thousands of small kernels and the GPU waits on the
host (BENCHMARKS.md, "Training throughput"). Here each padded batch shape (rows x length) is
captured once, the second time it is seen, into a graph that holds the whole step; every later
step of that shape copies its token ids into the graph's static inputs and replays it. The
host then issues one launch per step, whatever the model's size.

What a graph needs, and how the loop provides it:
- shapes are bounded: the collator pads lengths to a multiple (8 by default); the first step of
  a shape runs eagerly, the second captures its graph and replays it;
- the optimizer is capturable (step counts and learning rate live on the GPU; the scheduler
  writes the learning rate into its tensor in place) and has its state before any capture,
  so the first step of a run is always eager;
- nothing in the step reads a value back to the host (the loss stays on the device);
- no autograd graph of an earlier eager step is still alive (its gradient nodes would belong to
  another stream): eager steps return their loss detached.

Graphs share one memory pool: they never run concurrently and each replay recomputes everything
it reads except its inputs, the weights and the optimizer state (allocated outside the pool).
The only output read after a replay, the loss, is consumed before the next replay.

Under DDP (several processes, one GPU each) the graph also holds DDP's gradient all-reduces,
overlapped with the backward as in eager steps. What that needs, following PyTorch's notes on
CUDA graphs with DDP:
- every process captures and replays the same shapes at the same steps: the loop pads each
  process's share of a step to the step's width and runs steps that do not split evenly eagerly;
  every decision here (capture, replay, eager) depends only on the shapes, so all processes agree;
- DDP runs at least `min_eager` (11) eager steps before the first capture: its bucket rebuild and
  its first iterations' timing statistics happen then;
- DDP keeps the autograd nodes that accumulate gradients, and each runs on the stream that was
  current when DDP was built. So DDP is built, and every step (eager, warm-up and capture) runs,
  on one non-default stream (`stream`, from loop.py), and no gradient crosses streams;
- DDP's later timing samples (every 100th iteration by default) are turned off, so none falls on
  a capture.

Not used (the loop runs eagerly instead) with gradient accumulation, fp16 loss scaling or on a
CPU; `usable()` says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from rekit.errors import RekitError
from rekit.runtime import autocast
from rekit.training.optim import clip_and_step

DDP_MIN_EAGER = 11  # PyTorch's notes: at least 11 DDP-enabled eager iterations before a capture


def usable(device: torch.device, accum: int, amp_dtype) -> str | None:
    """None if whole-step graphs can run here, else the reason they cannot."""
    if device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if accum != 1:
        return "gradient accumulation (--grad-accum > 1) runs eagerly"
    if amp_dtype == torch.float16:
        return "fp16 loss scaling runs eagerly (use --precision bf16)"
    return None


class GraphCaptureError(RekitError):
    """A step could not be captured as a CUDA graph (the message says how to run without)."""


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]
    loss: torch.Tensor


class StepGraphs:
    """`step(batch)` runs one whole training step from a graph, or returns None when the caller
    must run it eagerly (the run's first step, or a shape seen for the first time: its graph is
    then captured before the next step of that shape)."""

    def __init__(self, forward, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 amp_dtype, max_grad_norm: float, max_graphs: int = 64, min_eager: int = 1,
                 stream: torch.cuda.Stream | None = None):
        self.forward, self.optimizer = forward, optimizer
        self.params = [q for q in model.parameters() if q.requires_grad]  # what clipping sees
        self.amp_dtype, self.max_grad_norm, self.max_graphs = amp_dtype, max_grad_norm, max_graphs
        self.min_eager = min_eager  # eager steps before the first capture (1: the optimizer's state exists)
        self.stream = stream  # where steps run and are captured (DDP); None: warm up on a side stream
        self.graphs: dict[tuple, _Graph] = {}
        self.pending: set[tuple] = set()  # shapes seen once: captured when seen again
        self.pool: Any = None  # the graphs' shared memory pool, from the first capture
        self.capture_seconds = 0.0
        self.replays = 0
        self.eager_steps = 0

    @staticmethod
    def key(batch: dict[str, torch.Tensor]) -> tuple:
        return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(batch.items()))

    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Replay (capturing first if needed) the step for this batch; the loss (a device tensor,
        valid until the next step) or None = run this step eagerly."""
        key = self.key(batch)
        g = self.graphs.get(key)
        if g is None:
            # Capture on the second sighting: a shape seen once (a rare long batch) never pays for a
            # capture, and the optimizer has its state by then (the first step is always eager).
            if (key not in self.pending or len(self.graphs) >= self.max_graphs or not self.optimizer.state
                    or self.eager_steps < self.min_eager):
                self.pending.add(key)
                self.eager_steps += 1
                return None
            try:
                g = self._capture(key, batch)
            except torch.cuda.OutOfMemoryError:
                raise  # the loop's OOM handling says what would fit
            except RuntimeError as e:
                # A failed capture leaves CUDA's random-number state unusable (dropout would fail next),
                # so there is no eager fallback within this process: stop with what to do instead.
                raise GraphCaptureError(
                    f"CUDA graph capture of a training step failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    "rerun without CUDA graphs: rekit train --compile off, rekit pretrain --no-graphs") from e
        for name, t in g.inputs.items():
            t.copy_(batch[name], non_blocking=True)
        g.graph.replay()
        self.replays += 1
        return g.loss

    def _fwd_bwd(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(self.params[0].device, self.amp_dtype, cache=False):
            _, loss = self.forward(**inputs)
        loss.backward()
        return loss

    def _capture(self, key: tuple, batch: dict[str, torch.Tensor]) -> _Graph:
        t0 = time.perf_counter()
        for group in self.optimizer.param_groups:
            if not isinstance(group["lr"], torch.Tensor):  # a float would be frozen into the graph
                group["lr"] = torch.tensor(float(group["lr"]), device=self.params[0].device)
        inputs = {k: v.clone() for k, v in batch.items()}
        # Warm up this shape off the default stream (library workspaces, lazy inits), forward and
        # backward only: the weights and the optimizer state are not touched.
        side = self.stream or torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.optimizer.zero_grad(set_to_none=True)
            self._fwd_bwd(inputs)
            self.optimizer.zero_grad(set_to_none=True)  # the capture must create the gradients itself
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            loss = self._fwd_bwd(inputs).detach()
            clip_and_step(self.optimizer, self.params, self.max_grad_norm)
        if self.pool is None:
            self.pool = graph.pool()
        # The gradients now point into the pool; eager steps must start from none.
        self.optimizer.zero_grad(set_to_none=True)
        g = self.graphs[key] = _Graph(graph, inputs, loss)
        self.pending.discard(key)
        self.capture_seconds += time.perf_counter() - t0
        return g

    def stats(self) -> dict:
        return {"graphs": len(self.graphs), "replays": self.replays, "eager_steps": self.eager_steps,
                "capture_s": round(self.capture_seconds, 2)}
