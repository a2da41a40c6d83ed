"""The type-pair majority baseline: hand-made data, and the known KLUE-RE dev score."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pytest

from rekit.baselines import TypePairMajority
from rekit.data.labels import LabelMap
from rekit.data.schema import Entity, Record
from rekit.errors import DataError
from rekit.metrics import evaluate, micro_f1

KLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "klue-re"


def rec(i: int, s_type: str, o_type: str, label: str | None) -> Record:
    sentence = "가나 다라"
    return Record(str(i), sentence, Entity("가나", 0, 2, s_type), Entity("다라", 3, 5, o_type), label)


TRAIN = [
    rec(0, "PER", "ORG", "per:employee_of"),
    rec(1, "PER", "ORG", "per:employee_of"),
    rec(2, "PER", "ORG", "no_relation"),
    rec(3, "ORG", "PER", "org:top_members/employees"),
    rec(4, "PER", "PER", "per:spouse"),  # tie with the next one
    rec(5, "PER", "PER", "no_relation"),
]
LM = LabelMap(("no_relation", "org:top_members/employees", "per:employee_of", "per:spouse", "per:title"))


def test_majority_ties_and_fallback():
    model = TypePairMajority().fit(TRAIN)
    assert model.classes_ == ("no_relation", "org:top_members/employees", "per:employee_of", "per:spouse")
    # PER-PER tie (1 vs 1): the label more frequent overall wins (no_relation 2 > spouse 1).
    # Fallback: no_relation and per:employee_of both 2 overall -> alphabetically first.
    assert model.pair_majority_ == {
        ("PER", "ORG"): "per:employee_of",
        ("ORG", "PER"): "org:top_members/employees",
        ("PER", "PER"): "no_relation",
    }
    assert model.fallback_ == "no_relation"
    test = [rec(10, "PER", "ORG", None), rec(11, "LOC", "DAT", None), rec(12, "ORG", "PER", None)]
    assert model.predict(test) == ["per:employee_of", "no_relation", "org:top_members/employees"]


def test_ties_do_not_depend_on_record_order():
    a = TypePairMajority().fit(TRAIN)
    b = TypePairMajority().fit(TRAIN[::-1])
    assert a.pair_majority_ == b.pair_majority_ and a.fallback_ == b.fallback_


def test_predict_proba_hand_computed():
    model = TypePairMajority(alpha=1.0).fit(TRAIN)
    test = [rec(10, "PER", "ORG", None), rec(11, "LOC", "DAT", None)]
    probs = model.predict_proba(test, LM)
    assert probs.shape == (2, 5)
    # Global distribution (6 records): no_rel 2/6, top 1/6, employee 2/6, spouse 1/6, title 0.
    # PER-ORG counts: no_rel 1, employee 2 (n = 3); (counts + 1 * prior) / (3 + 1):
    #   no_rel (1 + 1/3) / 4 = 1/3; top (1/6) / 4 = 1/24; employee (2 + 1/3) / 4 = 7/12;
    #   spouse 1/24; title 0.
    np.testing.assert_allclose(probs[0], [1 / 3, 1 / 24, 7 / 12, 1 / 24, 0.0])
    # Unseen pair: the global distribution itself.
    np.testing.assert_allclose(probs[1], [2 / 6, 1 / 6, 2 / 6, 1 / 6, 0.0])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_argmax_agrees_with_predict(alpha):
    model = TypePairMajority(alpha=alpha).fit(TRAIN)
    test = [rec(i, s, o, None) for i, (s, o) in enumerate([("PER", "ORG"), ("ORG", "PER"), ("PER", "PER"), ("X", "Y")])]
    probs = model.predict_proba(test, LM)
    assert [LM.labels[i] for i in probs.argmax(axis=1)] == model.predict(test)


def test_errors():
    with pytest.raises(RuntimeError):
        TypePairMajority().predict(TRAIN)
    with pytest.raises(DataError):
        TypePairMajority().fit([rec(0, "PER", "ORG", None)])
    with pytest.raises(DataError):
        TypePairMajority().fit([])
    with pytest.raises(ValueError):
        TypePairMajority(alpha=2.0).fit(TRAIN)
    small = LabelMap(("no_relation", "per:employee_of"))
    with pytest.raises(DataError):  # training labels the label map can't hold
        TypePairMajority().fit(TRAIN).predict_proba(TRAIN, small)


def read_klue_csv(path: Path) -> list[Record]:
    """Minimal reader for this test only: dict-literal entities, inclusive end_idx."""

    def entity(cell: str) -> Entity:
        d = ast.literal_eval(cell)
        return Entity(d["word"], d["start_idx"], d["end_idx"] + 1, d["type"])

    with path.open(encoding="utf-8", newline="") as f:
        return [
            Record(row["id"], row["sentence"], entity(row["subject_entity"]), entity(row["object_entity"]),
                   row["label"], row["source"])
            for row in csv.DictReader(f)
        ]


@pytest.mark.skipif(not (KLUE_DIR / "dev.csv").exists(), reason="KLUE-RE data not available")
def test_klue_re_dev_micro_f1():
    train = read_klue_csv(KLUE_DIR / "train.csv")
    dev = read_klue_csv(KLUE_DIR / "dev.csv")
    lm = LabelMap.builtin("klue-re")
    model = TypePairMajority().fit(train)
    y = np.array([lm.encode(r.label) for r in dev])
    pred = np.array([lm.encode(p) for p in model.predict(dev)])
    assert micro_f1(y, pred, len(lm), lm.no_relation_id) == pytest.approx(37.12, abs=0.5)
    scores = evaluate(y, model.predict_proba(dev, lm), lm)
    assert scores["micro_f1"] == pytest.approx(37.12, abs=0.5)  # argmax of proba == predict
    assert 40 < scores["auprc"] < 60 and 0.4 < scores["accuracy"] < 0.6
