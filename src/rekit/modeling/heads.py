"""Relation heads: hidden states (B, T, H) -> logits (B, C)."""

from __future__ import annotations

import torch
from torch import nn


class ClsHead(nn.Module):
    """[CLS] -> dense -> tanh -> dropout -> linear (the usual sequence-classification head)."""

    def __init__(self, hidden: int, n_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_labels)

    def forward(self, h: torch.Tensor, subj_pos: torch.Tensor, obj_pos: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(h[:, 0])))
        return self.out(self.dropout(x))


class EntityHead(nn.Module):
    """concat(h[subject start], h[object start]) -> MLP (Zhou & Chen's entity-start representation)."""

    def __init__(self, hidden: int, n_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(2 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_labels)

    def forward(self, h: torch.Tensor, subj_pos: torch.Tensor, obj_pos: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(h.size(0), device=h.device)
        pair = torch.cat([h[rows, subj_pos], h[rows, obj_pos]], dim=-1)  # (B, 2H)
        x = torch.relu(self.dense(self.dropout(pair)))
        return self.out(self.dropout(x))


HEADS = {"cls": ClsHead, "entity": EntityHead}
