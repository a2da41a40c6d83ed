"""MLM pretraining as a client of the training engine (engine.py): `MLMTrainer` is one
pretraining run as an object, driven by the same loop, schedule, check policy, signal handling
and resumable state as a fine-tuning fold. What differs is only what a step and an evaluation
are (`MLMStep`: masked-position loss eagerly, all-position loss in CUDA graphs; the held-out
MLM loss), the time budget (`--max-minutes` shortens the schedule while it runs), and where
the files go: the run works in `OUT.partial/` (training state, log, tokenizer) and the finished
encoder directory replaces OUT in one rename (`publish`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rekit.encoding.collate import to_device
from rekit.errors import RekitError
from rekit.io import atomic_write_text
from rekit.runtime import autocast
from rekit.training import checkpoint
from rekit.training import graphs as step_graphs
from rekit.training.interrupts import OutOfMemory, StopRequests, TrainingInterrupted
from rekit.training.optim import LRPlan, apply_update
from rekit.training.reporting import progress_bar
from rekit.training.schedule import BatchSchedule, CheckPolicy
from rekit.training.state import FitResult, Progress, as_dict, host_lr, load_into

LOG_FILE = "pretrain.jsonl"
FIT_AT = (20, 220, 1020)  # steps at which --max-minutes re-fits the schedule to the measured step time
# What a step's graph reads: the masked positions come padded to a size fixed by the batch shape
# (MLMCollator's target_slack), so the vocabulary logits are computed there only, in a graph too.
GRAPH_KEYS = ("input_ids", "attention_mask", "target_index", "target_labels")


def work_dir(out: Path) -> Path:
    """Where an unfinished pretraining into `out` keeps its state (beside it: same file system)."""
    return out.with_name(out.name + ".partial")


class MLMStep:
    """One pretraining step: a CUDA graph replay when it can be one (graphs.py), else eager; either
    way `loss(model, batch)` computes vocabulary logits at the masked positions only. Returns the
    batch's mean loss, on the device. `graph_keys`: the batch entries a graph takes as inputs."""

    def __init__(self, model, optimizer, amp_dtype, max_grad_norm: float, device: torch.device, graphed: bool,
                 loss, graph_keys: tuple[str, ...] = GRAPH_KEYS):
        self.model, self.optimizer, self.amp_dtype, self.device = model, optimizer, amp_dtype, device
        self.max_grad_norm, self.loss, self.graph_keys = max_grad_norm, loss, graph_keys
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.graphs = None
        if graphed:
            forward = lambda **b: (None, loss(model, b))  # noqa: E731
            self.graphs = step_graphs.StepGraphs(forward, model, optimizer, amp_dtype, max_grad_norm)

    def run(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.graphs.step({k: batch[k] for k in self.graph_keys}) if self.graphs else None
        return self.eager(batch) if loss is None else loss.detach()  # eager: first step, new shape, no graphs

    def eager(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns the loss detached, so no autograd graph outlives the step (a live one would tie
        the gradients to this stream and break a later capture)."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp_dtype):
            loss = self.loss(self.model, batch)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        apply_update(self.model, self.optimizer, self.scaler, self.max_grad_norm)
        return loss.detach()

    def close(self) -> dict | None:
        stats = self.graphs.stats() if self.graphs else None
        self.graphs = None
        return stats


class MLMTrainer:
    """One pretraining run (see engine.py for the methods the loop calls). `data` holds the
    corpus split and collators; `validate()` gives the held-out loss."""

    def __init__(self, model, step: MLMStep, scheduler, plan: LRPlan, train, collate, s, work: Path,
                 validate, device: torch.device, echo=print):
        self.model, self.step, self.scheduler, self.plan, self.collate, self.s = model, step, scheduler, plan, collate, s
        self.work, self.validate, self.device, self.echo = work, validate, device, echo
        self.schedule = BatchSchedule(train.lengths(), s.batch_size, s.epochs, np.random.default_rng(s.seed))
        self.planned = self.schedule.total
        self.policy = CheckPolicy(self.schedule, 0, s.save_every, eval_at_total=True,
                                  epoch_save_seconds=60 * s.save_minutes)
        self.stops = StopRequests()
        self.gen = torch.Generator().manual_seed(s.seed)  # the masks; its state is part of the saved state
        self.progress, self.result = Progress(), FitResult()
        self.loss_sum = torch.zeros((), device=device)
        self.note: str | None = None  # the time budget's, or why it stopped
        self.shape = {"n_train": len(train), "steps_per_epoch": self.schedule.steps_per_epoch,
                      "epochs": s.epochs, "batch_size": s.batch_size, "seed": s.seed}
        self.t0, self.t_mark, self.mark_step, self.saved_at, self.phase = 0.0, 0.0, 0, -1, "training"
        self.bar: Any = None  # the progress bar, from `start`

    # -- the resumable state ---------------------------------------------------------------------
    def save_state(self) -> None:
        p = self.progress
        p.elapsed = time.time() - self.t0
        progress = as_dict(p) | {"epoch_rng": self.schedule.rng_to_save(p)}
        checkpoint.save_state(self.work, p.step, {
            "shape": self.shape, "model": self.model.state_dict(), "optimizer": host_lr(self.optimizer_state()),
            "scheduler": host_lr(self.scheduler.state_dict()), "plan": as_plan(self.plan),
            "scaler": self.step.scaler.state_dict() if self.step.scaler else None, "gen": self.gen.get_state(),
            "rng": checkpoint.capture_rng(), "progress": progress, "loss_sum": self.loss_sum,
            "history": self.result.history, "note": self.note})
        self.saved_at = p.step

    def optimizer_state(self) -> dict:
        return self.step.optimizer.state_dict()

    def resume(self) -> bool:
        """Continue from the state saved in the work directory; False if there is none."""
        saved = checkpoint.load_state(self.work)
        if saved is None:
            return False
        if saved["shape"] != self.shape:
            raise RekitError(f"{self.work / checkpoint.STATE_FILE} was saved for another corpus or schedule "
                             f"({saved['shape']}, now {self.shape}); delete {self.work} to start over")
        self.model.load_state_dict(saved["model"])
        self.step.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.plan.__dict__.update(saved["plan"])
        self.schedule.total = self.plan.total
        if self.step.scaler is not None and saved["scaler"]:
            self.step.scaler.load_state_dict(saved["scaler"])
        self.gen.set_state(saved["gen"])
        checkpoint.restore_rng(saved["rng"])
        load_into(self.progress, saved["progress"])
        self.schedule.restore(self.progress)
        self.loss_sum = saved["loss_sum"].to(self.device)
        self.result.history, self.note = saved["history"], saved["note"]
        self.saved_at = self.progress.step
        prune_log(self.work / LOG_FILE, self.progress.step)
        self.echo(f"pretrain: resuming at step {self.progress.step}/{self.schedule.total}")
        return True

    # -- the loop's calls ------------------------------------------------------------------------
    def start(self) -> None:
        p = self.progress
        self.t0 = time.time() - p.elapsed
        self.t_mark, self.mark_step = time.time(), p.step
        self.bar = progress_bar(self.schedule.total, p.step, "pretrain", self.s.progress)

    def train_step(self, idx: list[int]) -> None:
        batch = to_device(self.collate(idx, self.gen), self.device)
        self.loss_sum += self.step.run(batch)
        self.progress.loss_count += 1
        if self.s.max_minutes and self.progress.step + 1 in FIT_AT:
            self.fit_budget(self.progress.step + 1)
        self.scheduler.step()  # the next step's learning rate, from the (possibly shortened) plan

    def fit_budget(self, step: int) -> None:
        """Measure the step time after 20 steps (includes start-up costs, so it errs short), over
        the next 200, and over the 800 after those (by then every common batch shape has its CUDA
        graph: the captures no longer inflate it); fit the schedule each time."""
        now = time.time()
        per_step = (now - self.t_mark) / max(1, step - self.mark_step)
        self.t_mark, self.mark_step = now, step
        total, note = fit_budget(step, self.planned, per_step, self.s.max_minutes * 60 - (now - self.t0),
                                 self.schedule.steps_per_epoch)
        self.plan.total, self.note = total, note
        self.plan.warmup = min(self.plan.warmup, max(1, int(round(self.s.warmup_ratio * total))))
        self.schedule.total = self.bar.total = total

    def loss_finite(self) -> bool:
        return True  # checked per epoch in `evaluate`, where the row is logged first

    def stop_nonfinite(self) -> None:  # pragma: no cover - loss_finite is always True
        pass

    def evaluate(self) -> bool:
        p = self.progress
        train_loss = (self.loss_sum / max(1, p.loss_count)).item()
        self.loss_sum, p.loss_count = torch.zeros((), device=self.device), 0
        valid_loss = self.validate()
        row = {"epoch": math.ceil(self.schedule.epoch(p.step)), "step": p.step,
               "lr": float(self.step.optimizer.param_groups[0]["lr"]), "train_loss": round(train_loss, 4),
               "valid_loss": round(valid_loss, 4), "valid_perplexity": round(math.exp(min(valid_loss, 50)), 2),
               "time": round(time.time() - self.t0, 1)}
        self.result.history.append(row)
        with open(self.work / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        self.bar.set_postfix(loss=f"{train_loss:.3f}", vloss=f"{valid_loss:.3f}", ppl=f"{row['valid_perplexity']:.1f}")
        if not math.isfinite(train_loss):
            self.note = self.result.stopped = f"stopped: non-finite loss at step {p.step}"
        return False  # no best checkpoint: the encoder is the last weights

    def save_best(self) -> None:  # pragma: no cover - evaluate never reports a new best
        pass

    def end_segment(self) -> None:
        pass

    def interrupted(self, signame: str) -> TrainingInterrupted:
        p, stateful = self.progress, self.policy.stateful
        if stateful and self.saved_at != p.step:
            self.save_state()
        saved = "the training state is saved" if stateful else "no training state (--save-every -1)"
        return TrainingInterrupted(f"stopped by {signame} at step {p.step}/{self.schedule.total} of pretraining; {saved}")

    def close(self) -> dict | None:
        if self.bar is not None:
            self.bar.close()
        return self.step.close()

    def out_of_memory(self, batch_size: int, max_length: int) -> OutOfMemory:
        phase = "evaluating" if self.phase == "evaluation" else "training"
        return OutOfMemory(f"pretrain: CUDA ran out of memory {phase} at step {self.progress.step + 1} "
                           f"(--batch-size {batch_size}, --max-length {max_length}); try --batch-size "
                           f"{max(1, batch_size // 2)} or --max-length {max(8, max_length // 2)}, or a smaller "
                           "--scratch-size")


def as_plan(plan: LRPlan) -> dict:
    return dict(plan.__dict__)


def prune_log(path: Path, step: int) -> None:
    """Drop rows written after the saved state (they are written again) and a torn last line."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(line + "\n")
    atomic_write_text(path, "".join(keep))


def fit_budget(step: int, planned: int, per_step: float, seconds_left: float, steps_per_epoch: int
               ) -> tuple[int, str | None]:
    """Total steps that fit the time left (10 % held back for validation passes and saving),
    never more than planned: the schedule's decay then still reaches zero at the end."""
    fits = step + int(max(0.0, seconds_left * 0.9) / max(per_step, 1e-9))
    if fits >= planned:
        return planned, None
    total = max(step + 1, fits)
    return total, (f"time budget: {total:,} of {planned:,} planned steps ({total / steps_per_epoch:.1f} of "
                   f"{planned / steps_per_epoch:.0f} epochs) at {per_step * 1000:.0f} ms/step")


def publish(work: Path, out: Path, model, tokenizer, summary: dict) -> None:
    """Write the encoder directory complete in the work directory, then swap it in for `out`:
    an earlier `out` (--overwrite) is removed only once the new one is in place."""
    staged = work / "encoder"
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(staged)
    tokenizer.save_pretrained(staged)
    if (work / LOG_FILE).is_file():
        shutil.copyfile(work / LOG_FILE, staged / LOG_FILE)
    atomic_write_text(staged / "pretrain.json", json.dumps(summary, indent=2) + "\n")
    previous = work / "previous"
    if out.exists():
        os.replace(out, previous)
    os.replace(staged, out)
    shutil.rmtree(work)
