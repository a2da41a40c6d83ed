"""KLUE-RE metrics: micro-F1 without no_relation, AUPRC over all classes, and friends.

Definitions follow the KLUE baseline's `klue_re_micro_f1` / `klue_re_auprc` (Park et al.,
2021, "KLUE"; the same code scores the community competition leaderboard):

* micro-F1 = sklearn `f1_score(average="micro", labels=<every id but no_relation>) * 100`.
  Restricting `labels` (rather than dropping rows) is what makes a gold no_relation predicted
  as a relation count as a false positive, and a gold relation predicted as no_relation count
  as a false negative.
* AUPRC = mean over classes of `auc(recall, precision)` of the one-vs-rest
  `precision_recall_curve` of that class's probability column, * 100 (no_relation included).

Scales: micro_f1, macro_f1 and auprc are percentages (0..100, as KLUE reports them);
accuracy is a fraction (0..1, as the leaderboard shows it); per-class numbers are fractions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.metrics import auc, f1_score, precision_recall_curve

from rekit.data.labels import LabelMap

# The area KLUE's loop gets for a class with no positives under sklearn >= 1.1: recall is set
# to 1 at every threshold and precision is 0, then the curve's fixed end point (recall 0,
# precision 1) adds one trapezoid of area 0.5. (Older sklearn produced nan instead.)
_KLUE_ABSENT_AREA = 0.5


def _probs(probs, n: int, n_labels: int, if_empty: str) -> np.ndarray:
    """probs as a float64 (n, n_labels) array; ValueError for another shape or no rows."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, n_labels):
        raise ValueError(f"probs must have shape ({n}, {n_labels}), got {probs.shape}")
    if n == 0:
        raise ValueError(if_empty)
    return probs


def _ids(y: np.ndarray | Sequence, n_labels: int, name: str) -> np.ndarray:
    """1-D int array of label ids, checked to lie in [0, n_labels)."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer label ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_labels):
        raise ValueError(f"{name} has ids outside [0, {n_labels})")
    return arr


def _relation_ids(n_labels: int, no_relation_id: int | None) -> list[int]:
    return [i for i in range(n_labels) if i != no_relation_id]


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int, no_relation_id: int | None,
             sample_weight: np.ndarray | None = None) -> float:
    """KLUE-RE micro-F1 (x100) over every label except no_relation (all labels when None); each row
    counts `sample_weight` times if given.

    When neither gold nor prediction holds any relation, F1 is undefined; like KLUE's code
    (sklearn's default) this returns 0.0, without the warning.
    """
    y_true, y_pred = _ids(y_true, n_labels, "y_true"), _ids(y_pred, n_labels, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items, y_pred {len(y_pred)}")
    labels = _relation_ids(n_labels, no_relation_id)
    if not labels or len(y_true) == 0:
        return 0.0
    return float(f1_score(y_true, y_pred, average="micro", labels=labels, zero_division=0.0,
                          sample_weight=sample_weight) * 100.0)


def auprc(
    y_true: np.ndarray,
    probs: np.ndarray,
    n_labels: int,
    *,
    absent: Literal["skip", "klue"] = "skip",
) -> float:
    """KLUE-RE AUPRC (x100): mean over classes of the one-vs-rest precision-recall AUC.

    `probs` is (N, n_labels), columns in label-id order (softmax probabilities, not logits,
    though only their order within a column matters).

    Classes absent from `y_true` have no precision-recall curve. KLUE's loop still scores them:
    with sklearn >= 1.1 each gets exactly 0.5 (see `_KLUE_ABSENT_AREA`; a warning is printed),
    with older sklearn nan. Both are artefacts, and a label map larger than the data (e.g. the
    30 KLUE labels on a 8-relation corpus) would drag the mean towards 50. So:

    * `absent="skip"` (default): average over the classes present in `y_true` only. Identical
      to KLUE whenever every class occurs (true for the official dev set).
    * `absent="klue"`: average over all `n_labels`, counting each absent class as 0.5 — the
      number KLUE's code prints under current sklearn, computed here without the warning.

    Always finite; raises ValueError for empty input.
    """
    y_true = _ids(y_true, n_labels, "y_true")
    probs = _probs(probs, len(y_true), n_labels, "AUPRC of an empty set is undefined")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain nan or inf")
    if absent not in ("skip", "klue"):
        raise ValueError(f"absent must be 'skip' or 'klue', got {absent!r}")

    present = np.bincount(y_true, minlength=n_labels) > 0
    areas: list[float] = []
    for c in range(n_labels):
        if not present[c]:
            if absent == "klue":
                areas.append(_KLUE_ABSENT_AREA)
            continue
        precision, recall, _ = precision_recall_curve((y_true == c).astype(np.int64), probs[:, c])
        areas.append(float(auc(recall, precision)))
    return float(np.mean(areas) * 100.0)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """(n_labels, n_labels) int64 counts; rows are gold ids, columns predicted ids."""
    y_true, y_pred = _ids(y_true, n_labels, "y_true"), _ids(y_pred, n_labels, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items, y_pred {len(y_pred)}")
    flat = np.bincount(y_true * n_labels + y_pred, minlength=n_labels * n_labels)
    return flat.reshape(n_labels, n_labels).astype(np.int64)


def _encode(y: np.ndarray | Sequence, label_map: LabelMap, name: str) -> np.ndarray:
    """Accept label ids or label strings; return ids."""
    arr = np.asarray(y)
    if arr.size and arr.dtype.kind in "UO":
        return np.array([label_map.encode(str(v)) for v in arr], dtype=np.int64)
    return _ids(arr, len(label_map), name)


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray, label_map: LabelMap) -> list[dict]:
    """One dict per label, in label-map order: label, precision, recall, f1 (fractions), support.

    Undefined ratios (nothing predicted / nothing gold) are 0.0. `y_true`/`y_pred` may be ids
    or label strings.
    """
    n = len(label_map)
    cm = confusion(_encode(y_true, label_map, "y_true"), _encode(y_pred, label_map, "y_pred"), n)
    tp = np.diag(cm).astype(np.float64)
    gold, pred = cm.sum(axis=1), cm.sum(axis=0)
    rows = []
    for i, label in enumerate(label_map.labels):
        p = tp[i] / pred[i] if pred[i] else 0.0
        r = tp[i] / gold[i] if gold[i] else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        rows.append({"label": label, "precision": float(p), "recall": float(r), "f1": float(f),
                     "support": int(gold[i])})
    return rows


def evaluate(y_true: np.ndarray, probs: np.ndarray, label_map: LabelMap) -> dict:
    """All headline numbers for (gold ids or labels, probabilities) as plain Python values.

    Returns {"micro_f1" (x100), "auprc" (x100, absent classes skipped), "accuracy" (0..1),
    "macro_f1" (x100), "n"}. Predictions are the argmax of `probs`. macro_f1 averages the F1 of
    the relation labels (no_relation excluded, like micro_f1) that occur in gold or predictions,
    so labels the data never touches don't count as zeros.
    """
    n_labels = len(label_map)
    y = _encode(y_true, label_map, "y_true")
    probs = _probs(probs, len(y), n_labels, "cannot evaluate an empty set")
    pred = probs.argmax(axis=1)
    nr = label_map.no_relation_id
    touched = sorted((set(y.tolist()) | set(pred.tolist())) - {nr})
    macro = (
        float(f1_score(y, pred, average="macro", labels=touched, zero_division=0.0) * 100.0) if touched else 0.0
    )
    return {
        "micro_f1": micro_f1(y, pred, n_labels, nr),
        "auprc": auprc(y, probs, n_labels),
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": macro,
        "n": int(len(y)),
    }
