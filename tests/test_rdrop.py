"""R-Drop (--rdrop): two dropout passes in one forward of the doubled batch, their mean loss plus the
weighted symmetric KL; training mode only, so evaluation and saved models are unchanged."""

import json

import pytest
import torch
from torch import nn

from rekit.cli import main
from rekit.config import RunConfig
from rekit.data.labels import LabelMap
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.modeling.backbone import build_model
from rekit.modeling.losses import DistillLoss, symmetric_kl
from rekit.modeling.scratch import train_tokenizer
from rekit.training import concurrent

LABELS = LabelMap(("no_relation", "per:title", "org:members"))


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["가 나 다 라 마 바 사 아 자 차"] * 5, 200)


def _model(tok, **train):
    cfg = RunConfig.from_dict({}, {"model": "scratch", "scratch_size": "tiny", "max_length": 32, **train})
    torch.manual_seed(0)
    return build_model(cfg.model, tok, LABELS, train=cfg.train)


def _batch(tok, rows=4):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, len(tok), (rows, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "subj_pos": torch.tensor([1] * rows),
            "obj_pos": torch.tensor([5] * rows), "labels": torch.randint(0, len(LABELS), (rows,), generator=g)}


def test_symmetric_kl_and_without_dropout_the_loss_is_the_plain_one(tok):
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    kl = nn.functional.kl_div
    both = kl(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="batchmean") + \
        kl(a.log_softmax(-1), b.log_softmax(-1), log_target=True, reduction="batchmean")
    assert symmetric_kl(a, b).item() == pytest.approx(both.item() / 2, rel=1e-5)
    assert symmetric_kl(a, a).item() == 0.0
    # dropout 0: both passes agree, the KL term is 0 and the loss is the model's loss_fn, distillation's too
    model, plain = _model(tok, dropout=0.0, rdrop=2.0).train(), _model(tok, dropout=0.0).train()
    assert (model.rdrop, plain.rdrop) == (2.0, 0.0)
    batch = _batch(tok)
    soft = torch.softmax(torch.randn(4, len(LABELS)), -1)
    for m in (model, plain):
        m.loss_fn = DistillLoss(0.5)
    logits, loss = model(**batch, soft_targets=soft)
    ref_logits, ref = plain(**batch, soft_targets=soft)
    assert logits.shape == (4, len(LABELS))
    torch.testing.assert_close(logits, ref_logits)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_with_dropout_the_loss_is_the_two_passes_and_their_kl(tok):
    # --augment mask too: its hook draws a mask per row of the doubled batch (each copy masked independently)
    model = _model(tok, dropout=0.3, rdrop=1.5, loss="focal", augment="mask", token_mask_prob=0.5).train()
    batch, seen = _batch(tok), []
    model.encoder.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0]))
    twice = {k: torch.cat((v, v)) for k, v in batch.items() if k != "labels"}
    torch.manual_seed(3)
    first, second = model._logits(**{"token_type_ids": None, **twice}).detach().chunk(2)
    torch.manual_seed(3)  # the same random draws: the same masks and dropout
    logits, loss = model(**batch)
    assert logits.shape == (4, len(LABELS)) and seen[-1].shape == (8, 12)
    assert not torch.equal(seen[-1][:4], seen[-1][4:])  # the copies are masked differently
    torch.testing.assert_close(logits.detach(), first)
    kl = symmetric_kl(first, second)
    want = (model.loss_fn(first, batch["labels"]) + model.loss_fn(second, batch["labels"])) / 2 + 1.5 * kl
    assert kl.item() > 0 and loss.item() == pytest.approx(want.item(), rel=1e-5)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_evaluation_is_unchanged_and_memory_planning_counts_two_passes(tok):
    on, off = _model(tok, dropout=0.3, rdrop=1.0).eval(), _model(tok, dropout=0.3).eval()
    batch = _batch(tok)
    with torch.no_grad():
        (a, loss_a), (b, loss_b) = on(**batch), off(**batch)
    torch.testing.assert_close(a, b)
    assert loss_a.item() == pytest.approx(loss_b.item())
    params = 16 * sum(p.numel() for p in on.parameters())
    assert concurrent.fold_bytes(on, 32, 64) - params == 2 * (concurrent.fold_bytes(off, 32, 64) - params)


def test_rekit_train_with_rdrop_records_it_in_the_run_not_the_model(tmp_path):
    train, _ = make_splits(seed=5, n_train=60, n_test=0)
    write_csv(train, tmp_path / "train.csv")
    run = tmp_path / "run"
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--output", str(run), "--rdrop", "1.0",
                 "--folds", "1", "--valid-ratio", "0.3", "--model", "scratch", "--scratch-size", "tiny",
                 "--scratch-vocab-size", "400", "--max-length", "48", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "rdrop: 1.0" in (run / "config.yaml").read_text()
    assert "rdrop" not in json.loads((run / "fold-0" / "rekit.json").read_text())
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
