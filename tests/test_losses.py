"""Loss options: focal loss against cross-entropy, and the wiring from the config into the model."""

import pytest
import torch
from torch import nn

from rekit.config import RunConfig
from rekit.data.labels import LabelMap
from rekit.modeling.backbone import build_model
from rekit.modeling.losses import FocalLoss, make_loss
from rekit.modeling.scratch import train_tokenizer


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 5, generator=g) * 3, torch.randint(0, 5, (16,), generator=g)


def test_focal_with_gamma_zero_is_cross_entropy(batch):
    logits, y = batch
    assert FocalLoss(0.0)(logits, y).item() == pytest.approx(nn.CrossEntropyLoss()(logits, y).item(), rel=1e-5)
    smooth = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y).item()
    assert FocalLoss(0.0, label_smoothing=0.1)(logits, y).item() == pytest.approx(smooth, rel=1e-5)


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[6.0, 0.0, 0.0]])  # p(true) ~ 0.995
    hard = torch.tensor([[0.0, 1.0, 0.0]])  # p(true) ~ 0.21
    y = torch.tensor([0])
    ce = nn.CrossEntropyLoss()
    ratio_easy = FocalLoss(2.0)(easy, y) / ce(easy, y)
    ratio_hard = FocalLoss(2.0)(hard, y) / ce(hard, y)
    p_easy, p_hard = torch.softmax(easy, -1)[0, 0], torch.softmax(hard, -1)[0, 0]
    assert ratio_easy.item() == pytest.approx(((1 - p_easy) ** 2).item(), rel=1e-4)
    assert ratio_hard.item() == pytest.approx(((1 - p_hard) ** 2).item(), rel=1e-4)
    assert ratio_easy < 1e-4 < 0.5 < ratio_hard


def test_focal_skips_ignored_rows_and_has_gradients(batch):
    logits, y = batch
    logits = logits.clone().requires_grad_(True)
    y2 = y.clone()
    y2[::2] = -100
    loss = FocalLoss(2.0)(logits, y2)
    assert loss.item() == pytest.approx(FocalLoss(2.0)(logits[1::2], y[1::2]).item(), rel=1e-5)
    loss.backward()
    assert logits.grad[::2].abs().sum() == 0 and logits.grad[1::2].abs().sum() > 0
    assert FocalLoss(2.0)(logits, torch.full_like(y, -100)).item() == 0.0
    with pytest.raises(ValueError):
        FocalLoss(-1.0)


def test_make_loss_and_config_wiring():
    assert isinstance(make_loss("ce", 0.1), nn.CrossEntropyLoss)
    assert isinstance(make_loss("focal"), FocalLoss)
    with pytest.raises(ValueError):
        make_loss("hinge")
    cfg = RunConfig.from_dict({}, {"model": "scratch", "scratch_size": "tiny", "loss": "focal", "focal_gamma": 1.5,
                                   "label_smoothing": 0.05})
    tok = train_tokenizer(["가 나 다 라 마 바 사"] * 5, 200)
    model = build_model(cfg.model, tok, LabelMap(("no_relation", "per:title")), cfg.train.label_smoothing, train=cfg.train)
    assert isinstance(model.loss_fn, FocalLoss)
    assert (model.loss_fn.gamma, model.loss_fn.label_smoothing) == (1.5, 0.05)
