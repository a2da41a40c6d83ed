"""--type-constraints: the labels each entity-type pair takes in training, applied at prediction."""

import json

import numpy as np
import pytest

import rekit
from rekit.cli import main
from rekit.data.constraints import allowed_mask, constrain, learn_type_pairs
from rekit.data.readers import write_csv
from rekit.data.schema import Entity, Record
from rekit.data.synthetic import make_splits

LABELS = ("no_relation", "org:founded", "per:title", "per:origin")


def rec(s: str, o: str, label: str | None = None, rid: str = "x") -> Record:
    return Record(rid, "가나다라 마바사", Entity("가나", 0, 2, s), Entity("마바", 5, 7, o), label)


def test_learn_type_pairs_keeps_labels_seen_with_each_typed_pair():
    records = [rec("ORG", "DAT", "org:founded"), rec("ORG", "DAT", "no_relation"), rec("PER", "POH", "per:title"),
               rec("PER", "POH", None), rec("UNK", "UNK", "per:origin"), rec("", "LOC", "per:origin")]
    assert learn_type_pairs(records, min_rows=1) == {"ORG|DAT": ["no_relation", "org:founded"], "PER|POH": ["per:title"]}


def test_a_pair_with_too_few_rows_stays_unconstrained():
    records = [rec("ORG", "DAT", "org:founded")] * 20 + [rec("PER", "POH", "per:title")] * 19
    assert learn_type_pairs(records) == {"ORG|DAT": ["org:founded"]}  # 19 PER|POH rows: no evidence yet


def test_constrain_zeroes_disallowed_labels_and_renormalises():
    pairs = {"ORG|DAT": ["no_relation", "org:founded"], "PER|POH": ["per:title", "per:origin"]}
    probs = np.array([[0.1, 0.2, 0.6, 0.1],    # ORG|DAT: per:title was the argmax, now ruled out
                      [0.4, 0.2, 0.3, 0.1],    # PER|POH: no_relation not allowed (never seen with the pair)
                      [0.25, 0.25, 0.25, 0.25],  # LOC|DAT: a pair training never saw: unchanged
                      [0.3, 0.3, 0.2, 0.2]], dtype=np.float32)  # untyped: unchanged
    rows = [rec("ORG", "DAT"), rec("PER", "POH"), rec("LOC", "DAT"), rec("UNK", "UNK")]
    out = constrain(probs, rows, pairs, LABELS)
    np.testing.assert_allclose(out[0], [1 / 3, 2 / 3, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0, 0, 0.75, 0.25], rtol=1e-6)
    np.testing.assert_array_equal(out[2:], probs[2:])
    assert out.dtype == np.float32
    assert allowed_mask(rows, pairs, LABELS).sum(axis=1).tolist() == [2, 2, 4, 4]


