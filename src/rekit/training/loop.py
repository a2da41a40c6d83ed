"""Fit one split: train, evaluate every epoch (or every N steps), keep the best checkpoint.

`fit()` builds a `FoldTrainer` (one fold's training as an object) and runs the shared loop
(engine.run). Gradient accumulation is exact: each optimizer step's batch is drawn first and
then cut into micro-batches, each weighted by its share of the step's examples, so
`--grad-accum` changes memory use, not the optimisation (an epoch's short last batch is still
one correctly scaled step).

Surviving failures: the resumable training state (state.py, stored by checkpoint.py) is saved
at check points, so a killed fold restarts where it stopped and ends exactly where an
uninterrupted one would (CPU, deterministic mode). A non-finite loss stops the fold with its
best checkpoint kept; CUDA out-of-memory says what would fit (or retries with smaller
micro-batches: executor.py); Ctrl-C stops at the next step boundary with the state saved
(interrupts.py). On CUDA most steps are replays of whole-step CUDA graphs (graphs.py).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rekit.config import TrainConfig
from rekit.data.labels import LabelMap
from rekit.encoding.collate import Collator
from rekit.encoding.tokenize import Features
from rekit.errors import ConfigError, RekitError
from rekit.metrics import evaluate
from rekit.modeling.inference import predict_proba
from rekit.modeling.model import REModel
from rekit.runtime import autocast_dtype
from rekit.training import checkpoint, engine
from rekit.training import graphs as step_graphs
from rekit.training.executor import StepExecutor, micro_batches, wrap_ddp
from rekit.training.interrupts import (
    STOP_CHECK_EVERY,
    NonFiniteLoss,
    OutOfMemory,
    StopRequests,
    TrainingInterrupted,
    release_cuda_memory,
)
from rekit.training.optim import make_optimizer, make_scheduler
from rekit.training.reporting import MetricsLog, Throughput, progress_bar
from rekit.training.schedule import BatchSchedule, CheckPolicy
from rekit.training.state import FitResult, Progress, as_dict, host_lr, load_into
from rekit.training.step import GRAPH_MODES, always_pad, pad_multiple, resolve_compile

__all__ = ["STOP_CHECK_EVERY", "FitResult", "MetricsLog", "Progress", "fit", "host_lr", "micro_batches", "wrap_ddp"]

LOWER_IS_BETTER = {"loss"}


def better(score: float, best: float, metric: str) -> bool:
    if math.isnan(score):
        return False
    return score < best if metric in LOWER_IS_BETTER else score > best


def evaluate_split(model, feats: Features, label_map: LabelMap, pad_id: int, cfg: TrainConfig,
                   device, amp_dtype, echo=None, dist=None) -> tuple[dict, np.ndarray]:
    """Metrics and probabilities over `feats`. Under DDP (`dist`, a Dist with .ddp) each process
    predicts its share of the rows and all gather the rest, so every process decides on the same,
    whole result."""
    if dist is not None and dist.ddp and len(feats) >= dist.world:
        mine = dist.shard(list(range(len(feats))))
        probs = dist.gather_rows(predict_proba(model, feats.subset(mine), pad_id, cfg.eval_batch_size, device,
                                               amp_dtype, echo=echo), len(feats), device)
    else:
        probs = predict_proba(model, feats, pad_id, cfg.eval_batch_size, device, amp_dtype, echo=echo)
    y = np.asarray(feats.labels)
    metrics = evaluate(y, probs, label_map)
    metrics["loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))
    return metrics, probs


def fit(model: REModel, tokenizer, label_map: LabelMap, train: Features, valid: Features,
        cfg: TrainConfig, fold_dir: Path, seed: int, device: torch.device,
        log: MetricsLog | None = None, desc: str = "train", callbacks=(), resume: bool = False,
        echo=None, dist=None, trainer: type[FoldTrainer] | None = None) -> FitResult:
    """Train `model` on `train`, select on `valid`, save the best weights in `fold_dir`.

    `callbacks` are called with each evaluation's row (a dict, as written to metrics.jsonl);
    one may raise to stop the run (e.g. an HPO pruner).

    The training state is saved in `fold_dir` at every epoch end, every `cfg.save_every` steps and
    with every new best checkpoint (never with save_every=-1); with `resume=True` a saved state is
    continued. The caller removes it (`checkpoint.clear_state`) once the fold's results are saved.

    `dist` (training.distributed.Dist) with mode "ddp": every process runs this same loop on its
    share of each step's batch under DistributedDataParallel; evaluation decisions are identical
    on all processes (same weights, same validation set) and only the main process writes files.
    Every evaluation row also reports the training throughput since the previous evaluation.
    `trainer`: a FoldTrainer subclass with another best-checkpoint rule (training/distill.py).
    """
    if cfg.save_every < -1:
        raise ConfigError(f"--save-every must be >= -1 (-1: never), got {cfg.save_every}")
    t = (trainer or FoldTrainer)(model, tokenizer, label_map, train, valid, cfg, Path(fold_dir), seed, device,
                                 log=log, desc=desc, callbacks=callbacks, echo=echo, dist=dist)
    if resume:
        t.resume()
    t.start()
    oom = False
    try:
        with t.stops, t.executor.on_stream():
            engine.run(t)
    except torch.cuda.OutOfMemoryError:
        oom = True  # raised below, outside `except`, so the failed step's memory can be freed
    finally:
        t.close()
    if oom:
        release_cuda_memory(device)
        raise t.out_of_memory()
    return t.result


class FoldTrainer:
    """One fold's training: the model, its step executor, schedule, policy and resumable state
    (see engine.py for the methods the loop calls). Nothing lives in closures or globals, so a
    fold can be advanced step by step next to others."""

    def __init__(self, model: REModel, tokenizer, label_map: LabelMap, train: Features, valid: Features,
                 cfg: TrainConfig, fold_dir: Path, seed: int, device: torch.device, log: MetricsLog | None = None,
                 desc: str = "train", callbacks=(), echo=None, dist=None, concurrent: int | None = None):
        """concurrent: this fold's place in a group of folds training at once (concurrent.py): its
        steps run on their own CUDA stream and its progress bar on line `concurrent`."""
        from tqdm.auto import tqdm

        self.model, self.tokenizer, self.label_map, self.valid, self.cfg = model, tokenizer, label_map, valid, cfg
        self.fold_dir, self.device, self.log, self.desc, self.callbacks = fold_dir, device, log, desc, callbacks
        self.echo = echo or tqdm.write
        self.dist = dist
        self.ddp = dist is not None and dist.ddp
        self.main = not self.ddp or dist.is_main  # this process writes the fold's files (fold-parallel: each its own)
        model.to(device).train()
        self.amp_dtype = autocast_dtype(cfg.precision, device)
        compile_mode = self._compile_mode()
        self.optimizer = make_optimizer(model, cfg, device, capturable=compile_mode in GRAPH_MODES)
        collator = Collator(train, tokenizer.pad_token_id, multiple_of=pad_multiple(cfg.pad_multiple, compile_mode, device),
                            always_pad=always_pad(compile_mode))
        self.executor = StepExecutor(model, self.optimizer, train, collator, cfg, device, self.amp_dtype, compile_mode,
                                     dist=dist, desc=desc, note=self._note, own_stream=concurrent is not None)
        self.bar_line = concurrent
        if cfg.oom_retry and self.ddp:
            self.echo(f"{desc}: --oom-retry is off under --parallel ddp (every process must split its steps alike); "
                      "an out-of-memory error stops the run and says which --grad-accum would fit")
        self.schedule = BatchSchedule(train.lengths(), cfg.batch_size, cfg.epochs, np.random.default_rng(seed),
                                      world=dist.world if self.ddp else 1)  # batch order: part of the saved state
        self.scheduler = make_scheduler(self.optimizer, cfg, self.schedule.total)
        self.executor.use_graphs()
        self.policy = CheckPolicy(self.schedule, cfg.eval_every, cfg.save_every)
        self.stops = StopRequests(dist, device)
        self.throughput = Throughput(train.lengths())
        self.shape = {"n_train": len(train), "n_valid": len(valid), "steps_per_epoch": self.schedule.steps_per_epoch,
                      "total_steps": self.schedule.total, "seed": seed}
        if self.main:
            model.save(fold_dir, tokenizer, label_map, weights=False)  # the weights come with the first evaluation
        self.result = FitResult(best_score=float("inf") if cfg.metric in LOWER_IS_BETTER else float("-inf"))
        self.progress = Progress(accum=cfg.grad_accum)
        self.loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
        self.saved_at, self.phase, self.t0 = -1, "training", 0.0
        self.best_written = -1  # the step whose best weights are on disk already (save_best skips it)
        self.bar: Any = None  # the progress bar, from `start`

    def _compile_mode(self) -> str:
        cfg = self.cfg
        mode = resolve_compile(cfg.compile, self.device, cfg.epochs)
        why_eager = step_graphs.usable(self.device, cfg.grad_accum, self.amp_dtype) if mode in GRAPH_MODES else None
        if why_eager:
            if cfg.compile != "auto":
                self.echo(f"{self.desc}: --compile {cfg.compile}: {why_eager}")
            mode = "off"
        elif cfg.compile == "auto" and mode in GRAPH_MODES:
            self.echo(f"{self.desc}: --compile auto: {mode} ({cfg.epochs} epochs per fold)")
        return mode

    def _note(self, note: str) -> None:
        self.result.notes.append(note)
        self.echo(f"{self.desc}: {note}")

    # -- the resumable state ---------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the state saved in the fold directory, if there is one."""
        saved = checkpoint.load_state(self.fold_dir)
        if saved is None:
            return
        if saved["shape"] != self.shape:
            raise RekitError(f"{self.fold_dir / checkpoint.STATE_FILE} was saved for another split or schedule "
                             f"({saved['shape']}, now {self.shape}); delete it to restart this fold")
        if saved["model"] is not None:  # None: saved after the last step (the best weights are on disk)
            self.model.load_state_dict(saved["model"])
        if saved["optimizer"] is not None:  # None: saved after the last step, when no step is left to take
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
        if self.executor.scaler is not None and saved["scaler"]:
            self.executor.scaler.load_state_dict(saved["scaler"])
        checkpoint.restore_rng(saved["rng"])
        p, result = self.progress, self.result
        load_into(p, saved["progress"])
        p.accum = self.executor.accum = max(p.accum, self.cfg.grad_accum)  # an OOM retry's, or a larger one asked for now
        self.schedule.restore(p)
        self.loss_sum = saved["loss_sum"].to(self.device)
        load_into(result, saved["result"])
        if result.best_step == p.step and result.best_probs is not None and saved["model"] is not None:
            # Saved at a new best, which is written after the state: the kill may have come between.
            self.model.save_weights(self.fold_dir)
        self.saved_at = p.step
        self.echo(f"{self.desc}: resuming at step {p.step}/{self.schedule.total} (epoch {self.schedule.epoch(p.step):.3g}); "
                  f"best {self.cfg.metric} so far {result.best_score:.4g} at step {result.best_step}")

    def save_state(self) -> None:
        p = self.progress
        if not self.main:  # one copy of the state (the weights are the same on every process)
            self.saved_at = p.step
            return
        p.elapsed = time.time() - self.t0
        p.accum = self.executor.accum
        progress = as_dict(p) | {"epoch_rng": self.schedule.rng_to_save(p)}
        scaler = self.executor.scaler
        # After the last step no step is left: what a resume needs to finish the fold is the result and
        # the best weights, not the model or the optimizer's moments. A last step that is the new best
        # has its weights written first, here, and once.
        final = p.step >= self.schedule.total
        if final and self.result.best_step == p.step:
            self.save_best()
        checkpoint.save_state(self.fold_dir, p.step, {
            "shape": self.shape, "model": None if final else self.model.state_dict(),
            "optimizer": None if final else host_lr(self.optimizer.state_dict()),
            "scheduler": None if final else host_lr(self.scheduler.state_dict()),
            "scaler": scaler.state_dict() if scaler and not final else None,
            "rng": checkpoint.capture_rng(), "progress": progress, "loss_sum": self.loss_sum,
            "result": as_dict(self.result)})
        self.saved_at = p.step

    def save_best(self) -> None:
        if self.main and self.best_written != self.progress.step:
            self.model.save_weights(self.fold_dir)
            self.best_written = self.progress.step

    # -- the loop's calls ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the session's clock and progress bar (after any resume)."""
        p, dist = self.progress, self.dist
        self.t0 = time.time() - p.elapsed
        # DDP: the main process's bar stands for all; fold-parallel: one line per process.
        line = dist.rank if dist is not None and dist.active and dist.mode == "folds" else self.bar_line
        self.bar = progress_bar(self.schedule.total, p.step, self.desc, self.cfg.progress and self.main, position=line)

    def train_step(self, step_batch: list[int]) -> None:
        p = self.progress
        step_loss = self.executor.run(step_batch, p.step)
        self.scheduler.step()
        self.loss_sum += step_loss
        p.loss_count += len(self.executor.mine(step_batch))
        self.throughput.add(step_batch)

    def train_loss(self) -> float:
        """Mean training loss since the last evaluation, over all processes under DDP (a host sync)."""
        p = self.progress
        if not self.ddp:
            return (self.loss_sum / max(1, p.loss_count)).item()
        t = torch.stack([self.loss_sum.float(), torch.tensor(float(p.loss_count), device=self.device)])
        torch.distributed.all_reduce(t)
        return (t[0] / t[1].clamp(min=1)).item()

    def loss_finite(self) -> bool:
        return math.isfinite(self.train_loss() if self.ddp else self.loss_sum.item())

    def stop_nonfinite(self) -> None:
        p, result, cfg = self.progress, self.result, self.cfg
        where = f"between steps {p.checked} and {p.step}"
        if result.best_probs is None:
            raise NonFiniteLoss(f"{self.desc}: the training loss became non-finite {where}, before the first "
                                "evaluation, so there is no checkpoint to keep; lower --lr, raise --warmup-ratio "
                                "or use --precision fp32")
        result.stopped = (f"non-finite training loss {where}; stopped this fold and kept the best checkpoint "
                          f"(step {result.best_step}, {cfg.metric} {result.best_score:.4g})")
        result.nonfinite = True
        self.echo(f"{self.desc}: {result.stopped}")

    def evaluate(self) -> bool:
        """Evaluate, log, track the best. Returns True on a new best (its weights are not saved yet)."""
        p, cfg = self.progress, self.cfg
        train_loss = self.train_loss()  # one host sync per evaluation
        throughput = self.throughput.row()
        self.loss_sum, p.loss_count = torch.zeros((), device=self.device), 0
        metrics, probs = evaluate_split(self.model, self.valid, self.label_map, self.tokenizer.pad_token_id, cfg,
                                        self.device, self.amp_dtype, dist=self.dist,
                                        echo=lambda msg: self.echo(f"{self.desc}: evaluation: {msg}"))
        self.model.train()
        if not np.isfinite(probs).all():  # finite loss but broken weights (the last update overflowed)
            self.stop_nonfinite()
            return False
        p.checked = p.step
        epoch = self.schedule.epoch(p.step)
        row = {"epoch": round(epoch, 3), "step": p.step, "lr": float(max(self.scheduler.get_last_lr())),
               "train_loss": train_loss, "valid_loss": metrics["loss"],
               **{k: metrics[k] for k in ("micro_f1", "auprc", "accuracy", "macro_f1")},
               "time": round(time.time() - self.t0, 2), **throughput}
        if self.executor.graphs is not None:
            row["step_graphs"] = self.executor.graphs.stats()
        self.report(row, metrics)
        return self.track_best(metrics[cfg.metric], epoch, row, probs)

    def report(self, row: dict, metrics: dict) -> None:
        self.result.history.append(row)
        if self.log and self.main:
            self.log.write(row)
        for callback in self.callbacks:
            callback(row)
        self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", vloss=f"{metrics['loss']:.3f}",
                             acc=f"{metrics['accuracy']:.3f}", f1=f"{metrics['micro_f1']:.1f}",
                             auprc=f"{metrics['auprc']:.1f}")

    def track_best(self, score: float, epoch: float, row: dict, probs: np.ndarray) -> bool:
        """The best-and-patience policy: True on a new best; sets `result.stopped` on an early stop."""
        p, result, cfg = self.progress, self.result, self.cfg
        if better(score, result.best_score, cfg.metric) or result.best_probs is None:
            result.best_score, result.best_epoch, result.best_step = score, epoch, p.step
            result.best_metrics, result.best_probs = row, probs
            p.since_best = 0
            return True
        p.since_best += 1
        if cfg.patience and p.since_best >= cfg.patience:
            result.stopped = f"early stop: no {cfg.metric} improvement in {cfg.patience} evaluations"
        return False

    def end_segment(self) -> None:
        self.throughput.restart()  # evaluation and saving are not training time

    def interrupted(self, signame: str) -> TrainingInterrupted:
        p, stateful = self.progress, self.policy.stateful
        if stateful and self.saved_at != p.step:
            self.save_state()
        saved_note = "the training state is saved" if stateful else "no training state (--save-every -1)"
        return TrainingInterrupted(f"stopped by {signame} at step {p.step}/{self.schedule.total} of {self.desc}; "
                                   f"{saved_note}")

    # -- the end -----------------------------------------------------------------------------
    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        stats = self.executor.close()
        if stats:
            self.result.timing = stats

    def out_of_memory(self) -> OutOfMemory:
        """The error for an OOM outside the forward/backward pass (those are the executor's)."""
        cfg, p = self.cfg, self.progress
        if self.phase == "evaluation":
            return OutOfMemory(f"{self.desc}: CUDA ran out of memory evaluating at step {p.step} "
                               f"(--eval-batch-size {cfg.eval_batch_size}); try --eval-batch-size "
                               f"{max(1, cfg.eval_batch_size // 2)}")
        return OutOfMemory(f"{self.desc}: CUDA ran out of memory in the optimizer step at step {p.step + 1}; "
                           f"try a smaller model, --batch-size {max(1, cfg.batch_size // 2)} or --max-length "
                           f"{max(16, self.model.spec.max_length // 2)}")
