"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from rekit.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: biases and normalisation weights (1-D) are not decayed."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def layer_depth(name: str, n_layers: int) -> int:
    """How far from the input a parameter of an REModel sits: 0 for the encoder's embeddings,
    i + 1 for its layer i, n_layers + 1 for everything above (final norms, the head)."""
    if not name.startswith("encoder."):
        return n_layers + 1
    found = _LAYER.search(name)
    if found:
        return min(int(found.group(1)) + 1, n_layers + 1)
    return 0 if "embed" in name else n_layers + 1


def layer_decayed_groups(model: torch.nn.Module, weight_decay: float, lr: float, decay: float,
                         n_layers: int) -> list[dict]:
    """param_groups with layer-wise learning-rate decay (Clark et al. 2020, ELECTRA): the top gets
    `lr`, each layer below it `decay` times the one above, the embeddings decay ** (n_layers + 1).
    Each group keeps its own `lr`; the schedule multiplies them all by the same factor."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth, matrix = layer_depth(name, n_layers), p.ndim >= 2
        group = groups.setdefault((depth, matrix), {
            "params": [], "weight_decay": weight_decay if matrix else 0.0,
            "lr": lr * decay ** (n_layers + 1 - depth)})
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def optimizer_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """The parameter groups of `cfg`: with --layer-decay below 1 and a layered encoder, one per
    (depth, decayed or not); else param_groups."""
    encoder = getattr(model, "encoder", None)
    n_layers = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
    if cfg.layer_decay < 1.0 and n_layers:
        return layer_decayed_groups(model, cfg.weight_decay, cfg.lr, cfg.layer_decay, n_layers)
    return param_groups(model, cfg.weight_decay)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """Fused AdamW on CUDA. capturable: its step counts live on the GPU, so the update can be part of a
    CUDA graph (training/graphs.py turns each group's learning rate into a GPU tensor at the first capture)."""
    if cfg.optimizer == "adamw":
        return adamw(optimizer_groups(model, cfg), cfg.lr, device, capturable)
    if cfg.layer_decay < 1.0:  # Adam decays no weights: the groups' learning rates are what matter
        groups = [{**g, "weight_decay": 0.0} for g in optimizer_groups(model, cfg)]
        return torch.optim.Adam(groups, lr=cfg.lr, **_fused(device, capturable))
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, **_fused(device, capturable))


def adamw(groups: list[dict], lr: float, device: torch.device, capturable: bool = False) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=lr, **_fused(device, capturable))


def _fused(device: torch.device, capturable: bool) -> dict:
    return {"fused": True, "capturable": capturable} if device.type == "cuda" else {}


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    return all(group.get("fused") for group in optimizer.param_groups)


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm of the gradients, on their device (no host sync): torch's
    get_total_norm (torch >= 2.6), else the same from per-tensor norms (torch 2.2-2.5)."""
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(grads, foreach=True)
    if not grads:
        return torch.tensor(0.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).float() for g in grads]))


def clip_and_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], max_grad_norm: float) -> None:
    """Clip the gradients' global norm to max_grad_norm (as clip_grad_norm_ does), then step.

    With a fused optimizer the clipping factor goes into the step itself: fused Adam/AdamW divide
    every gradient by `grad_scale` as they read it (the hook GradScaler uses), so the separate pass
    that rescales 338M gradients in memory (read + write, about 0.6 ms per step on an H200 at the
    RoBERTa-large shape) is not needed. Nothing here reads a value back to the host, so the whole
    of it can be part of a CUDA graph (training/graphs.py)."""
    if max_grad_norm <= 0:
        optimizer.step()
        return
    if not is_fused(optimizer):
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=params[0].device.type != "cpu")
        optimizer.step()
        return
    grads = [q.grad for q in params if q.grad is not None]
    norm = total_norm(grads).float()
    # clip_grad_norm_ multiplies by min(1, max / (norm + 1e-6)); dividing by its inverse is the same.
    # Fused Adam/AdamW divide the gradients by the optimizer's `grad_scale` attribute when it is set
    # (torch's own, untyped, protocol: GradScaler sets it the same way).
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_grad_norm, min=1.0)  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale  # type: ignore[attr-defined]


def apply_update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler, max_grad_norm: float) -> None:
    """The update after the backward pass(es): unscale (fp16), clip, step, clear the gradients."""
    if scaler:
        scaler.unscale_(optimizer)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        clip_and_step(optimizer, [q for q in model.parameters() if q.requires_grad], max_grad_norm)
    optimizer.zero_grad(set_to_none=True)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based): linear warmup, then decay."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)


class LRPlan:
    """The learning-rate multiplier per step as a callable object (lr_factor), for LambdaLR: its
    fields may change while training (a time budget shortens `total`), and the scheduler's state
    dict keeps them (LambdaLR saves a callable object's attributes), so a resume restores them."""

    def __init__(self, total: int, warmup_ratio: float, kind: str):
        self.total, self.warmup, self.kind = total, int(round(warmup_ratio * total)), kind

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup, self.kind)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    warmup = int(round(cfg.warmup_ratio * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, cfg.scheduler)
    )
