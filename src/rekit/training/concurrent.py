"""Several folds training at the same time on one GPU (`--concurrent-folds`).

At batch 32 one fold's step leaves an H200 partly idle: kernels too small to fill it, and gaps
while the host prepares the next batch. `fit_together` trains a group of folds in one process,
each fold a `loop.FoldTrainer` with its own model, optimizer, CUDA graphs, batch order, state
and progress bar, and each on its own CUDA stream. The host advances them in turn, one
optimizer step each (`engine.advance`); a fold's step is queued on its stream and the host
moves on, so the GPU runs one fold's kernels while the host prepares the next fold's batch and
fills one fold's gaps with another's work (BENCHMARKS.md "Several folds at once" measured the
mechanisms: streams were the best of four).

Each fold's optimisation is exactly the one it has alone: its own batches, schedule, seed,
evaluations and best-checkpoint rule. The host RNG (dropout and token masking on a CPU) is
swapped per fold around each step, so on a CPU a group of folds gives the same results as the
same folds in sequence; on a GPU only the dropout masks differ (one device generator).

Stopping: a fold that finishes, stops early or meets a non-finite loss leaves the group and the
others go on. Ctrl-C saves every fold's resumable state before the run stops, and a resumed run
continues each fold from its own state, in a group or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from rekit.training import engine
from rekit.training.interrupts import OutOfMemory, TrainingInterrupted, release_cuda_memory

HEADROOM = 0.8  # share of the free GPU memory that `auto` plans to fill


def activation_bytes(batch: int, length: int, hidden: int, layers: int, heads: int) -> int:
    """Activation memory of one bf16 training step of a transformer encoder without recomputation:
    per layer 34*s*b*h + 5*a*s^2*b bytes (Korthikanti et al. 2022, "Reducing Activation
    Recomputation in Large Transformer Models", section 4.1)."""
    s, b = length, batch
    return layers * (34 * s * b * hidden + 5 * heads * s * s * b)


def fold_bytes(model: torch.nn.Module, batch: int, length: int) -> int:
    """What one more concurrent fold needs: fp32 weights, gradients and two AdamW moments (16 bytes
    per parameter), plus one step's activations at the longest allowed length (twice the rows
    under R-Drop, which runs each row twice)."""
    cfg: Any = getattr(getattr(model, "encoder", None), "config", None)

    def size(*names: str, default: int) -> int:  # BERT-style names first, then DistilBERT's
        return next((int(getattr(cfg, n)) for n in names if isinstance(getattr(cfg, n, None), int)), default)

    params = sum(p.numel() for p in model.parameters())
    rows = batch * (2 if getattr(model, "rdrop", 0.0) > 0 else 1)
    acts = activation_bytes(rows, length, size("hidden_size", "dim", default=1024),
                            size("num_hidden_layers", "n_layers", default=24),
                            size("num_attention_heads", "n_heads", default=16))
    return 16 * params + acts


def plan(setting: str, device: torch.device, folds: int, per_fold: int | None, ddp: bool) -> tuple[int, str]:
    """(folds per group, why) for `--concurrent-folds` = setting ('auto' or a count)."""
    if folds <= 1:
        return 1, ""
    if ddp:
        return 1, "folds train one after another under --parallel ddp (every process shares each fold)"
    if setting != "auto":
        return min(int(setting), folds), ""
    if device.type != "cuda":
        return 1, ""  # nothing to overlap on a CPU
    free, _ = torch.cuda.mem_get_info(device)
    fit = int(free * HEADROOM // per_fold) if per_fold else folds
    if fit < 2:
        return 1, (f"one fold at a time: two need about {2 * (per_fold or 0) / 2**30:.1f} GiB and "
                   f"{free / 2**30:.1f} GiB of GPU memory is free")
    return min(fit, folds), ""


def groups(folds: Sequence[int], size: int) -> list[list[int]]:
    return [list(folds[i : i + size]) for i in range(0, len(folds), max(1, size))]


class HostRng:
    """One fold's host RNG state, swapped in around each of its steps."""

    def __init__(self) -> None:
        self.state = torch.get_rng_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outside = torch.get_rng_state()
        torch.set_rng_state(self.state)
        try:
            yield
        finally:
            self.state = torch.get_rng_state()
            torch.set_rng_state(outside)


def fit_together(trainers: Sequence, rngs: Sequence[HostRng], resume: bool = False,
                 on_done: Callable[[int, Any], None] | None = None) -> list:
    """Train the folds of `trainers` (loop.FoldTrainer, each built with `concurrent=` its place) in
    turn, step by step; their FitResults. `on_done(i, result)` is called as soon as trainer i has
    finished (the others may still be training), so a finished fold is saved at once."""
    stops = trainers[0].stops
    for t, rng in zip(trainers, rngs):
        t.stops = stops  # one signal handler; every fold sees the same request
        with rng.active():
            if resume:
                t.resume()
        t.start()
    oom = False
    try:
        with stops:
            _interleave(trainers, rngs, stops, on_done or (lambda i, result: None))
    except torch.cuda.OutOfMemoryError:
        oom = True  # raised below, outside `except`, so the failed step's memory can be freed
    finally:
        for t in trainers:
            t.close()
    if oom:
        release_cuda_memory(trainers[0].device)
        n = len(trainers)
        raise OutOfMemory(f"CUDA ran out of memory with {n} folds training at once; rerun with "
                          f"--concurrent-folds {max(1, n // 2)}, or 1 for one fold at a time")
    return [t.result for t in trainers]


def _interleave(trainers: Sequence, rngs: Sequence[HostRng], stops, on_done: Callable[[int, Any], None]) -> None:
    steps = [iter(t.schedule.remaining(t.progress)) if t.result.stopped is None else iter(()) for t in trainers]
    active = list(range(len(trainers)))
    try:
        while active:
            for i in list(active):
                batch = next(steps[i], None)
                if batch is None or not _advance(trainers[i], rngs[i], batch):
                    active.remove(i)
                    halted = stops.halt(0, last=True)  # arrived during its last steps: as engine.run
                    if halted:
                        raise trainers[i].interrupted(halted)
                    trainers[i].close()
                    on_done(i, trainers[i].result)
    except TrainingInterrupted:  # the fold that raised it saved its state; the others save theirs
        _save_all(trainers, active, stops)
        raise


def _advance(t, rng: HostRng, batch: list[int]) -> bool:
    with rng.active(), t.executor.on_stream():
        return engine.advance(t, batch)


def _save_all(trainers: Sequence, which, stops) -> None:
    """After a stop request: every fold of the group saves its resumable state (interrupted() does)."""
    signame = stops.requested[0] if stops.requested else "a signal"
    for i in which:
        with trainers[i].executor.on_stream():
            trainers[i].interrupted(signame)
