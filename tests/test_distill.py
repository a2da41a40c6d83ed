"""`rekit distill` (issue 18): one student from a fold ensemble, as a normal run directory."""

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import torch
import yaml

import rekit
from rekit.cli import main
from rekit.data.labels import LabelMap
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.encoding.collate import Collator
from rekit.encoding.tokenize import Features
from rekit.errors import DataError
from rekit.modeling.losses import DistillLoss
from rekit.rundir import load_fold
from rekit.training.distill import align_soft_targets
from rekit.training.folds import make_folds

TINY = dict(scratch_size="tiny", scratch_vocab_size=1500, max_length=64, epochs=1, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-fold teacher trained from a file, and its student distilled by the CLI (with unlabeled rows)."""
    d = tmp_path_factory.mktemp("distill")
    train, test = make_splits(seed=5, n_train=160, n_test=30)
    write_csv(train, d / "train.csv")
    write_csv(test, d / "test.csv")
    rekit.train(train=d / "train.csv", output=d / "teacher", folds=2, **TINY)
    code = main(["distill", str(d / "teacher"), "--output", str(d / "student"), "--unlabeled", str(d / "test.csv"),
                 "--epochs", "2", "--device", "cpu", "--alpha", "0.3", "--no-progress"])
    assert code == 0
    return d, train, test


def test_the_student_is_a_one_fold_run_that_names_its_teacher(runs):
    d, train, test = runs
    student = d / "student"
    assert sorted(p.name for p in student.glob("fold-*")) == ["fold-0"]
    assert json.loads((student / "state.json").read_text())["status"] == "finished"
    assert yaml.safe_load((student / "config.yaml").read_text())["train"]["folds"] == 1
    info = json.loads((student / "distill.json").read_text())
    assert info["teacher"] == str((d / "teacher").resolve()) and len(info["teacher_fingerprint"]) == 64
    assert info["settings"] == {"alpha": 0.3, "temperature": 1.0, "unlabeled": str(d / "test.csv"), "folds": 1}
    assert (info["n_labeled"], info["n_unlabeled"], info["teacher_models"]) == (len(train), len(test), 2)
    summary = json.loads((student / "summary.json").read_text())
    assert summary["cv"] == {} and summary["distilled_from"]["teacher_fingerprint"] == info["teacher_fingerprint"]
    result = json.loads((student / "fold-0" / "result.json").read_text())
    assert (result["n_train"], result["n_valid"], result["best_epoch"]) == (len(train) + len(test), 0, 2.0)
    with open(student / "oof.csv", newline="") as f:  # nothing was held out: no out-of-fold probabilities
        assert {row["fold"] for row in csv.DictReader(f)} == {"-1"}
    assert "distilled from" in (student / "README.md").read_text()


@pytest.fixture(scope="module")
def students(runs):
    """`--folds 2`: two students on the teacher's two folds (same seed and split), with the unlabeled rows."""
    d, _, _ = runs
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["distill", str(d / "teacher"), "--output", str(d / "students"), "--folds", "2", "--unlabeled",
                     str(d / "test.csv"), "--epochs", "1", "--device", "cpu", "--no-progress"])
    assert code == 0
    return d / "students", out.getvalue()


