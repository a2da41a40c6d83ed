"""KLUE-RE metrics: hand-computed cases, agreement with direct sklearn calls, edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    auc,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from rekit.data.labels import LabelMap
from rekit.metrics import auprc, confusion, evaluate, micro_f1, per_class_report


def klue_class_areas(probs: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """KLUE's klue_re_auprc loop, restated: one-hot targets, PR curve, auc per class."""
    onehot = np.eye(n)[labels]
    score = np.zeros(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # absent classes warn in sklearn
        for c in range(n):
            p, r, _ = precision_recall_curve(onehot[:, c], probs[:, c])
            score[c] = auc(r, p)
    return score


def klue_auprc_reference(probs: np.ndarray, labels: np.ndarray, n: int) -> float:
    """klue_re_auprc: the mean of the per-class areas, * 100."""
    return float(np.mean(klue_class_areas(probs, labels, n)) * 100.0)


def random_case(seed: int, n: int = 200, c: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)  # every class present
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y] * rng.random((n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs, probs.argmax(1)


# ---------------------------------------------------------------------------------------------
# micro-F1


def test_micro_f1_hand_computed():
    # ids: 0 = no_relation, 1 and 2 relations.
    y_true = np.array([0, 1, 1, 2, 0])
    y_pred = np.array([1, 1, 0, 2, 0])
    # Counting relation labels only:
    #   row0 gold 0 -> pred 1: FP (no_relation predicted as relation)
    #   row1 1 -> 1: TP;  row2 1 -> 0: FN (missed relation);  row3 2 -> 2: TP;  row4 0 -> 0: ignored
    # TP = 2, FP = 1, FN = 1 -> P = 2/3, R = 2/3, F1 = 2/3 -> 66.666...
    assert micro_f1(y_true, y_pred, 3, 0) == pytest.approx(200 / 3)
    # no_relation_id None: every label counts; single-label micro-F1 == accuracy = 3/5
    assert micro_f1(y_true, y_pred, 3, None) == pytest.approx(60.0)


def test_micro_f1_wrong_relation_is_both_fp_and_fn():
    # gold 1, pred 2: FP for label 2 and FN for label 1; plus one TP on row 1.
    # TP = 1, FP = 1, FN = 1 -> F1 = 0.5 -> 50
    assert micro_f1(np.array([1, 2]), np.array([2, 2]), 3, 0) == pytest.approx(50.0)


def test_micro_f1_no_relation_not_first():
    # no_relation at id 2: TP = row0 (0->0); FP = row2 (2->1); FN = row1 (1->2)
    # P = 1/2, R = 1/2 -> 50
    assert micro_f1(np.array([0, 1, 2]), np.array([0, 2, 1]), 3, 2) == pytest.approx(50.0)


def test_micro_f1_all_no_relation_is_zero_without_warning():
    y = np.zeros(10, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert micro_f1(y, y, 4, 0) == 0.0


def test_micro_f1_perfect():
    y = np.array([0, 1, 2, 3, 3, 0])
    assert micro_f1(y, y, 4, 0) == pytest.approx(100.0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("nr", [0, 3, None])
def test_micro_f1_matches_sklearn(seed, nr):
    y, _, pred = random_case(seed)
    labels = [i for i in range(6) if i != nr]
    expected = f1_score(y, pred, average="micro", labels=labels) * 100
    assert micro_f1(y, pred, 6, nr) == pytest.approx(expected)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=40))
def test_micro_f1_matches_sklearn_property(pairs):
    y = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    expected = f1_score(y, p, average="micro", labels=[1, 2, 3, 4], zero_division=0.0) * 100
    assert micro_f1(y, p, 5, 0) == pytest.approx(expected)


def test_micro_f1_rejects_bad_input():
    with pytest.raises(ValueError):
        micro_f1(np.array([0, 5]), np.array([0, 1]), 3, 0)  # id out of range
    with pytest.raises(ValueError):
        micro_f1(np.array([0, 1]), np.array([0]), 3, 0)  # length mismatch


# ---------------------------------------------------------------------------------------------
# AUPRC


def test_auprc_hand_computed():
    # Two classes, four rows. Class 1: targets [1,0,1,0], scores [.9,.8,.4,.1].
    # Thresholds high -> low: .9 TP (P=1, R=.5); .8 FP (P=.5, R=.5); .4 TP (P=2/3, R=1) -> full
    # recall, sklearn stops; it adds the end point (R=0, P=1).
    # Trapezoids over recall: [0, .5] at P=1 -> .5; the vertical step at R=.5 -> 0;
    # [.5, 1] from P=.5 to P=2/3 -> (.5 + 2/3) / 2 * .5 = 7/24.  Area = 12/24 + 7/24 = 19/24.
    # Class 0 (scores 1 - p) is the mirror image, also 19/24. Mean * 100 = 79.1666...
    p1 = np.array([0.9, 0.8, 0.4, 0.1])
    probs = np.stack([1 - p1, p1], axis=1)
    y = np.array([1, 0, 1, 0])
    assert auprc(y, probs, 2) == pytest.approx(100 * 19 / 24)


def test_auprc_perfect_ranking_is_100():
    y = np.array([0, 1, 2, 2, 1, 0])
    assert auprc(y, np.eye(3)[y], 3) == pytest.approx(100.0)


@pytest.mark.parametrize("seed", range(5))
def test_auprc_matches_klue_loop_when_all_classes_present(seed):
    y, probs, _ = random_case(seed)
    expected = klue_auprc_reference(probs, y, 6)
    assert auprc(y, probs, 6) == pytest.approx(expected)
    assert auprc(y, probs, 6, absent="klue") == pytest.approx(expected)


def test_auprc_absent_class():
    # Three labels, class 2 never occurs in y_true.
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1]])
    # Classes 0 and 1 are ranked perfectly -> area 1 each.
    # "skip": mean over present classes = (1 + 1) / 2 -> 100
    # "klue": absent class counts 0.5 (sklearn's recall := 1, precision 0, plus end point (0, 1)
    #         -> one trapezoid of area .5) -> (1 + 1 + .5) / 3 -> 83.33...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no sklearn warning leaks out
        assert auprc(y, probs, 3) == pytest.approx(100.0)
        assert auprc(y, probs, 3, absent="klue") == pytest.approx(250 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_auprc_klue_mode_reproduces_klue_loop_with_absent_classes(seed):
    y, probs, _ = random_case(seed, c=6)
    y = np.where(y >= 4, 0, y)  # classes 4 and 5 now absent
    areas = klue_class_areas(probs, y, 6)
    assert np.all(np.isfinite(areas)) and np.allclose(areas[4:], 0.5)  # sklearn >= 1.1 behaviour
    assert auprc(y, probs, 6, absent="klue") == pytest.approx(areas.mean() * 100)
    # "skip" = the same loop restricted to the four present classes
    assert auprc(y, probs, 6) == pytest.approx(areas[:4].mean() * 100)


def test_auprc_validates():
    with pytest.raises(ValueError):
        auprc(np.array([], dtype=int), np.zeros((0, 3)), 3)
    with pytest.raises(ValueError):
        auprc(np.array([0, 1]), np.zeros((2, 2)), 3)  # wrong width
    with pytest.raises(ValueError):
        auprc(np.array([0, 1]), np.array([[np.nan, 1.0], [0.5, 0.5]]), 2)
    with pytest.raises(ValueError):
        auprc(np.array([0, 1]), np.eye(2), 2, absent="zero")


# ---------------------------------------------------------------------------------------------
# confusion, per-class report, evaluate


def test_confusion_hand_and_sklearn():
    y_true = np.array([0, 1, 1, 2, 0])
    y_pred = np.array([1, 1, 0, 2, 0])
    cm = confusion(y_true, y_pred, 4)  # label 3 never occurs: still a row and column
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    y, _, pred = random_case(1)
    np.testing.assert_array_equal(confusion(y, pred, 6), confusion_matrix(y, pred, labels=range(6)))


LM = LabelMap(("no_relation", "per:a", "per:b"), "no_relation")


def test_per_class_report_hand_computed():
    y_true = ["no_relation", "per:a", "per:a", "per:b", "no_relation"]
    y_pred = ["per:a", "per:a", "no_relation", "per:b", "no_relation"]
    rows = per_class_report(y_true, y_pred, LM)
    assert [r["label"] for r in rows] == list(LM.labels)
    # per:a: predicted twice (rows 0, 1), correct once -> P = 1/2; gold twice, found once -> R = 1/2
    a = rows[1]
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert rows[2] == {"label": "per:b", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_per_class_report_matches_sklearn():
    y, _, pred = random_case(2, c=3)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0.0)
    rows = per_class_report(y, pred, LM)
    np.testing.assert_allclose([row["precision"] for row in rows], p)
    np.testing.assert_allclose([row["recall"] for row in rows], r)
    np.testing.assert_allclose([row["f1"] for row in rows], f)
    assert [row["support"] for row in rows] == s.tolist()


def test_evaluate_keys_types_and_values():
    y, probs, pred = random_case(3, c=3)
    out = evaluate(y, probs, LM)
    assert set(out) == {"micro_f1", "auprc", "accuracy", "macro_f1", "n"}
    assert all(type(v) is float for k, v in out.items() if k != "n") and type(out["n"]) is int
    assert out["n"] == len(y)
    assert out["accuracy"] == pytest.approx(np.mean(pred == y))  # a fraction, not x100
    assert 0 <= out["accuracy"] <= 1
    assert out["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro", labels=[1, 2]) * 100)
    assert out["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=[1, 2]) * 100)
    assert out["auprc"] == pytest.approx(klue_auprc_reference(probs, y, 3))
    # label strings give the same numbers as ids
    assert evaluate([LM.labels[i] for i in y], probs, LM) == out


def test_evaluate_edge_cases():
    # all no_relation, predicted perfectly: no relation to score -> micro/macro 0, accuracy 1
    y = np.zeros(5, dtype=int)
    out = evaluate(y, np.eye(3)[y], LM)
    assert out["micro_f1"] == 0.0 and out["macro_f1"] == 0.0 and out["accuracy"] == 1.0
    assert out["auprc"] == pytest.approx(100.0)  # only class 0 present; others skipped
    # perfect prediction
    y = np.array([0, 1, 2, 1])
    out = evaluate(y, np.eye(3)[y] * 0.9 + 0.05, LM)
    assert out["micro_f1"] == pytest.approx(100.0) and out["auprc"] == pytest.approx(100.0)
    assert out["macro_f1"] == pytest.approx(100.0) and out["accuracy"] == 1.0
    with pytest.raises(ValueError):
        evaluate(np.array([], dtype=int), np.zeros((0, 3)), LM)
