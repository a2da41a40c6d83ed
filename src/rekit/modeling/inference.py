"""Batched class probabilities for a model over encoded features."""

from __future__ import annotations

import numpy as np
import torch

from rekit.encoding.collate import Collator, bucket_batches, iterate
from rekit.encoding.tokenize import Features
from rekit.runtime import autocast


@torch.inference_mode()
def predict_proba(model, feats: Features, pad_id: int, batch_size: int, device: torch.device,
                  amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """Softmax probabilities (N, C) in the input order; batches sorted by length for speed."""
    was_training = model.training
    model.eval()
    batches = bucket_batches(feats.lengths(), batch_size, rng=None)
    collator = Collator(feats, pad_id, multiple_of=8 if device.type == "cuda" else 1)
    parts = []  # on the device until the end: no host sync between batches
    for batch in iterate(feats, batches, collator, device):
        batch.pop("labels")
        with autocast(device, amp_dtype):
            logits, _ = model(**batch)
        parts.append(torch.softmax(logits.float(), dim=-1))
    model.train(was_training)
    out = np.empty((len(feats), model.spec.n_labels), dtype=np.float32)
    if parts:
        out[np.concatenate(batches)] = torch.cat(parts).cpu().numpy()
    return out