def test_folds_k_trains_k_students_as_a_k_fold_run(runs, students):
    _, train, test = runs
    run, log = students
    assert sorted(p.name for p in run.glob("fold-*")) == ["fold-0", "fold-1"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["folds"] == 2
    assert json.loads((run / "distill.json").read_text())["settings"]["folds"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and 0 <= summary["cv"]["micro_f1"] <= 100
    lm = LabelMap.load(run / "labels.json")
    y = np.asarray([lm.label2id[r.label] for r in train])
    splits = make_folds([r.label for r in train], 2, seed=42).splits  # as `rekit train` splits (the teacher's seed)
    oof = np.full((len(train), len(lm)), np.nan)
    for k, (tr, va) in enumerate(splits):
        index, probs, result = load_fold(run / f"fold-{k}")
        # Validated on the fold's held-out labeled rows only, by their gold labels (the loss of the kept probs).
        np.testing.assert_array_equal(index, va)
        gold_loss = -np.mean(np.log(np.clip(probs[np.arange(len(va)), y[va]], 1e-12, None)))
        assert result["best"]["valid_loss"] == pytest.approx(gold_loss, rel=1e-4)
        # Trained on the labeled rows outside the fold plus every unlabeled row.
        assert (result["n_train"], result["n_valid"]) == (len(tr) + len(test), len(va))
        assert f"fold {k + 1}/2: {len(tr) + len(test):,} train / {len(va):,} valid" in log
        oof[index] = probs
    with open(run / "oof.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [r.id for r in train] and {r["fold"] for r in rows} == {"0", "1"}
    np.testing.assert_allclose(np.asarray([json.loads(r["probs"]) for r in rows]), oof, atol=1e-6)
    assert "ensemble of students" in (run / "README.md").read_text()


def test_predict_averages_the_students(runs, students, capsys):
    d, _, test = runs
    run, _ = students
    assert main(["predict", str(run), "--input", str(d / "test.csv"), "--output", str(d / "ps.csv"),
                 "--device", "cpu"]) == 0
    assert "2 fold models averaged" in capsys.readouterr().out
    with open(d / "ps.csv", newline="") as f:
        probs = np.asarray([json.loads(r["probs"]) for r in csv.DictReader(f)])
    each = [rekit.load(run / f"fold-{k}", device="cpu").predict_proba(test) for k in (0, 1)]
    np.testing.assert_allclose(probs, np.mean(each, axis=0), atol=1e-5)
    assert len(rekit.load(run, device="cpu").backend.dirs) == 2


def test_predict_and_load_take_the_student_as_they_are(runs, capsys):
    d, _, test = runs
    assert main(["predict", str(d / "student"), "--input", str(d / "test.csv"), "--output", str(d / "p.csv"),
                 "--device", "cpu"]) == 0
    with open(d / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    model = rekit.load(d / "student", device="cpu")
    assert len(model.backend.dirs) == 1
    assert [r["id"] for r in rows] == [r.id for r in test]
    assert {r["pred_label"] for r in rows} <= set(model.labels)
    assert model.labels == rekit.load(d / "teacher", device="cpu").labels
    probs = model.predict_proba(test)
    np.testing.assert_allclose(np.asarray([json.loads(r["probs"]) for r in rows]), probs, atol=1e-5)
    assert "1 fold models averaged" in capsys.readouterr().out
    pytest.importorskip("onnxruntime")
    assert main(["export", str(d / "student"), "--format", "onnx", "--output", str(d / "student.onnx")]) == 0
    np.testing.assert_allclose(rekit.load(d / "student.onnx").predict_proba(test), probs, atol=1e-4)


def test_user_errors_are_one_line(runs, capsys):
    d, _, _ = runs
    cases = [(["distill", str(d / "student"), "--output", str(d / "s2")], "has no out-of-fold probabilities"),
             (["distill", str(d / "teacher"), "--output", str(d / "student")], "pass --overwrite"),
             (["distill", str(d / "nothing"), "--output", str(d / "s2")], "no such run directory"),
             (["distill", str(d / "teacher"), "--output", str(d / "s2"), "--alpha", "2"], "--alpha"),
             (["distill", str(d / "teacher"), "--output", str(d / "s2"), "--train", str(d / "test.csv")],
              "is not in"),  # another file's rows: the out-of-fold probabilities belong to none of them
             (["train", "--resume", str(d / "student")], "made by `rekit distill`"),
             (["distill", str(d / "teacher"), "--output", str(d / "s2"), "--folds", "0"], "--folds"),
             (["distill", str(d / "teacher"), "--output", str(d / "s2"), "--folds", "500"], "too few for 500 fold")]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rekit: error:") and message in err and "\n" not in err, err
    assert not (d / "s2").exists()


def test_distill_loss_with_alpha_one_is_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    targets = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(DistillLoss(alpha=1.0, temperature=3.0)(logits, labels, targets), ce)
    # By hand: row 0: log(e^2 + e^-1 + e^0.5) - 2 = 0.24130; row 1: log(e^.1 + e^.2 + e^.3) - 0.3 = 1.00194.
    by_hand = (0.24130 + 1.00194) / 2
    assert DistillLoss(alpha=1.0, temperature=2.0)(logits, labels, targets).item() == pytest.approx(by_hand, abs=1e-4)
    # alpha 0, T 1: exactly KL(targets || softmax(logits)); zero when the student matches them.
    kl = (targets * (targets.log() - torch.log_softmax(logits, -1))).sum(-1).mean()
    assert torch.allclose(DistillLoss(alpha=0.0, temperature=1.0)(logits, labels, targets), kl)
    assert DistillLoss(alpha=0.0, temperature=2.0)(logits, labels, torch.softmax(logits, -1)).abs().item() < 1e-6
    # T: KL of the softened distributions, times T^2.
    t = 2.0
    q = torch.softmax(targets.log() / t, -1)
    soft = (q * (q.log() - torch.log_softmax(logits / t, -1))).sum(-1).mean() * t * t
    assert torch.allclose(DistillLoss(alpha=0.0, temperature=t)(logits, labels, targets), soft)
    # An unlabeled row (-100) has the soft term only, with weight 1, whatever alpha.
    unlabeled = torch.tensor([-100, -100])
    assert torch.allclose(DistillLoss(alpha=0.7, temperature=t)(logits, unlabeled, targets), soft)


def test_soft_targets_follow_their_rows(runs):
    """Row i's out-of-fold probabilities go with record i, whatever the order of the records (matched
    by id), through Features.subset and into the batch; a row never held out gets its gold label."""
    _, train, _ = runs
    lm = LabelMap.infer([r.label for r in train])
    rng = np.random.default_rng(0)
    ids = [r.id for r in train]
    y = np.asarray([lm.label2id[r.label] for r in train])
    probs = rng.dirichlet(np.ones(len(lm)), size=len(train))
    probs[3] = np.nan  # fold -1: a rare class
    shuffled = [train[i] for i in rng.permutation(len(train))]
    soft, fallback = align_soft_targets(shuffled, ids, y, probs, lm)
    assert fallback == 1
    by_id = dict(zip(ids, probs))
    for i, r in enumerate(shuffled):
        expected = np.eye(len(lm))[lm.label2id[r.label]] if r.id == ids[3] else by_id[r.id]
        np.testing.assert_allclose(soft[i], expected, rtol=1e-6)
    n = len(shuffled)
    feats = Features([[1, 2 + i % 5, 3] for i in range(n)], None, [0] * n, [1] * n, list(range(n)), soft)
    part = feats.subset([7, 2, 5])
    batch = Collator(part, pad_id=0)([2, 0])
    assert batch["labels"].tolist() == [5, 7]
    np.testing.assert_allclose(batch["soft_targets"].numpy(), soft[[5, 7]])


def test_align_refuses_another_training_file(runs):
    _, train, _ = runs
    lm = LabelMap.infer([r.label for r in train])
    ids = [r.id for r in train]
    y = np.asarray([lm.label2id[r.label] for r in train])
    probs = np.full((len(train), len(lm)), 1 / len(lm))
    with pytest.raises(DataError, match="is not in"):
        align_soft_targets(train, ids[1:], y[1:], probs[1:], lm)
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % len(lm)
    with pytest.raises(DataError, match="label differs"):
        align_soft_targets(train, ids, y2, probs, lm)