def test_constrain_leaves_underflowed_rows_and_missing_pairs_alone():
    probs = np.array([[0.0, 0.0, 1.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(constrain(probs, [rec("ORG", "DAT")], {"ORG|DAT": ["no_relation"]}, LABELS), probs)
    assert constrain(probs, [rec("ORG", "DAT")], None, LABELS) is probs
    assert constrain(probs, [rec("ORG", "DAT")], {}, LABELS) is probs


@pytest.fixture(scope="module")
def constrained_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("tc")
    train, test = make_splits(seed=3, n_train=160, n_test=30)
    rekit.train(train=train, output=d / "run", folds=2, scratch_size="tiny", scratch_vocab_size=1500, max_length=64,
                epochs=1, batch_size=32, device="cpu", type_constraints=True)
    write_csv(test, d / "test.csv")
    write_csv(train, d / "train.csv")
    return d, learn_type_pairs(train), test


def test_a_run_keeps_its_type_pairs_in_every_fold_spec(constrained_run):
    d, pairs, _ = constrained_run
    for k in (0, 1):
        spec = json.loads((d / "run" / f"fold-{k}" / "rekit.json").read_text())
        assert spec["type_pairs"] == pairs  # every training row's pair: the same in each fold


def test_predictions_give_zero_to_labels_the_pair_never_took(constrained_run):
    d, pairs, test = constrained_run
    model = rekit.load(d / "run", device="cpu")
    probs = model.predict_proba(test)
    mask = allowed_mask(test, pairs, model.labels)
    assert (~mask).any() and np.all(probs[~mask] == 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    members = rekit.load(d / "run", device="cpu", type_constraints=False).backend.member_probas(test)
    assert all(np.all(m[~mask] > 0) for m in members)
    each = [constrain(m, test, pairs, model.labels) for m in members]  # each fold model's, then their mean
    np.testing.assert_allclose(probs, np.mean(each, axis=0), rtol=1e-5, atol=1e-7)


def test_predict_cli_applies_them_unless_told_not_to(constrained_run, capsys):
    d, pairs, test = constrained_run
    said = {}
    for flag, name in (([], "on.jsonl"), (["--no-type-constraints"], "off.jsonl")):
        assert main(["predict", str(d / "run"), "--input", str(d / "test.csv"), "--output", str(d / name),
                     "--device", "cpu", *flag]) == 0
        said[name] = capsys.readouterr().err
    assert f"type-pair constraints on: a label a row's entity-type pair never took in training gets 0 ({len(pairs)} pairs" \
        in said["on.jsonl"] and "type-pair constraints" not in said["off.jsonl"]
    on = np.array([json.loads(x)["probs"] for x in (d / "on.jsonl").read_text().splitlines()])
    off = np.array([json.loads(x)["probs"] for x in (d / "off.jsonl").read_text().splitlines()])
    labels = json.loads((d / "run" / "labels.json").read_text())["labels"]
    mask = allowed_mask(test, pairs, labels)
    assert np.all(on[~mask] == 0) and np.all(off[~mask] > 0)


def test_an_onnx_export_applies_the_same_constraints(constrained_run):
    pytest.importorskip("onnxruntime")
    d, pairs, test = constrained_run
    assert main(["export", str(d / "run"), "--output", str(d / "onnx")]) == 0
    probs = rekit.load(d / "onnx").predict_proba(test)
    torch_probs = rekit.load(d / "run", device="cpu").predict_proba(test)
    mask = allowed_mask(test, pairs, rekit.load(d / "onnx").labels)
    assert np.all(probs[~mask] == 0)
    np.testing.assert_allclose(probs, torch_probs, atol=1e-4)


def test_the_oof_benchmark_learns_each_folds_pairs_from_its_own_training_rows(constrained_run, capsys):
    import sys
    from pathlib import Path

    from rekit import rundir
    from rekit.data.readers import read_records

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import type_constraints

    d, _, _ = constrained_run
    assert type_constraints.main(["--run", str(d / "run"), "--train", str(d / "train.csv"), "--out", str(d / "tc.json")]) == 0
    rows = json.loads((d / "tc.json").read_text())
    assert [r["fold"] for r in rows] == ["fold-0", "fold-1"] and sum(r["rows"] for r in rows) == 160
    assert "| fold-0 | 80 |" in capsys.readouterr().out
    records, _ = read_records(d / "train.csv")
    idx, probs, _ = rundir.load_fold(d / "run" / "fold-0")
    held = set(idx.tolist())
    pairs = learn_type_pairs(r for i, r in enumerate(records) if i not in held)  # not the held-out rows'
    labels = json.loads((d / "run" / "labels.json").read_text())["labels"]
    con = constrain(probs, [records[i] for i in idx], pairs, labels)
    assert rows[0]["argmax_changed"] == int((probs.argmax(1) != con.argmax(1)).sum())


def test_serving_applies_them_unless_told_not_to(constrained_run):
    from rekit.serve.model import load_model

    d, pairs, test = constrained_run
    on = load_model(d / "run", device="cpu")
    off = load_model(d / "run", device="cpu", type_constraints=False)
    mask = allowed_mask(test, pairs, on.labels)
    assert np.all(on.predict_proba(test)[~mask] == 0)
    assert np.all(off.predict_proba(test)[~mask] > 0)
