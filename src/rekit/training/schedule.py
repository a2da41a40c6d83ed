"""When things happen: which examples each optimizer step trains on (`BatchSchedule`) and at
which steps the loop checks the loss, evaluates and saves (`CheckPolicy`). Pure bookkeeping:
no tensors, no files, so both are testable alone and shared by fine-tuning and pretraining."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np

from rekit.encoding.collate import bucket_batches
from rekit.training.state import Progress


class BatchSchedule:
    """Every epoch a fresh length-bucketed order, drawn from `rng` when the epoch begins. The RNG's
    state at that moment is kept in `Progress.epoch_rng`, so a resume in mid-epoch redraws the same
    order and skips the steps already done. `total` may be lowered while running (a time budget)."""

    def __init__(self, lengths: list[int], batch_size: int, epochs: int, rng: np.random.Generator, world: int = 1):
        self.lengths, self.batch_size, self.epochs, self.rng, self.world = lengths, batch_size, epochs, rng, world
        self.steps_per_epoch = math.ceil(len(lengths) / batch_size)
        self.total = epochs * self.steps_per_epoch

    def remaining(self, p: Progress) -> Iterator[list[int]]:
        """The remaining steps' example indices (the caller advances `p.step` after each)."""
        spe = self.steps_per_epoch
        for epoch in range(p.step // spe, self.epochs):
            p.epoch_rng = dict(self.rng.bit_generator.state)  # a mid-epoch resume redraws this epoch from here
            batches = bucket_batches(self.lengths, self.batch_size, self.rng)
            if len(batches) > 1 and len(batches[-1]) < self.world:
                batches[-2:] = [batches[-2] + batches[-1]]  # DDP: every process needs a share of every step
            for batch in batches[p.step - epoch * spe :]:
                if p.step >= self.total:  # a shortened schedule ends inside an epoch
                    return
                yield batch

    def restore(self, p: Progress) -> None:
        self.rng.bit_generator.state = p.epoch_rng

    def rng_to_save(self, p: Progress) -> dict:
        """The batch RNG state a resume at `p.step` starts from: at an epoch end the RNG already
        stands where the next epoch begins; inside an epoch, where this one began."""
        return dict(self.rng.bit_generator.state) if p.step % self.steps_per_epoch == 0 else p.epoch_rng

    def epoch(self, step: int) -> float:
        return step / self.steps_per_epoch


class CheckPolicy:
    """At which steps the loop leaves the hot path: evaluate at every epoch end and every
    `eval_every` steps (and, with `eval_at_total`, at a shortened schedule's last step); save the
    training state at epoch ends (with `epoch_save_seconds`, at most that often: short epochs
    would spend more time saving than training), every `save_every` steps and when stopping on a
    signal (never with save_every=-1). Anything else is a plain step with no host sync."""

    def __init__(self, schedule: BatchSchedule, eval_every: int = 0, save_every: int = 0, eval_at_total: bool = False,
                 epoch_save_seconds: float = 0.0):
        self.schedule, self.eval_every, self.save_every, self.eval_at_total = schedule, eval_every, save_every, eval_at_total
        self.stateful = save_every >= 0
        self.epoch_save_seconds = epoch_save_seconds
        self.last_save = time.monotonic()

    def due(self, step: int, halted) -> tuple[bool, bool]:
        """(evaluate now, save the state now) after optimizer step `step`."""
        epoch_end = step % self.schedule.steps_per_epoch == 0 or (self.eval_at_total and step >= self.schedule.total)
        do_eval = epoch_end or bool(self.eval_every and step % self.eval_every == 0)
        if epoch_end and self.epoch_save_seconds > 0:  # read the clock at epoch ends only
            epoch_end = time.monotonic() - self.last_save >= self.epoch_save_seconds
        do_save = self.stateful and bool(epoch_end or (self.save_every > 0 and step % self.save_every == 0) or halted)
        if do_save:
            self.last_save = time.monotonic()
        return do_eval, do_save
