"""End to end through the `rekit` command: train -> predict -> evaluate, and user errors."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rekit.cli import main
from rekit.data.readers import read_records, write_csv
from rekit.data.synthetic import make_splits
from rekit.ensemble import Ensemble

TINY = ["--model", "scratch", "--scratch-size", "tiny", "--scratch-vocab-size", "1500", "--max-length", "64",
        "--epochs", "3", "--lr", "1e-3", "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    train, test = make_splits(seed=1, n_train=300, n_test=60)
    write_csv(train, d / "train.csv")
    write_csv(test, d / "test.csv")
    run = d / "run"
    assert main(["train", "--train", str(d / "train.csv"), "--output", str(run), "--folds", "2", *TINY]) == 0
    return d, run


def test_train_writes_the_run_directory(trained):
    _d, run = trained
    for name in ("config.yaml", "labels.json", "state.json", "metrics.jsonl", "summary.json", "oof.csv"):
        assert (run / name).is_file(), name
    for k in (0, 1):
        for name in ("model.safetensors", "config.json", "rekit.json", "labels.json", "tokenizer.json", "result.json"):
            assert (run / f"fold-{k}" / name).is_file(), (k, name)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and len(summary["folds"]) == 2
    assert {"micro_f1", "auprc", "accuracy"} <= set(summary["cv"])
    assert json.loads((run / "state.json").read_text())["status"] == "finished"
    rows = list(csv.DictReader(open(run / "oof.csv", encoding="utf-8")))
    assert len(rows) == 300  # every training row, each with its out-of-fold prediction
    assert {r["fold"] for r in rows} == {"0", "1"}
    assert len(json.loads(rows[0]["probs"])) == 30
    epochs = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert len(epochs) == 6 and {e["fold"] for e in epochs} == {0, 1}


def test_predict_writes_the_competition_format(trained, capsys):
    d, run = trained
    out = d / "submission.csv"
    assert main(["predict", str(run), "--input", str(d / "test.csv"), "--output", str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == 60 and list(rows[0]) == ["id", "pred_label", "probs"]
    probs = np.array([json.loads(r["probs"]) for r in rows])
    assert probs.shape == (60, 30)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    labels = json.loads((run / "labels.json").read_text())["labels"]
    assert [r["pred_label"] for r in rows] == [labels[i] for i in probs.argmax(1)]
    # JSON Lines by extension
    assert main(["predict", str(run), "--input", str(d / "test.csv"), "--output", str(d / "sub.jsonl")]) == 0
    lines = [json.loads(x) for x in open(d / "sub.jsonl", encoding="utf-8")]
    assert [x["pred_label"] for x in lines] == [r["pred_label"] for r in rows]


def test_compile_needs_a_gpu(trained, capsys):
    d, run = trained
    code = main(["predict", str(run), "--input", str(d / "test.csv"), "--output", str(d / "c.csv"), "--device", "cpu",
                 "--compile"])
    err = capsys.readouterr().err
    assert code == 2 and "--compile" in err and "CUDA" in err and "Traceback" not in err
    assert not (d / "c.csv").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="--compile needs a CUDA device")
def test_compiled_ensemble_predicts_like_the_plain_one(trained):
    d, run = trained
    records, _ = read_records(d / "test.csv")
    plain = Ensemble.load(run, device="cuda").predict_proba(records)
    fast = Ensemble.load(run, device="cuda", compile=True).predict_proba(records)
    np.testing.assert_allclose(fast, plain, atol=2e-2)
    assert (fast.argmax(1) == plain.argmax(1)).mean() >= 0.95


def test_ensemble_is_the_mean_of_fold_probabilities(trained):
    d, run = trained
    records, _ = read_records(d / "test.csv")
    ens = Ensemble.load(run, device="cpu")
    members = ens.member_probas(records)
    assert len(members) == 2
    np.testing.assert_allclose(ens.predict_proba(records), (members[0] + members[1]) / 2, atol=1e-6)
    weighted = Ensemble.load(run, device="cpu", weights=[3, 1]).predict_proba(records)
    np.testing.assert_allclose(weighted, 0.75 * members[0] + 0.25 * members[1], atol=1e-6)


def test_evaluate_prints_klue_metrics(trained, capsys):
    d, run = trained
    report = d / "report.json"
    assert main(["evaluate", str(run), "--input", str(d / "test.csv"), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "micro-F1" in out and "AUPRC" in out
    r = json.loads(report.read_text())
    assert 0 <= r["micro_f1"] <= 100 and len(r["per_class"]) == 30 and len(r["confusion"]) == 30


def test_evaluate_rejects_labels_the_model_does_not_know(trained, capsys):
    d, run = trained
    records, _ = read_records(d / "test.csv")
    from dataclasses import replace

    bad = [replace(records[0], label="per:made_up"), *records[1:5]]
    write_csv(bad, d / "bad_labels.csv")
    assert main(["evaluate", str(run), "--input", str(d / "bad_labels.csv")]) == 2
    err = capsys.readouterr().err
    assert "per:made_up" in err and "--unknown-labels skip" in err
    assert main(["evaluate", str(run), "--input", str(d / "bad_labels.csv"), "--unknown-labels", "skip"]) == 0
    assert "1 rows with labels unknown" in capsys.readouterr().out


def test_refuses_to_overwrite_a_run(trained, capsys):
    d, run = trained
    assert main(["train", "--train", str(d / "train.csv"), "--output", str(run), *TINY]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_config_file_and_flags_compose(trained, tmp_path):
    d, _ = trained
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  model: scratch\n  scratch_size: tiny\n  marker: entity_marker\ntrain:\n  epochs: 1\n  folds: 3\n")
    run = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--train", str(d / "train.csv"), "--output", str(run), "--folds", "2",
            "--max-train-samples", "120", "--no-progress"]
    assert main(args) == 0
    import yaml

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["marker"] == "entity_marker"  # from the file
    assert resolved["train"]["folds"] == 2  # the flag wins
    assert len(list(run.glob("fold-*"))) == 2


@pytest.mark.parametrize("argv,needle", [
    (["train", "--train", "missing.csv", "--output", "RUN", "--model", "scratch"], "missing.csv"),
    (["train", "--train", "TRAIN", "--output", "RUN", "--model", "klue/roberta-base"], "--model scratch"),
    (["train", "--train", "TRAIN", "--output", "RUN", "--folds", "0"], "--folds"),
    (["predict", "NOWHERE", "--input", "TRAIN", "--output", "x.csv"], "NOWHERE"),
])
def test_user_errors_are_one_line_without_traceback(trained, tmp_path, argv, needle):
    d, _ = trained
    argv = [a.replace("TRAIN", str(d / "train.csv")).replace("RUN", str(tmp_path / "r")) for a in argv]
    p = subprocess.run([sys.executable, "-m", "rekit.cli", *argv], capture_output=True, text=True,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert needle in p.stderr
    assert p.stderr.strip().count("\n") <= 1, p.stderr


def test_malformed_row_names_file_and_row(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("id,sentence,subject_entity,object_entity,label,source\n"
                 "0,가나다 라마,\"{'word': '가나', 'start_idx': 0, 'end_idx': 1, 'type': 'PER'}\",\"{'word': '라마', 'start_idx': 4, 'end_idx': 5, 'type': 'ORG'}\",no_relation,x\n"  # noqa: E501 (Korean test data kept whole)
                 "1,가나다 라마,\"{'word': '가나', 'start_idx': 0, 'end_idx': 1, 'type': 'PER'\",\"{'word': '라마', 'start_idx': 4, 'end_idx': 5, 'type': 'ORG'}\",no_relation,x\n",  # noqa: E501 (Korean test data kept whole)
                 encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "rekit.cli", "train", "--train", str(f), "--output", str(tmp_path / "r"),
                        "--model", "scratch"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "bad.csv" in p.stderr and "row 2" in p.stderr


@pytest.mark.parametrize("command", ["pretrain", "train"])
def test_a_mistyped_input_fails_before_overwrite_removes_anything(tmp_path, capsys, command):
    """`--overwrite` replaces the output only once the inputs are known to exist: a typo in a path
    must not cost the model or run directory already there."""
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier result", encoding="utf-8")
    args = [command, "--train", str(tmp_path / "typo.csv"), "--output", str(out), "--overwrite", "--model", "scratch"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "typo.csv: no such file" in err and "Traceback" not in err
    assert (out / "keep.txt").read_text(encoding="utf-8") == "an earlier result"


@pytest.mark.parametrize("command", ["pretrain", "train"])
def test_a_training_file_that_cannot_be_read_leaves_the_old_output(tmp_path, capsys, command):
    """`--overwrite` reads (and checks) the new training file before it removes the run or model
    directory that is there."""
    bad = tmp_path / "bad.csv"
    bad.write_text("id,sentence\n0,no entity columns here\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("an earlier result", encoding="utf-8")
    assert main([command, "--train", str(bad), "--output", str(out), "--overwrite", "--model", "scratch"]) == 2
    assert "bad.csv" in capsys.readouterr().err
    assert (out / "config.yaml").read_text(encoding="utf-8") == "an earlier result"


@pytest.mark.parametrize("command,flag", [("predict", "--output"), ("evaluate", "--output"), ("evaluate", "--report")])
def test_an_output_that_is_a_directory_fails_before_predicting(trained, tmp_path, capsys, command, flag):
    d, run = trained
    args = [command, str(run), "--input", str(d / "test.csv"), flag, str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{flag} {tmp_path} is a directory" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["pretrain", "train"])
def test_an_output_that_is_a_file_is_a_one_line_error(trained, tmp_path, capsys, command):
    d, _ = trained
    target = tmp_path / "a_file"
    target.write_text("not a directory", encoding="utf-8")
    assert main([command, "--train", str(d / "train.csv"), "--output", str(target), "--model", "scratch"]) == 2
    err = capsys.readouterr().err
    assert f"--output {target} exists and is not a directory" in err and "Traceback" not in err
    assert target.read_text(encoding="utf-8") == "not a directory"

