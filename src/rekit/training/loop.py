"""Fit one split: train, evaluate every epoch (or every N steps), keep the best checkpoint.

The whole loop is `fit()`; helpers do one thing each. Gradient accumulation is exact: each
optimizer step's batch is drawn first and then cut into micro-batches, each weighted by its
share of the step's examples, so `--grad-accum` changes memory use, not the optimisation
(an epoch's short last batch is still one correctly scaled step).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rekit.config import TrainConfig
from rekit.data.labels import LabelMap
from rekit.encoding.collate import Collator, bucket_batches, iterate
from rekit.encoding.tokenize import Features
from rekit.metrics import evaluate
from rekit.modeling.inference import predict_proba
from rekit.modeling.model import REModel
from rekit.runtime import autocast, autocast_dtype
from rekit.training.optim import make_optimizer, make_scheduler

LOWER_IS_BETTER = {"loss"}


@dataclass
class FitResult:
    best_score: float = float("-inf")
    best_epoch: float = 0.0
    best_step: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_probs: np.ndarray | None = None  # validation probabilities of the best checkpoint
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None  # why training ended early, if it did


class MetricsLog:
    """Append-only JSON Lines, flushed per line so a crash keeps every finished evaluation."""

    def __init__(self, path: Path, **fixed):
        self.path, self.fixed = path, fixed

    def write(self, row: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**self.fixed, **row}) + "\n")


def better(score: float, best: float, metric: str) -> bool:
    if math.isnan(score):
        return False
    return score < best if metric in LOWER_IS_BETTER else score > best


def micro_batches(step_batch: list[int], accum: int) -> list[list[int]]:
    """Cut one optimizer step's examples into at most `accum` near-equal micro-batches."""
    size = -(-len(step_batch) // accum)
    return [step_batch[i : i + size] for i in range(0, len(step_batch), size)]


def evaluate_split(model, feats: Features, label_map: LabelMap, pad_id: int, cfg: TrainConfig,
                   device, amp_dtype) -> tuple[dict, np.ndarray]:
    probs = predict_proba(model, feats, pad_id, cfg.eval_batch_size, device, amp_dtype)
    y = np.asarray(feats.labels)
    metrics = evaluate(y, probs, label_map)
    metrics["loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))
    return metrics, probs


def fit(model: REModel, tokenizer, label_map: LabelMap, train: Features, valid: Features,
        cfg: TrainConfig, fold_dir: Path, seed: int, device: torch.device,
        log: MetricsLog | None = None, desc: str = "train", callbacks=()) -> FitResult:
    """Train `model` on `train`, select on `valid`, save the best weights in `fold_dir`.

    `callbacks` are called with each evaluation's row (a dict, as written to metrics.jsonl);
    one may raise to stop the run (e.g. an HPO pruner).
    """
    model.to(device).train()
    amp_dtype = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    rng = np.random.default_rng(seed)
    lengths = train.lengths()
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = make_optimizer(model, cfg, device)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    collator = Collator(train, tokenizer.pad_token_id, multiple_of=8 if device.type == "cuda" else 1)
    model.save(fold_dir, tokenizer, label_map)  # tokenizer, config and spec now; weights on improvement

    result = FitResult(best_score=float("inf") if cfg.metric in LOWER_IS_BETTER else float("-inf"))
    since_best, step, t0 = 0, 0, time.time()
    loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
    loss_count = 0
    bar = tqdm(total=total_steps, desc=desc, disable=not cfg.progress, dynamic_ncols=True, leave=False)

    def run_eval(epoch: float) -> bool:
        """Evaluate, log, keep the best. Returns True when training should stop."""
        nonlocal since_best, loss_sum, loss_count
        train_loss = (loss_sum / max(1, loss_count)).item()  # one host sync per evaluation
        loss_sum, loss_count = torch.zeros((), device=device), 0
        metrics, probs = evaluate_split(model, valid, label_map, tokenizer.pad_token_id, cfg, device, amp_dtype)
        model.train()
        row = {"epoch": round(epoch, 3), "step": step, "lr": scheduler.get_last_lr()[0],
               "train_loss": train_loss, "valid_loss": metrics["loss"],
               **{k: metrics[k] for k in ("micro_f1", "auprc", "accuracy", "macro_f1")},
               "time": round(time.time() - t0, 2)}
        result.history.append(row)
        if log:
            log.write(row)
        for callback in callbacks:
            callback(row)
        bar.set_postfix(loss=f"{train_loss:.3f}", vloss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.3f}",
                        f1=f"{metrics['micro_f1']:.1f}", auprc=f"{metrics['auprc']:.1f}")
        if not math.isfinite(train_loss):
            result.stopped = f"non-finite training loss at step {step}; kept the best checkpoint so far"
            return True
        score = metrics[cfg.metric]
        if better(score, result.best_score, cfg.metric) or result.best_probs is None:
            result.best_score, result.best_epoch, result.best_step = score, epoch, step
            result.best_metrics, result.best_probs = row, probs
            model.save_weights(fold_dir)
            since_best = 0
        else:
            since_best += 1
            if cfg.patience and since_best >= cfg.patience:
                result.stopped = f"early stop: no {cfg.metric} improvement in {cfg.patience} evaluations"
                return True
        return False

    for epoch in range(cfg.epochs):
        steps = [micro_batches(b, cfg.grad_accum) for b in bucket_batches(lengths, cfg.batch_size, rng)]
        stream = iterate(train, [m for parts in steps for m in parts], collator, device)
        for parts in steps:
            n_step = sum(map(len, parts))
            for part in parts:
                batch = next(stream)
                with autocast(device, amp_dtype):
                    _, loss = model(**batch)
                scaled = loss * (len(part) / n_step)  # exact mean over the step's examples
                (scaler.scale(scaled) if scaler else scaled).backward()
                loss_sum += loss.detach() * len(part)
                loss_count += len(part)
            if scaler:
                scaler.unscale_(optimizer)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            bar.update(1)
            if cfg.eval_every and step % cfg.eval_every == 0 and step % steps_per_epoch:
                if run_eval(step / steps_per_epoch):
                    break
        else:
            if run_eval(epoch + 1.0):
                break
            continue
        break
    bar.close()
    return result
