"""Batches: length-bucketed random batching and dynamic padding."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from rekit.encoding.tokenize import Features


def bucket_batches(lengths: list[int], batch_size: int, rng: np.random.Generator | None,
                   pool: int = 64) -> list[list[int]]:
    """Batches of indices with similar lengths (less padding) that stay randomised.

    Shuffle, cut into pools of `pool` batches, sort each pool by length, cut into batches,
    shuffle the batch order. With rng=None (evaluation): sorted by length, no shuffling.
    Every index appears exactly once; only the last batch may be smaller.
    """
    n = len(lengths)
    lens = np.asarray(lengths)
    if rng is None:
        order = np.argsort(-lens, kind="stable")
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    span = batch_size * pool
    batches: list[list[int]] = []
    for i in range(0, n, span):
        chunk = order[i : i + span]
        chunk = chunk[np.argsort(-lens[chunk], kind="stable")]
        batches.extend(chunk[j : j + batch_size].tolist() for j in range(0, len(chunk), batch_size))
    # Keep the one short batch last so every full step sees batch_size examples.
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    rng.shuffle(full)
    return full + short


class Collator:
    """Pads a list of example indices into tensors; pads to a multiple of 8 for tensor cores.

    always_pad: a batch whose rows all fill the padded width gets one more multiple, so every
    attention mask has a padded position. transformers drops an all-ones mask after reading it on
    the host, but not while a CUDA graph is being captured; with a padded position both take the
    same path, and a compiled layer is not recompiled in the middle of a capture (graphs-inductor).
    """

    def __init__(self, feats: Features, pad_id: int, multiple_of: int = 1, always_pad: bool = False):
        self.feats, self.pad_id, self.multiple_of, self.always_pad = feats, pad_id, multiple_of, always_pad

    def width(self, groups: list[list[int]]) -> int:
        """The padded width that fits every group: the longest example rounded up to the multiple,
        one multiple more under always_pad if any group's rows would all fill it."""
        lens = [[len(self.feats.input_ids[i]) for i in g] for g in groups]
        width = -(-max(max(g) for g in lens) // self.multiple_of) * self.multiple_of
        if self.always_pad and any(all(n == width for n in g) for g in lens):
            width += self.multiple_of
        return width

    def __call__(self, idx: list[int], width: int | None = None) -> dict[str, torch.Tensor]:
        """The batch of these examples, padded to `width` (one that fits them, from `width()`) or to
        their own padded width. DDP pads every process's share of a step to the step's width, so all
        processes run the same shapes (and replay the same CUDA graph) together."""
        f = self.feats
        width = width or self.width([idx])
        ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        types = torch.zeros((len(idx), width), dtype=torch.long) if f.token_type_ids is not None else None
        for row, i in enumerate(idx):
            x = f.input_ids[i]
            ids[row, : len(x)] = torch.as_tensor(x)
            mask[row, : len(x)] = 1
            if types is not None and f.token_type_ids is not None:
                types[row, : len(x)] = torch.as_tensor(f.token_type_ids[i])
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "subj_pos": torch.as_tensor([f.subj_pos[i] for i in idx]),
            "obj_pos": torch.as_tensor([f.obj_pos[i] for i in idx]),
            "labels": torch.as_tensor([f.labels[i] for i in idx]),
        }
        if types is not None:
            batch["token_type_ids"] = types
        if f.soft_targets is not None:  # distillation: (B, C) target probabilities, a graph input like labels
            batch["soft_targets"] = torch.as_tensor(f.soft_targets[np.asarray(idx, dtype=np.int64)], dtype=torch.float32)
        return batch


def iterate(feats: Features, batches: list[list[int]], collator: Collator, device: torch.device) -> Iterator[dict]:
    """Collate on the host and copy each batch to the device (see to_device)."""
    for idx in batches:
        yield to_device(collator(idx), device)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A host batch on the device. On a GPU it is pinned first (PyTorch caches the page-locked
    buffers) and copied asynchronously: a copy from pageable memory waits until the GPU has finished
    all queued work, so the host could not prepare the next step while this one runs."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
