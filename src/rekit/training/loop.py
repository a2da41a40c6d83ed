"""Fit one split: train, evaluate every epoch (or every N steps), keep the best checkpoint.

The whole loop is `fit()`; helpers do one thing each. Gradient accumulation is exact: each
optimizer step's batch is drawn first and then cut into micro-batches, each weighted by its
share of the step's examples, so `--grad-accum` changes memory use, not the optimisation
(an epoch's short last batch is still one correctly scaled step).

Surviving failures: the resumable training state (checkpoint.py) is saved at check points, so a
killed fold restarts where it stopped and ends exactly where an uninterrupted one would (CPU,
deterministic mode). A non-finite loss stops the fold with its best checkpoint kept; CUDA
out-of-memory says what would fit (or retries with smaller micro-batches); Ctrl-C stops at the
next step boundary with the state saved (the signals, errors and advice: interrupts.py). On
CUDA most steps are replays of whole-step CUDA graphs (graphs.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rekit.config import TrainConfig
from rekit.data.labels import LabelMap
from rekit.encoding.collate import Collator, bucket_batches, iterate, to_device
from rekit.encoding.tokenize import Features
from rekit.errors import ConfigError, RekitError
from rekit.metrics import evaluate
from rekit.modeling.inference import predict_proba
from rekit.modeling.model import REModel
from rekit.runtime import autocast, autocast_dtype
from rekit.training import checkpoint
from rekit.training import graphs as step_graphs
from rekit.training.interrupts import (
    NonFiniteLoss,
    OutOfMemory,
    TrainingInterrupted,
    oom_advice,
    release_cuda_memory,
    stop_on_signal,
)
from rekit.training.optim import apply_update, make_optimizer, make_scheduler
from rekit.training.step import (
    GRAPH_MODES,
    always_pad,
    compile_forward,
    pad_multiple,
    resolve_compile,
)

LOWER_IS_BETTER = {"loss"}
STOP_CHECK_EVERY = 25  # DDP: steps between the processes' agreements on whether a signal stops them


@dataclass
class FitResult:
    best_score: float = float("-inf")
    best_epoch: float = 0.0
    best_step: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_probs: np.ndarray | None = None  # validation probabilities of the best checkpoint
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None  # why training ended early, if it did
    nonfinite: bool = False  # it ended on a non-finite loss (the best checkpoint before it is kept)
    notes: list[str] = field(default_factory=list)  # things the user should know (an OOM retry)
    timing: dict = field(default_factory=dict)  # how the steps ran (CUDA graph captures, replays)


@dataclass
class Progress:
    """Where the loop is. With the model, optimizer, scheduler and RNG states: all a resume needs."""

    step: int = 0  # optimizer steps done
    accum: int = 1  # micro-batches per step (an OOM retry doubles it)
    since_best: int = 0  # evaluations without improvement (patience)
    loss_count: int = 0  # examples summed in `loss_sum` since the last evaluation
    checked: int = 0  # last step at which the loss was seen finite
    elapsed: float = 0.0  # seconds trained before this session (the metrics' `time` column)
    epoch_rng: dict = field(default_factory=dict)  # batch-order RNG state when the current epoch began


class MetricsLog:
    """Append-only JSON Lines, flushed per line so a crash keeps every finished evaluation.

    A kill can tear the last line; `rundir.prune_metrics` drops it (and replayed rows) on resume."""

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


def host_lr(state: dict) -> dict:
    """An optimizer's or scheduler's state dict with learning rates as floats: under CUDA graphs
    they are GPU tensors (graphs.py), which a resumed run re-creates itself."""
    as_float = lambda v: float(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
    if "param_groups" in state:
        state = {**state, "param_groups": [{**g, "lr": as_float(g["lr"])} for g in state["param_groups"]]}
    if "_last_lr" in state:
        state = {**state, "_last_lr": [as_float(v) for v in state["_last_lr"]]}
    return state


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
    options = {"gradient_as_bucket_view": True,
               "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers": False}
    if "batched_grad_copy" in known and not graphed:
        options["batched_grad_copy"] = True
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **options)
    if graphed:
        net._set_ddp_runtime_logging_sample_rate(2**31 - 1)  # prototype API; its default samples every 100th step
    return net


def fit(model: REModel, tokenizer, label_map: LabelMap, train: Features, valid: Features,
        cfg: TrainConfig, fold_dir: Path, seed: int, device: torch.device,
        log: MetricsLog | None = None, desc: str = "train", callbacks=(), resume: bool = False,
        echo=None, dist=None) -> FitResult:
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
    """
    if cfg.save_every < -1:
        raise ConfigError(f"--save-every must be >= -1 (-1: never), got {cfg.save_every}")
    stateful = cfg.save_every >= 0
    echo = echo or tqdm.write
    fold_dir = Path(fold_dir)
    model.to(device).train()
    ddp = dist is not None and dist.ddp
    main = not ddp or dist.is_main  # this process writes the fold's files (fold-parallel: each its own)
    amp_dtype = autocast_dtype(cfg.precision, device)
    compile_mode = resolve_compile(cfg.compile, device)
    why_eager = step_graphs.usable(device, cfg.grad_accum, amp_dtype) if compile_mode in GRAPH_MODES else None
    if why_eager:
        if cfg.compile != "auto":
            echo(f"{desc}: --compile {cfg.compile}: {why_eager}")
        compile_mode = "off"
    graphed = compile_mode in GRAPH_MODES
    # DDP with graphs: DDP is built, and every step runs, on one non-default stream (graphs.py).
    stream = torch.cuda.Stream(device) if ddp and graphed else None

    @contextlib.contextmanager
    def on_stream():
        """Run the block on `stream` (if any), after all work queued so far."""
        if stream is None:
            yield
            return
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            yield

    with on_stream():
        net = wrap_ddp(model, device, graphed) if ddp else model
    forward = compile_forward(net, compile_mode)
    # Under DDP one process's out-of-memory retry would split its steps differently from the others'
    # (their all-reduces would no longer pair up): the OOM stops the run, with advice, instead.
    oom_retry = cfg.oom_retry and not ddp
    if cfg.oom_retry and ddp:
        echo(f"{desc}: --oom-retry is off under --parallel ddp (every process must split its steps alike); "
             "an out-of-memory error stops the run and says which --grad-accum would fit")
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    rng = np.random.default_rng(seed)  # batch order; its state is part of the saved state
    lengths = train.lengths()
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = make_optimizer(model, cfg, device, capturable=graphed)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    graphs = step_graphs.StepGraphs(forward, model, optimizer, amp_dtype, cfg.max_grad_norm,
                                    min_eager=step_graphs.DDP_MIN_EAGER if ddp else 1, stream=stream) if graphed else None
    collator = Collator(train, tokenizer.pad_token_id, multiple_of=pad_multiple(cfg.pad_multiple, compile_mode, device),
                        always_pad=always_pad(compile_mode))
    if main:
        model.save(fold_dir, tokenizer, label_map, weights=False)  # the weights come with the first evaluation
    shape = {"n_train": len(train), "n_valid": len(valid), "steps_per_epoch": steps_per_epoch,
             "total_steps": total_steps, "seed": seed}

    result = FitResult(best_score=float("inf") if cfg.metric in LOWER_IS_BETTER else float("-inf"))
    p = Progress(accum=cfg.grad_accum)
    loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
    saved = checkpoint.load_state(fold_dir) if resume else None
    if saved is not None:
        if saved["shape"] != shape:
            raise RekitError(f"{fold_dir / checkpoint.STATE_FILE} was saved for another split or schedule "
                             f"({saved['shape']}, now {shape}); delete it to restart this fold")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        checkpoint.restore_rng(saved["rng"])
        p = Progress(**saved["progress"])
        p.accum = max(p.accum, cfg.grad_accum)  # an OOM retry's accumulation, or a larger one asked for now
        rng.bit_generator.state = p.epoch_rng
        loss_sum = saved["loss_sum"].to(device)
        result = FitResult(**saved["result"])
        if result.best_step == p.step and result.best_probs is not None:
            # Saved at a new best, which is written after the state: the kill may have come between.
            model.save_weights(fold_dir)
        echo(f"{desc}: resuming at step {p.step}/{total_steps} (epoch {p.step / steps_per_epoch:.3g}); "
             f"best {cfg.metric} so far {result.best_score:.4g} at step {result.best_step}")
    t0 = time.time() - p.elapsed
    saved_at = p.step if saved is not None else -1
    phase = "training"
    seg = {"t": time.perf_counter(), "samples": 0, "tokens": 0}  # throughput since the last evaluation

    def step_batches():
        """The remaining steps' batches; each epoch's order is drawn when it begins."""
        for epoch in range(p.step // steps_per_epoch, cfg.epochs):
            p.epoch_rng = rng.bit_generator.state  # a mid-epoch resume redraws this epoch from here
            batches = bucket_batches(lengths, cfg.batch_size, rng)
            if ddp and len(batches) > 1 and len(batches[-1]) < dist.world:
                batches[-2:] = [batches[-2] + batches[-1]]  # every process needs a share of every step
            yield from batches[p.step - epoch * steps_per_epoch :]

    def accumulate(step_batch: list[int]) -> torch.Tensor:
        """Forward/backward over the step's micro-batches; the summed loss as a device tensor."""
        parts = micro_batches(dist.shard(step_batch) if ddp else step_batch, p.accum)
        # DDP averages gradients over processes: scale so the result is the mean over the whole step.
        world = dist.world if ddp else 1
        total = torch.zeros((), device=device)
        for j, (part, batch) in enumerate(zip(parts, iterate(train, parts, collator, device))):
            sync_now = not ddp or j == len(parts) - 1  # all-reduce once, with the last micro-batch
            with contextlib.nullcontext() if sync_now else net.no_sync():
                if compile_mode == "reduce-overhead":
                    torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs are dead
                with autocast(device, amp_dtype):
                    _, loss = forward(**batch)
                scaled = loss * (len(part) * world / len(step_batch))  # exact mean over the step's examples
                (scaler.scale(scaled) if scaler else scaled).backward()
            total += loss.detach() * len(part)
        return total

    def graph_step(step_batch: list[int]) -> torch.Tensor | None:
        """The step as one CUDA graph replay; None when it must run eagerly (see graphs.py).

        Under DDP every process pads its share to the whole step's width, so all run the same
        shape; a step that does not split evenly (an epoch's last) runs eagerly on all of them."""
        if graphs is None or p.accum != 1:
            return None
        if ddp:
            if len(step_batch) % dist.world:
                return None
            mine = dist.shard(step_batch)
            batch = to_device(collator(mine, width=collator.width(dist.shards(step_batch))), device)
        else:
            mine = step_batch
            batch = to_device(collator(step_batch), device)
        loss = graphs.step(batch)
        return None if loss is None else loss.detach() * len(mine)

    def eager_step(step_batch: list[int]) -> torch.Tensor:
        """Forward/backward (retrying smaller micro-batches after an OOM if asked) and the update."""
        optimizer.zero_grad(set_to_none=True)  # after graph replays the gradients point into their pool
        while True:
            try:
                step_loss = accumulate(step_batch)
                break
            except torch.cuda.OutOfMemoryError:
                pass  # handled below, outside `except`: the exception's frames pin the activations
            optimizer.zero_grad(set_to_none=True)  # drop the partial step
            release_cuda_memory(device)
            longest = max(lengths[i] for i in step_batch)
            advice = oom_advice(cfg, p.accum, longest, model.spec.max_length, can_retry=not ddp)
            if not oom_retry or -(-len(step_batch) // p.accum) == 1:
                raise OutOfMemory(f"{desc}: CUDA ran out of memory at step {p.step + 1} with a {advice}")
            p.accum *= 2
            note = (f"CUDA out of memory at step {p.step + 1}: continued with --grad-accum {p.accum} "
                    f"(micro-batch {-(-cfg.batch_size // p.accum)}, same effective batch of {cfg.batch_size})")
            result.notes.append(note)
            echo(f"{desc}: {note}")
        apply_update(model, optimizer, scaler, cfg.max_grad_norm)
        return step_loss

    def train_step(step_batch: list[int]) -> None:
        nonlocal loss_sum
        step_loss = graph_step(step_batch)
        if step_loss is None:
            step_loss = eager_step(step_batch)
        scheduler.step()
        loss_sum += step_loss
        p.loss_count += len(dist.shard(step_batch)) if ddp else len(step_batch)
        seg["samples"] += len(step_batch)
        seg["tokens"] += sum(lengths[i] for i in step_batch)

    def stop_nonfinite() -> None:
        where = f"between steps {p.checked} and {p.step}"
        if result.best_probs is None:
            raise NonFiniteLoss(f"{desc}: the training loss became non-finite {where}, before the first "
                                "evaluation, so there is no checkpoint to keep; lower --lr, raise --warmup-ratio "
                                "or use --precision fp32")
        result.stopped = (f"non-finite training loss {where}; stopped this fold and kept the best checkpoint "
                          f"(step {result.best_step}, {cfg.metric} {result.best_score:.4g})")
        result.nonfinite = True
        echo(f"{desc}: {result.stopped}")

    def run_eval(epoch: float) -> bool:
        """Evaluate, log, track the best. Returns True on a new best (its weights are not saved yet)."""
        nonlocal loss_sum
        train_loss = global_loss()  # one host sync per evaluation
        seconds = time.perf_counter() - seg["t"]
        loss_sum, p.loss_count = torch.zeros((), device=device), 0
        metrics, probs = evaluate_split(model, valid, label_map, tokenizer.pad_token_id, cfg, device, amp_dtype,
                                        echo=lambda msg: echo(f"{desc}: evaluation: {msg}"), dist=dist)
        model.train()
        if not np.isfinite(probs).all():  # finite loss but broken weights (the last update overflowed)
            stop_nonfinite()
            return False
        p.checked = p.step
        row = {"epoch": round(epoch, 3), "step": p.step, "lr": float(scheduler.get_last_lr()[0]),
               "train_loss": train_loss, "valid_loss": metrics["loss"],
               **{k: metrics[k] for k in ("micro_f1", "auprc", "accuracy", "macro_f1")},
               "time": round(time.time() - t0, 2), "train_samples": seg["samples"], "train_tokens": seg["tokens"],
               "train_seconds": round(seconds, 4), "samples_per_s": round(seg["samples"] / max(seconds, 1e-9), 1)}
        if graphs is not None:
            row["step_graphs"] = graphs.stats()
        result.history.append(row)
        if log and main:
            log.write(row)
        for callback in callbacks:
            callback(row)
        bar.set_postfix(loss=f"{train_loss:.3f}", vloss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.3f}",
                        f1=f"{metrics['micro_f1']:.1f}", auprc=f"{metrics['auprc']:.1f}")
        score = metrics[cfg.metric]
        if better(score, result.best_score, cfg.metric) or result.best_probs is None:
            result.best_score, result.best_epoch, result.best_step = score, epoch, p.step
            result.best_metrics, result.best_probs = row, probs
            p.since_best = 0
            return True
        p.since_best += 1
        if cfg.patience and p.since_best >= cfg.patience:
            result.stopped = f"early stop: no {cfg.metric} improvement in {cfg.patience} evaluations"
        return False

    def global_loss() -> float:
        """Mean training loss since the last evaluation, over all processes under DDP."""
        if not ddp:
            return (loss_sum / max(1, p.loss_count)).item()
        t = torch.stack([loss_sum.float(), torch.tensor(float(p.loss_count), device=device)])
        torch.distributed.all_reduce(t)
        return (t[0] / t[1].clamp(min=1)).item()

    def save_state() -> None:
        nonlocal saved_at
        if not main:  # one copy of the state (the weights are the same on every process)
            saved_at = p.step
            return
        p.elapsed = time.time() - t0
        # At an epoch end the batch RNG already stands where the next epoch begins.
        epoch_rng = rng.bit_generator.state if p.step % steps_per_epoch == 0 else p.epoch_rng
        progress = {f.name: getattr(p, f.name) for f in fields(p)} | {"epoch_rng": epoch_rng}
        checkpoint.save_state(fold_dir, p.step, {
            "shape": shape, "model": model.state_dict(), "optimizer": host_lr(optimizer.state_dict()),
            "scheduler": host_lr(scheduler.state_dict()), "scaler": scaler.state_dict() if scaler else None,
            "rng": checkpoint.capture_rng(), "progress": progress, "loss_sum": loss_sum,
            "result": {f.name: getattr(result, f.name) for f in fields(result)}})
        saved_at = p.step

    def halt(last: bool = False) -> str | None:
        """The signal to stop on now, if any. Under DDP the processes agree on it, every
        STOP_CHECK_EVERY steps and after the last: each process's host runs ahead of its GPU by its
        own margin, so one Ctrl-C finds them at different steps, and a process that stopped alone
        would leave the others waiting in an all-reduce (the main one, unsaved)."""
        if not ddp:
            return stop[0] if stop else None
        if not last and p.step % STOP_CHECK_EVERY:
            return None
        if not dist.any(bool(stop), device):
            return None
        return stop[0] if stop else "a signal to another process"

    def interrupted(signame: str) -> TrainingInterrupted:
        if stateful and saved_at != p.step:
            save_state()
        saved_note = "the training state is saved" if stateful else "no training state (--save-every -1)"
        return TrainingInterrupted(f"stopped by {signame} at step {p.step}/{total_steps} of {desc}; {saved_note}")

    # DDP: the main process's bar stands for all; fold-parallel: one line per process.
    bar = tqdm(total=total_steps, initial=p.step, desc=desc, disable=not cfg.progress or not main, dynamic_ncols=True,
               leave=False, position=dist.rank if dist is not None and dist.active and dist.mode == "folds" else None)
    oom = False
    try:
        with stop_on_signal() as stop, on_stream():
            for step_batch in step_batches() if result.stopped is None else ():
                phase = "training"
                train_step(step_batch)
                p.step += 1
                bar.update(1)
                epoch_end = p.step % steps_per_epoch == 0
                do_eval = epoch_end or (cfg.eval_every and p.step % cfg.eval_every == 0)
                halted = halt()
                do_save = stateful and (epoch_end or (cfg.save_every > 0 and p.step % cfg.save_every == 0) or halted)
                if not (do_eval or do_save or halted):
                    continue  # the hot path: no host sync
                if not math.isfinite(global_loss() if ddp else loss_sum.item()):  # one host sync per check point
                    stop_nonfinite()
                    break
                p.checked = p.step
                improved = False
                if do_eval:
                    phase = "evaluation"
                    improved = run_eval(p.step / steps_per_epoch)
                if result.nonfinite:
                    break
                if stateful and (do_save or improved):
                    save_state()  # first the state, then the new best's weights (see the resume above)
                if improved and main:
                    model.save_weights(fold_dir)
                if halted:
                    raise interrupted(halted)
                if result.stopped:
                    break
                seg.update(t=time.perf_counter(), samples=0, tokens=0)  # evaluation and saving are not training time
            halted = halt(last=True)  # arrived during the fold's last steps
            if halted:
                raise interrupted(halted)
    except torch.cuda.OutOfMemoryError:
        oom = True  # raised below, outside `except`, so the failed step's memory can be freed
    finally:
        bar.close()
        if stream is not None:
            torch.cuda.current_stream(device).wait_stream(stream)
        if graphs is not None:
            result.timing = graphs.stats()
            del graphs  # the graphs' memory pool is freed with them
    if oom:
        release_cuda_memory(device)
        if phase == "evaluation":
            raise OutOfMemory(f"{desc}: CUDA ran out of memory evaluating at step {p.step} "
                              f"(--eval-batch-size {cfg.eval_batch_size}); try --eval-batch-size "
                              f"{max(1, cfg.eval_batch_size // 2)}")
        raise OutOfMemory(f"{desc}: CUDA ran out of memory in the optimizer step at step {p.step + 1}; "
                          f"try a smaller model, --batch-size {max(1, cfg.batch_size // 2)} or --max-length "
                          f"{max(16, model.spec.max_length // 2)}")
    return result
