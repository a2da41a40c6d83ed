"""The training loop, its schedule and fold assignment, on a tiny scratch model (CPU, seconds)."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pytest
import torch

from rekit.config import RunConfig
from rekit.data.labels import LabelMap
from rekit.data.synthetic import make_splits
from rekit.encoding.tokenize import REEncoder
from rekit.modeling.backbone import build_model, load_tokenizer
from rekit.modeling.inference import predict_proba
from rekit.modeling.model import REModel
from rekit.runtime import seed_everything
from rekit.training.cv import tokenizer_corpus
from rekit.training.folds import make_folds
from rekit.training.loop import fit, micro_batches
from rekit.training.optim import clip_and_step, lr_factor, make_optimizer, make_scheduler, param_groups

CPU = torch.device("cpu")


def tiny_cfg(**kw):
    base = {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 2000, "max_length": 96,
            "lr": 1e-3, "batch_size": 32, "epochs": 6, "progress": False}
    return RunConfig.from_dict({}, {**base, **kw})


@pytest.fixture(scope="module")
def setup():
    train, test = make_splits(seed=0, n_train=600, n_test=300)
    cfg = tiny_cfg()
    lm = LabelMap.infer([r.label for r in train])
    tok = load_tokenizer(cfg.model, tokenizer_corpus(train, cfg), ["PER", "ORG", "LOC", "DAT"])
    enc = REEncoder(tok, cfg.model.marker, cfg.model.max_length)
    return cfg, lm, tok, enc.encode(train, lm), enc.encode(test, lm)


def test_lr_schedule():
    # 10 steps, 2 warmup: 0.5, 1.0, then linear decay to 0 over the remaining 8
    assert [round(lr_factor(s, 10, 2, "linear"), 3) for s in range(10)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5,
                                                                           0.375, 0.25, 0.125]
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(9, 10, 2, "constant") == 1.0


def test_clipping_folded_into_the_fused_step_matches_clip_grad_norm():
    """A fused AdamW takes the clipping factor as its grad_scale: same weights as clip_grad_norm_ + step."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 3)) for _ in range(3)]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    folded = torch.optim.AdamW(nets[0].parameters(), lr=1e-2, fused=True)
    plain = torch.optim.AdamW(nets[1].parameters(), lr=1e-2)
    unclipped = torch.optim.AdamW(nets[2].parameters(), lr=1e-2)
    for step in range(6):
        x = torch.randn(4, 8) * (10.0 if step % 2 else 0.01)  # odd steps are clipped, even ones not
        for net in nets:
            net(x).pow(2).sum().backward()
        clip_and_step(folded, list(nets[0].parameters()), 1.0)
        torch.nn.utils.clip_grad_norm_(nets[1].parameters(), 1.0)
        plain.step()
        unclipped.step()
        for opt in (folded, plain, unclipped):
            opt.zero_grad()
    assert not hasattr(folded, "grad_scale")  # not left behind for a later step
    for a, b, c in zip(nets[0].parameters(), nets[1].parameters(), nets[2].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        assert (a - c).abs().max() > 1e-3  # clipping changed the update


def test_micro_batches_split_each_step():
    assert micro_batches(list(range(8)), 4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert micro_batches(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert micro_batches([7], 4) == [[7]]


def test_no_weight_decay_on_biases_and_norms(setup):
    cfg, lm, tok, _, _ = setup
    model = build_model(cfg.model, tok, lm)
    decay, no_decay = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("bias" in names[id(p)] or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert not any(names[id(p)].endswith("bias") for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01


def test_layer_decay_scales_each_depth_and_keeps_the_schedule(setup):
    cfg, lm, tok, _, _ = setup
    model = build_model(cfg.model, tok, lm)  # tiny: 2 layers
    train = dataclasses.replace(cfg.train, layer_decay=0.5)
    opt = make_optimizer(model, train, CPU)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    lr = cfg.train.lr
    assert lr_of[id(named["encoder.embeddings.word_embeddings.weight"])] == pytest.approx(lr * 0.125)
    assert lr_of[id(named["encoder.encoder.layer.0.output.dense.weight"])] == pytest.approx(lr * 0.25)
    assert lr_of[id(named["encoder.encoder.layer.1.output.dense.bias"])] == pytest.approx(lr * 0.5)
    head = [n for n in named if n.startswith("head.")]
    assert head and all(lr_of[id(named[n])] == pytest.approx(lr) for n in head)
    assert wd_of[id(named["encoder.encoder.layer.1.output.dense.bias"])] == 0.0
    assert wd_of[id(named["encoder.encoder.layer.1.output.dense.weight"])] == cfg.train.weight_decay
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(lr_of) == sorted(id(p) for p in trainable)  # every trainable weight once, the pooler not at all
    sched = make_scheduler(opt, train, total_steps=10)  # warmup 1 step: every group at the same factor
    opt.step()
    sched.step()
    ratios = {round(g["lr"] / b, 6) for g, b in zip(opt.param_groups, sched.base_lrs)}
    assert len(ratios) == 1


def test_layer_decay_one_is_the_plain_groups(setup):
    cfg, lm, tok, _, _ = setup
    model = build_model(cfg.model, tok, lm)
    opt = make_optimizer(model, cfg.train, CPU)
    assert [len(g["params"]) for g in opt.param_groups] == [len(g["params"]) for g in param_groups(model, 0.01)]
    assert {g["lr"] for g in opt.param_groups} == {cfg.train.lr}


def test_stratified_folds_keep_rare_classes_in_training():
    labels = ["a"] * 50 + ["b"] * 25 + ["c"] * 3  # c is rarer than 5 folds
    folds = make_folds(labels, 5, seed=0)
    assert folds.rare == {"c": 3}
    valid_all = np.concatenate([va for _, va in folds.splits])
    assert sorted(valid_all) == list(range(75))  # every splittable row validated exactly once
    for tr, va in folds.splits:
        assert set(range(75, 78)) <= set(tr)  # rare rows always train
        assert not set(tr) & set(va)
        assert Counter(labels[i] for i in va) == {"a": 10, "b": 5}  # stratified


def test_holdout_and_plain_kfold():
    labels = ["a"] * 80 + ["b"] * 20
    (_tr, va), = make_folds(labels, 1, valid_ratio=0.2, seed=0).splits
    assert len(va) == 20 and Counter(labels[i] for i in va) == {"a": 16, "b": 4}
    folds = make_folds(labels, 4, kind="kfold", seed=0)
    assert sorted(np.concatenate([va for _, va in folds.splits])) == list(range(100))


def test_gradient_accumulation_matches_the_full_batch(setup, tmp_path):
    _cfg, lm, tok, feats, _ = setup
    sub = feats.subset(range(64))
    finals = []
    for accum in (1, 4):
        c = tiny_cfg(batch_size=16, grad_accum=accum, epochs=1, dropout=0.0)
        seed_everything(0)
        model = build_model(c.model, tok, lm)
        fit(model, tok, lm, sub, sub, c.train, tmp_path / f"a{accum}", seed=0, device=CPU)
        finals.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], atol=2e-5, rtol=1e-4)


def test_loop_learns_and_keeps_the_best_checkpoint(setup, tmp_path):
    cfg, lm, tok, train, valid = setup
    seed_everything(7)
    model = build_model(cfg.model, tok, lm)
    result = fit(model, tok, lm, train, valid, cfg.train, tmp_path / "fold", seed=7, device=CPU)
    accs = [h["accuracy"] for h in result.history]
    assert max(accs) > 0.9, accs
    f1s = [h["micro_f1"] for h in result.history]
    assert result.best_score == max(f1s)
    assert result.best_epoch == result.history[int(np.argmax(f1s))]["epoch"]  # first best kept on ties
    # The saved checkpoint is the best one: reloading it reproduces the best validation probabilities.
    loaded, tok2, lm2 = REModel.load(tmp_path / "fold")
    assert lm2 == lm
    probs = predict_proba(loaded, valid, tok2.pad_token_id, 64, CPU)
    np.testing.assert_allclose(probs, result.best_probs, atol=1e-5)
    spec = json.loads((tmp_path / "fold" / "rekit.json").read_text())
    assert spec["head"] == "entity" and spec["marker"] == "typed_entity_marker_punct"


def test_patience_stops_early(setup, tmp_path):
    _cfg, lm, tok, train, valid = setup
    c = tiny_cfg(lr=1e-9, epochs=6, patience=1, metric="micro_f1")  # nothing is learned: no improvement
    seed_everything(0)
    model = build_model(c.model, tok, lm)
    result = fit(model, tok, lm, train.subset(range(64)), valid.subset(range(64)), c.train, tmp_path / "p", seed=0, device=CPU)
    assert result.stopped and "early stop" in result.stopped
    assert len(result.history) < 6
