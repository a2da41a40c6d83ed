"""benchmarks/stacking.py (issue 17's stacked-folds probe): the stacked model computes exactly what
the K fold models compute on their own, so its throughput numbers measure the same training."""

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import stacking
from rekit.modeling.model import ModelSpec, REModel

K, B, T = 3, 4, 10


def fold_models(kind: str) -> list[REModel]:
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    cfg_cls, model_cls = (BertConfig, BertModel) if kind == "bert" else (RobertaConfig, RobertaModel)
    cfg = cfg_cls(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  type_vocab_size=2, pad_token_id=1)
    models = []
    for k in range(K):
        torch.manual_seed(k)
        models.append(REModel(model_cls(cfg), ModelSpec("entity", 5, "none", "none", 32, 0.0)))
    return models


def batch(k: int | None = None) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (K * B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[:, 7:] = 0
    ids[:, 7:] = 1  # padding
    b = {"input_ids": ids, "attention_mask": mask, "subj_pos": torch.randint(0, 5, (K * B,), generator=g),
         "obj_pos": torch.randint(0, 5, (K * B,), generator=g), "token_type_ids": torch.zeros_like(ids)}
    return b if k is None else {name: v[k * B:(k + 1) * B] for name, v in b.items()}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_stacked_forward_and_gradients_are_each_folds_own(kind):
    models = fold_models(kind)
    alone = [copy.deepcopy(m) for m in models]  # stack() rebinds the fold models' weights as views
    stacked = stacking.stack(models)
    stacking.set_rows(stacked, B)
    labels = torch.randint(0, 5, (K * B,), generator=torch.Generator().manual_seed(1))
    logits, _ = stacked(**batch())
    stacking.fold_losses(logits, labels, models[0].loss_fn, K).sum().backward()
    named = dict(stacked.named_parameters())
    for k, model in enumerate(alone):
        ref, loss = model(**batch(k), labels=labels[k * B:(k + 1) * B])
        assert torch.allclose(logits[k * B:(k + 1) * B], ref, atol=1e-5)
        loss.backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                assert torch.allclose(named[name].grad[k], p.grad, atol=1e-6), name
    # the fold models read the stacked weights: one update reaches them all
    with torch.no_grad():
        named["head.out.bias"].add_(1.0)
    assert torch.equal(models[2].head.out.bias, named["head.out.bias"][2])


def test_clip_per_fold_matches_clip_grad_norm_on_each_fold():
    grads = [torch.randn(K, 4, 5) * 3, torch.randn(K, 7)]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    stacking.clip_per_fold(params, K, 1.0)
    for k in range(K):
        ref = [torch.nn.Parameter(torch.zeros_like(g[k])) for g in grads]
        for r, g in zip(ref, grads):
            r.grad = g[k].clone()
        torch.nn.utils.clip_grad_norm_(ref, 1.0)
        for r, p in zip(ref, params):
            assert torch.allclose(p.grad[k], r.grad, atol=1e-6)


def test_unstackable_architectures_are_named():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))

    assert "holds weights" in stacking.unstackable(Odd())
    with pytest.raises(ValueError):
        stacking.stack([Odd(), Odd()])
