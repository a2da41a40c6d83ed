"""The resumable state of one training run, as plain objects: where the loop is (`Progress`),
what it has found so far (`FitResult`), and how they go into and come out of a saved state
(checkpoint.py stores the nested dict; this module decides nothing about when)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch


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
    loss_count: int = 0  # examples (or batches) summed in the loss since the last evaluation
    checked: int = 0  # last step at which the loss was seen finite
    elapsed: float = 0.0  # seconds trained before this session (the metrics' `time` column)
    epoch_rng: dict = field(default_factory=dict)  # batch-order RNG state when the current epoch began


def as_dict(obj) -> dict:
    """A dataclass's fields as a dict (shallow: a saved state keeps the values themselves)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def load_into(obj, values: dict) -> None:
    """Set a dataclass's fields from a saved dict, in place (collaborators hold a reference)."""
    for f in fields(obj):
        setattr(obj, f.name, values[f.name])


def host_lr(state: dict) -> dict:
    """An optimizer's or scheduler's state dict with learning rates as floats: under CUDA graphs
    they are GPU tensors (graphs.py), which a resumed run re-creates itself."""
    as_float = lambda v: float(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
    if "param_groups" in state:
        state = {**state, "param_groups": [{**g, "lr": as_float(g["lr"])} for g in state["param_groups"]]}
    if "_last_lr" in state:
        state = {**state, "_last_lr": [as_float(v) for v in state["_last_lr"]]}
    return state
