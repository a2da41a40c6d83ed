"""Predictions on a file: the submission writer and evaluation against gold labels."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.errors import DataError
from rekit.io import atomic_write_text
from rekit.metrics import confusion, evaluate, per_class_report
from rekit.rundir import probs_cell

READ_REPORT_SUFFIX = ".read_report.json"  # submission.csv -> submission.csv.read_report.json


def read_report_path(output: str | Path) -> Path:
    """Where predict/evaluate keep the read report of their input: beside the output file."""
    output = Path(output)
    return output.with_name(output.name + READ_REPORT_SUFFIX)


def save_read_report(report, path: str | Path | None) -> None:
    """Keep a `ReadReport` at `path` (None: nowhere); a location that can't be written is a one-line error."""
    if path is None:
        return
    try:
        report.save(path)
    except OSError as e:
        raise DataError(f"cannot write the read report: {e.strerror or e}", path=str(path)) from None


def fallback_probs(label_map: LabelMap) -> np.ndarray:
    """What an unreadable input row gets: near-uniform probabilities whose top label is the
    no-relation label (the first label when there is none): "no information", not a guess."""
    c = len(label_map)
    probs = np.full(c, 1.0 / c, dtype=np.float64)
    top = label_map.no_relation_id or 0
    probs *= 1 - 1e-3
    probs[top] += 1e-3
    return probs.astype(np.float32)


def complete_probs(rows: Sequence[object], probs: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """One row of probabilities per input row: `probs` (one per readable `Record`, in order) in
    place, `fallback_probs` for every other row (an unreadable one)."""
    full = np.tile(fallback_probs(label_map), (len(rows), 1))
    readable = np.asarray([isinstance(r, Record) for r in rows], dtype=bool)
    if int(readable.sum()) != len(probs):
        raise ValueError(f"{len(probs)} predictions for {int(readable.sum())} readable rows")
    full[readable] = probs
    return full


def write_predictions(path: str | Path, records: Sequence[Record], probs: np.ndarray, label_map: LabelMap) -> None:
    """Competition CSV (`id,pred_label,probs`) or, for .jsonl/.json paths, one JSON object per line.
    `records` may hold any rows with an `id` (`read_for_prediction` gives `Unreadable` ones too)."""
    path = Path(path)
    preds = probs.argmax(axis=1)
    if path.suffix.lower() in (".jsonl", ".json"):
        lines = [json.dumps({"id": r.id, "pred_label": label_map.labels[k], "probs": [round(float(x), 6) for x in p]},
                            ensure_ascii=False) for r, k, p in zip(records, preds, probs)]
        atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "pred_label", "probs"])
    for r, k, p in zip(records, preds, probs):
        w.writerow([r.id, label_map.labels[k], probs_cell(p)])
    atomic_write_text(path, buf.getvalue())


def split_known(records: Sequence[Record], label_map: LabelMap, unknown: str = "error", path: str | None = None):
    """Labeled records whose label the model knows. Unknown labels: an error, or skipped and counted."""
    labeled = [r for r in records if r.label is not None]
    bad = [r for r in labeled if r.label not in label_map.label2id]
    if bad and unknown == "error":
        names = sorted({str(r.label) for r in bad})
        raise DataError(f"{len(bad)} rows have labels the model does not know ({', '.join(names[:5])}; first id "
                        f"{bad[0].id}); pass --unknown-labels skip to evaluate the other rows", path=path)
    known = [r for r in labeled if r.label in label_map.label2id]
    return known, len(bad), len(records) - len(labeled)


def score(records: Sequence[Record], probs: np.ndarray, label_map: LabelMap) -> dict:
    y = np.asarray([label_map.label2id[str(r.label)] for r in records])  # labeled rows only (split_known)
    report = evaluate(y, probs, label_map)
    report["per_class"] = per_class_report(y, probs.argmax(1), label_map)
    report["confusion"] = confusion(y, probs.argmax(1), len(label_map)).tolist()
    return report
