"""Masked-language-model pretraining of an encoder on raw sentences (the task's own text).

Without pretrained weights, a relation classifier trained from random init learns little more
than the entity-type pair. Pretraining the same encoder with MLM on the task's sentences first
(and on unlabeled test sentences, when the user allows it) gives it word and context knowledge
before it sees a single label ("self-pretraining"). The result is an ordinary Hugging Face
model directory (config.json, model.safetensors, tokenizer files) that `rekit train --model DIR`
and `AutoModel.from_pretrained(DIR)` load.

Training runs on the same engine as fine-tuning (engine.py; the pretraining specifics are in
mlm.py): bucketed batches, dynamic masking, AdamW with rekit's warmup + decay schedule, bf16
autocast on CUDA, a resumable state, Ctrl-C handling and an atomic final save. Eager steps compute
vocabulary logits only at the masked positions; on CUDA most steps are CUDA graph replays
(training/graphs.py), which compute them at every position instead, so that a step's shapes depend
on the batch shape only.
"""

from __future__ import annotations

import functools
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from rekit.config import PretrainSettings
from rekit.modeling.mlm_data import IGNORE, MLMCollator, MLMCorpus, encode_corpus
from rekit.runtime import autocast, autocast_dtype, resolve_device, seed_everything
from rekit.training import engine, mlm
from rekit.training import graphs as step_graphs
from rekit.training.interrupts import release_cuda_memory
from rekit.training.optim import LRPlan, adamw, param_groups

LOG_FILE, SUMMARY_FILE = mlm.LOG_FILE, "pretrain.json"


# PretrainSettings (epochs, lr, batch_size, ... with their defaults and limits) is defined with the
# other options in rekit/config.py, and imported from here by the command and the tests.


# Masked positions are padded to TARGET_SLACK x mask_prob of the batch's cells (MLMCollator): room
# for an unlucky batch (word masking draws whole words); a batch with more runs that step eagerly.
TARGET_SLACK = 2.0


def scratch_mlm_model(tokenizer, size: str, max_positions: int = 512, dropout: float | None = None):
    """A randomly initialised BertForMaskedLM of a scratch size preset (seed before calling)."""
    from transformers import BertForMaskedLM

    from rekit.modeling.scratch import encoder_config

    return BertForMaskedLM(encoder_config(size, len(tokenizer), max_positions, dropout))


def masked_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the masked positions, with vocabulary logits only there.

    For BERT-like models the prediction head runs on the (about 15 %) masked hidden states
    only: the vocabulary projection is the largest matrix of a small model. `target_index` may
    be padded (entries labelled IGNORE): the mean is over the real targets, so a batch's loss
    does not depend on the padding, and a padded, fixed-size step can be a CUDA graph.
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
    labels = batch["target_labels"]
    total = torch.nn.functional.cross_entropy(head(h).float(), labels, ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)


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


def pretrain(model, tokenizer, texts: list[str], s: PretrainSettings, out_dir: str | Path, echo=print,
             resume: bool = False, on_start=None) -> dict:
    """MLM-train `model` on `texts`, save it and its tokenizer to `out_dir`; returns the summary.

    The run works in `OUT.partial/` (mlm.work_dir): its training state (saved at every epoch end
    and every `s.save_every` steps; never with -1), the log and the tokenizer. With `resume=True`
    a saved state there is continued (same texts and settings). The finished directory (model,
    tokenizer, pretrain.jsonl: one line per epoch; pretrain.json: settings, corpus, final
    numbers) replaces `out_dir` in one rename. Ctrl-C / SIGTERM: TrainingInterrupted, state saved.
    `on_start()` is called once the work directory is ready (the CLI saves its arguments there).
    """
    out = Path(out_dir)
    work = mlm.work_dir(out)
    device = resolve_device(s.device)
    amp_dtype = autocast_dtype(s.precision, device)
    seed_everything(s.seed)
    corpus = encode_corpus(tokenizer, texts, s.max_length)
    train, valid = split_corpus(corpus, s.valid_share, s.seed)
    echo(f"pretraining corpus: {len(texts):,} texts, {corpus.n_tokens():,} tokens "
         f"({len(train):,} train / {len(valid):,} held-out sentences), masking {s.masking} {s.mask_prob:.0%}")
    t = _trainer(model, tokenizer, train, valid, s, work, device, amp_dtype, echo)
    if not (resume and t.resume()):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        tokenizer.save_pretrained(work / "tokenizer")  # a resume builds the model on this same vocabulary
    if on_start is not None:
        on_start()
    t.start()
    oom = False
    try:
        with t.stops:
            engine.run(t)
    except torch.cuda.OutOfMemoryError:
        oom = True  # raised below, outside `except`, so the failed step's memory can be freed
    finally:
        step_stats = t.close()
    if oom:
        release_cuda_memory(device)
        raise t.out_of_memory(s.batch_size, s.max_length)
    history, step = t.result.history, t.progress.step
    summary = {"settings": asdict(s), "texts": len(texts), "tokens": corpus.n_tokens(), "train_sentences": len(train),
               "valid_sentences": len(valid), "steps": step, "epochs_run": len(history), "note": t.note,
               "parameters": sum(p.numel() for p in model.parameters()), "device": str(device),
               "seconds": round(time.time() - t.t0, 1), "final": history[-1] if history else {},
               "step_graphs": step_stats}
    mlm.publish(work, out, model, tokenizer, summary)
    if history:
        last = history[-1]
        echo(f"pretrained {step:,} steps ({len(history)} epochs) in {summary['seconds']:.0f}s: MLM loss "
             f"{last['train_loss']:.3f}, held-out perplexity {last['valid_perplexity']:.1f}"
             + (f"; {t.note}" if t.note else ""))
    return summary


def _trainer(model, tokenizer, train, valid, s: PretrainSettings, work: Path, device, amp_dtype, echo) -> mlm.MLMTrainer:
    """The pretraining run's collaborators: step, optimizer, the shared LR schedule, collators."""
    multiple = 8 if device.type == "cuda" else 1
    graphed = s.graphs and step_graphs.usable(device, 1, amp_dtype) is None
    slack = TARGET_SLACK if graphed else None  # graphs need the masked positions in fixed-size tensors
    collate_train = MLMCollator(train, tokenizer, s.mask_prob, s.masking, multiple_of=multiple, target_slack=slack)
    collate_valid = MLMCollator(valid, tokenizer, s.mask_prob, s.masking, multiple_of=multiple)
    model.to(device).train()
    optimizer = adamw(param_groups(model, s.weight_decay), s.lr, device, capturable=graphed)
    step = mlm.MLMStep(model, optimizer, amp_dtype, s.max_grad_norm, device, graphed, masked_loss)
    plan = LRPlan(s.epochs * math.ceil(len(train) / s.batch_size), s.warmup_ratio, s.scheduler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan)
    validate = functools.partial(validation_loss, model, collate_valid, len(valid), 256, device, amp_dtype)
    return mlm.MLMTrainer(model, step, scheduler, plan, train, collate_train, s, work, validate, device, echo)


_fit_budget = mlm.fit_budget  # the time-budget arithmetic (tests call it by this name)
