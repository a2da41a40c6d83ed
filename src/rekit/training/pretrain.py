"""Masked-language-model pretraining of an encoder on raw sentences (the task's own text).

Without pretrained weights, a relation classifier trained from random init learns little more
than the entity-type pair. Pretraining the same encoder with MLM on the task's sentences first
(and on unlabeled test sentences, when the user allows it) gives it word and context knowledge
before it sees a single label ("self-pretraining"). The result is an ordinary Hugging Face
model directory (config.json, model.safetensors, tokenizer files) that `rekit train --model DIR`
and `AutoModel.from_pretrained(DIR)` load.

The loop is plain: bucketed batches, dynamic masking, AdamW with rekit's warmup + decay
schedule, bf16 autocast on CUDA. Eager steps compute vocabulary logits only at the masked
positions; on CUDA most steps are CUDA graph replays (training/graphs.py), which compute them at
every position instead, so that a step's shapes depend on the batch shape only.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rekit.config import PretrainSettings
from rekit.encoding.collate import bucket_batches, to_device
from rekit.io import atomic_write_text
from rekit.modeling.mlm_data import IGNORE, MLMCollator, MLMCorpus, encode_corpus
from rekit.runtime import autocast, autocast_dtype, resolve_device, seed_everything
from rekit.training import graphs as step_graphs
from rekit.training.optim import adamw, apply_update, lr_factor, param_groups, set_lr

LOG_FILE, SUMMARY_FILE = "pretrain.jsonl", "pretrain.json"
FIT_AT = (20, 220, 1020)  # steps at which --max-minutes re-fits the schedule to the measured step time


# PretrainSettings (epochs, lr, batch_size, ... with their defaults and limits) is defined with the
# other options in rekit/config.py, and imported from here by the command and the tests.


def scratch_mlm_model(tokenizer, size: str, max_positions: int = 512, dropout: float | None = None):
    """A randomly initialised BertForMaskedLM of a scratch size preset (seed before calling)."""
    from transformers import BertForMaskedLM

    from rekit.modeling.scratch import encoder_config

    return BertForMaskedLM(encoder_config(size, len(tokenizer), max_positions, dropout))


def masked_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the masked positions, with vocabulary logits only there.

    For BERT-like models the prediction head runs on the (about 15 %) masked hidden states
    only: the vocabulary projection is the largest matrix of a small model.
    """
    base = getattr(model, "base_model", None)
    head = getattr(model, "cls", None)
    head = getattr(model, "lm_head", None) if head is None else head
    if base is None or head is None or base is model:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    h = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    if batch["target_index"].numel() == 0:  # nothing masked in this batch (tiny batches only)
        return h.sum() * 0.0
    h = h.reshape(-1, h.size(-1)).index_select(0, batch["target_index"])  # (M, H): the masked tokens
    logits = head(h)  # (M, V)
    return torch.nn.functional.cross_entropy(logits.float(), batch["target_labels"])


def all_positions_loss(model, input_ids, attention_mask, labels) -> tuple[None, torch.Tensor]:
    """The same mean cross-entropy as `masked_loss`, with vocabulary logits at every position and
    the unmasked ones ignored: fixed shapes for a given batch shape, so the step can be a CUDA
    graph (more arithmetic than `masked_loss`, no host work). -> (None, loss), as a training
    forward returns."""
    base = getattr(model, "base_model", None)
    head = getattr(model, "cls", None)
    head = getattr(model, "lm_head", None) if head is None else head
    if base is None or head is None or base is model:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    else:
        logits = head(base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
    total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                              ignore_index=IGNORE, reduction="sum")
    return None, total / (labels != IGNORE).sum().clamp(min=1)


@torch.inference_mode()
def validation_loss(model, collator: MLMCollator, corpus_size: int, batch_size: int, device, amp_dtype) -> float:
    """MLM loss on the held-out sentences with a fixed mask (same positions every epoch)."""
    if corpus_size == 0:
        return float("nan")
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    total, count = 0.0, 0
    for start in range(0, corpus_size, batch_size):
        batch = collator(list(range(start, min(start + batch_size, corpus_size))), gen)
        n = len(batch["target_labels"])
        if n == 0:
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, amp_dtype):
            total += masked_loss(model, batch).item() * n
        count += n
    model.train(was)
    return total / max(1, count)


def split_corpus(corpus: MLMCorpus, share: float, seed: int) -> tuple[MLMCorpus, MLMCorpus]:
    n_valid = int(round(len(corpus) * share)) if share > 0 else 0
    if share > 0 and len(corpus) >= 50:
        n_valid = max(n_valid, 1)
    order = np.random.default_rng(seed).permutation(len(corpus))
    return corpus.subset(order[n_valid:].tolist()), corpus.subset(order[:n_valid].tolist())


