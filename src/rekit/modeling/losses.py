"""Classification losses for the relation head: cross-entropy (with label smoothing) and focal.

`REModel.forward` calls `model.loss_fn(logits, labels)`; `make_loss` builds it from the
training config, so a new loss needs no change to the loop.
"""

from __future__ import annotations

import torch
from torch import nn

from rekit.config import LOSSES


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by (1 - p_true)^gamma.

    Down-weights examples the model already gets right, so training keeps pushing on the hard
    (often rare-relation) ones. gamma = 0 is exactly cross-entropy; label smoothing, if any, is
    applied to the cross-entropy term, the focal factor uses the true class's probability.
    Rows labelled `ignore_index` are skipped, like nn.CrossEntropyLoss does.
    """

    def __init__(self, gamma: float = 2.0, label_smoothing: float = 0.0, ignore_index: int = -100):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma, self.label_smoothing, self.ignore_index = gamma, label_smoothing, ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits: (B, C) float; labels: (B,) class ids -> scalar mean over the kept rows.

        Masked, not indexed: no data-dependent shapes, so the loss can be part of a CUDA graph."""
        keep = (labels != self.ignore_index).to(logits.dtype)
        safe = torch.where(labels == self.ignore_index, torch.zeros_like(labels), labels)
        log_p = torch.log_softmax(logits.float(), dim=-1)
        ce = nn.functional.nll_loss(log_p, safe, reduction="none")
        if self.label_smoothing:
            ce = (1 - self.label_smoothing) * ce - self.label_smoothing * log_p.mean(dim=-1)
        p_true = log_p.gather(1, safe[:, None]).squeeze(1).exp()
        per_row = (1 - p_true).clamp(min=0) ** self.gamma * ce
        return (per_row * keep).sum() / keep.sum().clamp(min=1.0)


def make_loss(loss: str = "ce", label_smoothing: float = 0.0, focal_gamma: float = 2.0) -> nn.Module:
    if loss == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if loss == "focal":
        return FocalLoss(focal_gamma, label_smoothing)
    raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
