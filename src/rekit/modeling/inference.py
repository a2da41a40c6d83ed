"""Batched class probabilities for a model over encoded features."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from rekit.encoding.collate import Collator, bucket_batches, to_device
from rekit.encoding.tokenize import Features
from rekit.errors import RekitError
from rekit.runtime import autocast


@torch.inference_mode()
def predict_proba(model, feats: Features, pad_id: int, batch_size: int, device: torch.device,
                  amp_dtype: torch.dtype | None = None, echo=None) -> np.ndarray:
    """Softmax probabilities (N, C) in the input order; batches sorted by length for speed.

    A batch that runs the GPU out of memory is split in half (again if needed) and so is every
    later one: a --batch-size too large for the GPU makes prediction slower, not fail. `echo`, if
    given, is told each time the batch size comes down."""
    was_training = model.training
    model.eval()
    pending = deque(bucket_batches(feats.lengths(), batch_size, rng=None))  # longest first
    collator = Collator(feats, pad_id, multiple_of=8 if device.type == "cuda" else 1)
    cap = batch_size
    done, parts = [], []  # probabilities stay on the device until the end: no host sync between batches
    try:
        while pending:
            idx = pending.popleft()
            if len(idx) > cap:
                pending.extendleft(reversed([idx[i : i + cap] for i in range(0, len(idx), cap)]))
                continue
            try:
                batch = to_device(collator(idx), device)
                batch.pop("labels")
                with autocast(device, amp_dtype):
                    logits, _ = model(**batch)
                probs = torch.softmax(logits.float(), dim=-1)
            except torch.cuda.OutOfMemoryError:
                probs = None  # handled below, outside `except`: the exception's frames pin the activations
            if probs is None:
                batch = logits = None  # type: ignore[assignment]  # dropped so the OOM'd batch can be freed
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if len(idx) == 1:
                    longest = len(feats.input_ids[idx[0]])
                    raise RekitError(f"CUDA ran out of memory predicting a single example of {longest} tokens; "
                                     "free the GPU, use a smaller --max-length when training, or predict on the CPU "
                                     "(--device cpu)")
                cap = len(idx) // 2
                pending.appendleft(idx)
                if echo:
                    echo(f"CUDA out of memory on a batch of {len(idx)}: continuing with batches of {cap}")
                continue
            done.append(idx)
            parts.append(probs)
    finally:
        model.train(was_training)
    out = np.empty((len(feats), model.spec.n_labels), dtype=np.float32)
    if parts:
        out[np.concatenate(done)] = torch.cat(parts).cpu().numpy()
    return out
