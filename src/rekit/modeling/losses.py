"""Classification losses for the relation head: cross-entropy (with label smoothing), focal, and
distillation from target probabilities (`rekit distill`).

`REModel.forward` calls `model.loss_fn(logits, labels)`; `make_loss` builds it from the
training config, so a new loss needs no change to the loop. `symmetric_kl` is R-Drop's extra term
(--rdrop), added by `REModel.forward` on top of whichever loss_fn the model has.
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


class DistillLoss(nn.Module):
    """Knowledge distillation (Hinton et al. 2015) from target probabilities, e.g. a fold ensemble's.

    Per row: alpha * CE(logits, label) + (1 - alpha) * T^2 * KL(q_T || p_T), where p_T =
    softmax(logits / T) and q_T = targets^(1/T), renormalised (the softmax of the teacher's log-
    probabilities divided by T). T^2 keeps the soft term's gradients at the hard term's scale. A row
    labelled `ignore_index` (an unlabeled sentence) has the soft term only, with weight 1. The mean
    is over every row. alpha = 1 is exactly cross-entropy (with its label smoothing) on the labeled
    rows. Masked, not indexed: static shapes, so the loss can be part of a CUDA graph.
    """

    def __init__(self, alpha: float = 0.8, temperature: float = 1.0, label_smoothing: float = 0.0,
                 ignore_index: int = -100):
        super().__init__()
        if not 0 <= alpha <= 1 or temperature <= 0:
            raise ValueError(f"distillation needs 0 <= alpha <= 1 and temperature > 0, got {alpha}, {temperature}")
        self.alpha, self.temperature = alpha, temperature
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits: (B, C); labels: (B,) class ids or ignore_index; targets: (B, C) probabilities -> scalar."""
        keep = (labels != self.ignore_index).to(torch.float32)
        safe = torch.where(labels == self.ignore_index, torch.zeros_like(labels), labels)
        ce = nn.functional.cross_entropy(logits.float(), safe, reduction="none", label_smoothing=self.label_smoothing)
        t = self.temperature
        log_p = torch.log_softmax(logits.float() / t, dim=-1)
        log_q = torch.log_softmax(torch.log(targets.float().clamp(min=1e-12)) / t, dim=-1)
        kl = (log_q.exp() * (log_q - log_p)).sum(dim=-1) * (t * t)
        soft_weight = 1 - self.alpha * keep  # labeled rows: 1 - alpha; unlabeled rows: 1
        per_row = self.alpha * keep * ce + soft_weight * kl
        return per_row.mean()


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """R-Drop's consistency term (Liang et al. 2021): (KL(p_a || p_b) + KL(p_b || p_a)) / 2 per row,
    averaged over the rows; logits: (B, C) -> scalar.

    The two KLs sum to sum_c (p_a - p_b) * (log p_a - log p_b), one expression with gradients into
    both passes, as in the paper. float32 log-softmax: two dropout passes differ by little, which
    bf16 would round away. No data-dependent shapes or host reads, so it can be in a CUDA graph."""
    log_a = torch.log_softmax(logits_a.float(), dim=-1)
    log_b = torch.log_softmax(logits_b.float(), dim=-1)
    return ((log_a.exp() - log_b.exp()) * (log_a - log_b)).sum(dim=-1).mean() / 2


def make_loss(loss: str = "ce", label_smoothing: float = 0.0, focal_gamma: float = 2.0) -> nn.Module:
    if loss == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if loss == "focal":
        return FocalLoss(focal_gamma, label_smoothing)
    raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
