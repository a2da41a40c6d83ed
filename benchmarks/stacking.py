"""K folds' models as one stacked model: every GEMM of a step covers all K folds at once (issue 17's
`bmm` mechanism, measured by fold_concurrency_probe.py; not part of rekit's training, see BENCHMARKS.md).

At batch 32 a RoBERTa-large step is latency-bound (small GEMMs, a memory-bound AdamW), so K folds
trained one after another leave the GPU mostly idle. `stack(models)` builds one copy of the first
fold's module tree in which every Linear, Embedding and LayerNorm holds its K folds' weights along
a new leading axis, and rebinds each fold model's parameters as views of those stacked tensors:

- the stacked model's input is the K folds' batches one after another (fold-major, the same
  number of rows B per fold), and each stacked layer treats rows [k*B, (k+1)*B) with fold k's
  weights: a Linear is one batched matmul (K, B*T, in) x (K, in, out), a LayerNorm normalises
  and then scales by fold k's weight, an Embedding looks up fold k's table;
- the layers without weights (attention's softmax, activations, dropout, the heads' indexing)
  see an ordinary batch of K*B rows, so the model's own forward code runs unchanged;
- the fold models (views) are what evaluation, checkpoints and the resumable state read: an
  update of the stacked weights is an update of every fold's model, with no copy.

Each fold's loss is its own mean over its rows, and the summed loss's gradient w.r.t. fold k's
weights is fold k's own gradient, so an optimizer step over the stacked weights is K independent
steps, provided the update is elementwise (AdamW is) and the clipping is per fold (`clip_per_fold`).

`check(models, stacked, ...)` compares the stacked forward with each fold's own forward on a small
batch: an architecture whose forward reads a weight directly (not through these layer types) is
refused rather than trained wrong.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class _Rows:
    """Rows per fold of the batch being run, shared by the stacked layers of one model (an
    embedding given one row of ids, like BERT's position ids (1, T), repeats it for every row)."""

    def __init__(self) -> None:
        self.per_fold = 1


class StackedLinear(nn.Module):
    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.k = len(layers)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))  # (K, out, in)
        self.bias = None if layers[0].bias is None else nn.Parameter(torch.stack([m.bias.detach() for m in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, width = x.shape[:-1], x.shape[-1]
        x3 = x.reshape(self.k, -1, width)
        w = self.weight.transpose(1, 2)
        y = torch.bmm(x3, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), x3, w)
        return y.reshape(*lead, -1)


class StackedLayerNorm(nn.Module):
    def __init__(self, layers: Sequence[nn.LayerNorm]):
        super().__init__()
        self.k, self.shape, self.eps = len(layers), tuple(layers[0].normalized_shape), layers[0].eps
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[: x.ndim - len(self.shape)]
        x3 = x.reshape(self.k, -1, *self.shape)
        y = F.layer_norm(x3, self.shape, None, None, self.eps)
        w, b = self.weight.view(self.k, 1, *self.shape), self.bias.view(self.k, 1, *self.shape)
        return torch.addcmul(b, y, w).reshape(*lead, *self.shape)


class StackedEmbedding(nn.Module):
    def __init__(self, layers: Sequence[nn.Embedding], rows: _Rows):
        super().__init__()
        self.k, self.rows, self.padding_idx = len(layers), rows, layers[0].padding_idx
        self.num_embeddings = layers[0].num_embeddings
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))  # (K, V, H)
        if self.padding_idx is not None:  # nn.Embedding never updates its padding row
            self.register_buffer("padding_row", torch.tensor([self.padding_idx], device=self.weight.device),
                                 persistent=False)  # on the device already: no copy inside a graph capture
            self.weight.register_hook(self._no_padding_grad)

    def _no_padding_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.index_fill(1, self.padding_row, 0.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[0] == 1 and self.k * self.rows.per_fold > 1:  # one row for all (e.g. BERT's position ids)
            ids = ids.expand(self.k * self.rows.per_fold, *ids.shape[1:])
        offsets = torch.arange(self.k, device=ids.device).view(self.k, 1) * self.num_embeddings
        flat = (ids.reshape(self.k, -1) + offsets).reshape(ids.shape)
        return F.embedding(flat, self.weight.reshape(-1, self.weight.shape[-1]))


STACKABLE = (nn.Linear, nn.LayerNorm, nn.Embedding)


def _own_params(module: nn.Module) -> list[str]:
    return [n for n, _ in module.named_parameters(recurse=False)]


def unstackable(model: nn.Module) -> str | None:
    """Why `model` cannot be stacked (a weight outside the stackable layer types), or None."""
    for name, module in model.named_modules():
        if _own_params(module) and not isinstance(module, STACKABLE):
            return f"{name or type(model).__name__} ({type(module).__name__}) holds weights rekit cannot stack"
        if isinstance(module, nn.LayerNorm) and (module.weight is None or module.bias is None):
            return f"{name} is a LayerNorm without affine weights"
    return None


def _stacked_layer(layers: list[nn.Module], rows: _Rows) -> nn.Module:
    first = layers[0]
    new: nn.Module
    if isinstance(first, nn.Linear):
        new = StackedLinear(layers)  # type: ignore[arg-type]
    elif isinstance(first, nn.LayerNorm):
        new = StackedLayerNorm(layers)  # type: ignore[arg-type]
    else:
        new = StackedEmbedding(layers, rows)  # type: ignore[arg-type]
    new._forward_pre_hooks.update(first._forward_pre_hooks)  # e.g. --augment mask on the word embeddings
    new._forward_hooks.update(first._forward_hooks)
    new.train(first.training)
    return new


def _rebind(layers: list[nn.Module], stacked: nn.Module) -> None:
    """Each fold's layer now reads fold k's slice of the stacked weights (views, shared storage)."""
    for k, layer in enumerate(layers):
        for name, param in stacked.named_parameters(recurse=False):
            setattr(layer, name, nn.Parameter(param.data[k], requires_grad=param.requires_grad))


def stack(models: Sequence[nn.Module]) -> nn.Module:
    """One module over the K fold models (same architecture); see the module docstring. The fold
    models keep working on their own, as views of the stacked weights."""
    why = unstackable(models[0])
    if why:
        raise ValueError(why)
    rows = _Rows()
    stacked = copy.deepcopy(models[0])
    per_model = [dict(m.named_modules()) for m in models]
    for name, module in list(stacked.named_modules()):
        if not isinstance(module, STACKABLE):
            continue
        layers = [mods[name] for mods in per_model]
        new = _stacked_layer(layers, rows)
        frozen = not layers[0].weight.requires_grad
        for p in new.parameters():
            p.requires_grad_(not frozen)
        _rebind(layers, new)
        parent_name, _, attr = name.rpartition(".")
        setattr(stacked.get_submodule(parent_name) if parent_name else stacked, attr, new)
    stacked.rekit_rows = rows  # type: ignore[assignment]
    stacked.rekit_folds = len(models)  # type: ignore[assignment]
    return stacked


def set_rows(stacked: nn.Module, per_fold: int) -> None:
    stacked.rekit_rows.per_fold = per_fold  # type: ignore[union-attr]


def fold_dim(p: torch.Tensor) -> int:
    """A stacked weight's number of dimensions in one fold (what weight decay is decided by)."""
    return p.ndim - 1


def per_fold_norms(grads: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """(K,) global L2 norm of each fold's gradients (the slices along the leading axis): one
    multi-tensor norm per fold over its contiguous slices, not one kernel per weight."""
    return torch.stack([torch.linalg.vector_norm(torch.stack(torch._foreach_norm([g[i] for g in grads])))
                        for i in range(k)])


def clip_per_fold(params: Sequence[torch.Tensor], k: int, max_grad_norm: float) -> None:
    """clip_grad_norm_ for each fold on its own: fold k's gradients times min(1, max / (norm_k + 1e-6))."""
    grads = [p.grad for p in params if p.grad is not None]
    if max_grad_norm <= 0 or not grads:
        return
    coef = torch.clamp(max_grad_norm / (per_fold_norms(grads, k) + 1e-6), max=1.0)
    for i in range(k):
        torch._foreach_mul_([g[i] for g in grads], coef[i])


def fold_losses(logits: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module, k: int) -> torch.Tensor:
    """(K,) each fold's own loss over its rows (rows labelled -100 are padding and count for none)."""
    lg, lb = logits.reshape(k, -1, logits.shape[-1]), labels.reshape(k, -1)
    return torch.stack([loss_fn(lg[i].float(), lb[i]) for i in range(k)])