def pretrain(model, tokenizer, texts: list[str], s: PretrainSettings, out_dir: str | Path, echo=print) -> dict:
    """MLM-train `model` on `texts`, save it and its tokenizer to `out_dir`; returns the summary.

    Writes pretrain.jsonl (one line per epoch: train/valid MLM loss, perplexity, lr, time)
    and pretrain.json (settings, corpus size, final numbers).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(s.device)
    amp_dtype = autocast_dtype(s.precision, device)
    seed_everything(s.seed)
    t_start = time.time()
    corpus = encode_corpus(tokenizer, texts, s.max_length)
    train, valid = split_corpus(corpus, s.valid_share, s.seed)
    multiple = 8 if device.type == "cuda" else 1
    collate_train = MLMCollator(train, tokenizer, s.mask_prob, s.masking, multiple_of=multiple)
    collate_valid = MLMCollator(valid, tokenizer, s.mask_prob, s.masking, multiple_of=multiple)
    echo(f"pretraining corpus: {len(texts):,} texts, {corpus.n_tokens():,} tokens "
         f"({len(train):,} train / {len(valid):,} held-out sentences), masking {s.masking} {s.mask_prob:.0%}")

    model.to(device).train()
    graphed = s.graphs and step_graphs.usable(device, 1, amp_dtype) is None
    optimizer = adamw(param_groups(model, s.weight_decay), s.lr, device, capturable=graphed)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    graphs = None
    if graphed:
        forward = lambda **b: all_positions_loss(model, **b)  # noqa: E731
        graphs = step_graphs.StepGraphs(forward, model, optimizer, amp_dtype, s.max_grad_norm)
    steps_per_epoch = math.ceil(len(train) / s.batch_size)
    total = s.epochs * steps_per_epoch
    warmup = int(round(s.warmup_ratio * total))
    rng = np.random.default_rng(s.seed)
    gen = torch.Generator().manual_seed(s.seed)

    def eager_step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One step without a graph; returns the loss detached, so no autograd graph outlives the
        step (a live one would tie the gradients to this stream and break a later capture)."""
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            loss = masked_loss(model, batch)
        (scaler.scale(loss) if scaler else loss).backward()
        apply_update(model, optimizer, scaler, s.max_grad_norm)
        return loss.detach()

    log_path = out / LOG_FILE
    log_path.unlink(missing_ok=True)
    bar = tqdm(total=total, desc="pretrain", disable=not s.progress, dynamic_ncols=True, leave=False)
    step, history, budget_note = 0, [], None
    planned, t_mark, mark_step = total, time.time(), 0
    epoch = 0
    while step < total:
        loss_sum = torch.zeros((), device=device)
        n_batches = 0
        for idx in bucket_batches(train.lengths(), s.batch_size, rng):
            if step >= total:
                break
            batch = to_device(collate_train(idx, gen), device)
            set_lr(optimizer, s.lr * lr_factor(step, total, warmup, s.scheduler))
            loss = graphs.step({k: batch[k] for k in ("input_ids", "attention_mask", "labels")}) if graphs else None
            if loss is None:  # eager: the first step, a new batch shape, or no CUDA graphs here
                loss = eager_step(batch)
            loss_sum += loss.detach()
            n_batches += 1
            step += 1
            bar.update(1)
            if s.max_minutes and step in FIT_AT:
                # Measure the step time after 20 steps (includes start-up costs, so it errs short),
                # over the next 200, and over the 800 after those (by then every common batch shape
                # has its CUDA graph: the captures no longer inflate it); fit the schedule each time.
                now = time.time()
                per_step = (now - t_mark) / (step - mark_step)
                t_mark, mark_step = now, step
                total, budget_note = _fit_budget(step, planned, per_step, s.max_minutes * 60 - (now - t_start),
                                                 steps_per_epoch)
                warmup = min(warmup, max(1, int(round(s.warmup_ratio * total))))
                bar.total = total
        epoch += 1
        train_loss = (loss_sum / max(1, n_batches)).item()
        valid_loss = validation_loss(model, collate_valid, len(valid), 256, device, amp_dtype)
        row = {"epoch": epoch, "step": step, "lr": float(optimizer.param_groups[0]["lr"]), "train_loss": round(train_loss, 4),
               "valid_loss": round(valid_loss, 4), "valid_perplexity": round(math.exp(min(valid_loss, 50)), 2),
               "time": round(time.time() - t_start, 1)}
        history.append(row)
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        bar.set_postfix(loss=f"{train_loss:.3f}", vloss=f"{valid_loss:.3f}", ppl=f"{row['valid_perplexity']:.1f}")
        if not math.isfinite(train_loss):
            budget_note = f"stopped: non-finite loss at step {step}"
            break
    bar.close()

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {"settings": asdict(s), "texts": len(texts), "tokens": corpus.n_tokens(), "train_sentences": len(train),
               "valid_sentences": len(valid), "steps": step, "epochs_run": epoch, "note": budget_note,
               "parameters": sum(p.numel() for p in model.parameters()), "device": str(device),
               "seconds": round(time.time() - t_start, 1), "final": history[-1] if history else {},
               "step_graphs": graphs.stats() if graphs else None}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    if history:
        last = history[-1]
        echo(f"pretrained {step:,} steps ({epoch} epochs) in {summary['seconds']:.0f}s: MLM loss {last['train_loss']:.3f}, "
             f"held-out perplexity {last['valid_perplexity']:.1f}" + (f"; {budget_note}" if budget_note else ""))
    return summary


def _fit_budget(step: int, planned: int, per_step: float, seconds_left: float, steps_per_epoch: int
                ) -> tuple[int, str | None]:
    """Total steps that fit the time left (10 % held back for validation passes and saving),
    never more than planned: the schedule's decay then still reaches zero at the end."""
    fits = step + int(max(0.0, seconds_left * 0.9) / max(per_step, 1e-9))
    if fits >= planned:
        return planned, None
    total = max(step + 1, fits)
    return total, (f"time budget: {total:,} of {planned:,} planned steps ({total / steps_per_epoch:.1f} of "
                   f"{planned / steps_per_epoch:.0f} epochs) at {per_step * 1000:.0f} ms/step")
