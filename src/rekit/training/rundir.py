"""The run directory on disk: creation, state, per-fold results, out-of-fold file."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.errors import ConfigError
from rekit.io import atomic_path, atomic_write_text

STATE, RESULT, FOLD_OOF = "state.json", "result.json", "oof.safetensors"


def create(output: str | None, overwrite: bool) -> Path:
    if not output:
        raise ConfigError("no run directory: pass --output RUN_DIR")
    run = Path(output)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--output {run} exists and is not a directory")
    if run.is_dir() and any(run.iterdir()):
        if not overwrite:
            raise ConfigError(f"run directory {run} is not empty; pass --overwrite to replace it")
        import shutil

        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    return run


def write_state(run: Path, status: str, **info) -> None:
    """running / partial / finished / failed / interrupted, with folds done and a reason."""
    state = {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    atomic_write_text(run / STATE, json.dumps(state, ensure_ascii=False) + "\n")


def read_state(run: Path) -> dict:
    try:
        return json.loads((run / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def save_fold(fold_dir: Path, k: int, valid_idx: np.ndarray, result, n_train: int) -> None:
    from safetensors.numpy import save_file

    with atomic_path(fold_dir / FOLD_OOF) as tmp:
        save_file({"index": np.asarray(valid_idx, dtype=np.int64),
                   "probs": np.asarray(result.best_probs, dtype=np.float32)}, str(tmp))
    row = {"fold": k, "n_train": n_train, "n_valid": int(len(valid_idx)), "best_epoch": result.best_epoch,
           "best_step": result.best_step, "best": result.best_metrics, "stopped": result.stopped}
    atomic_write_text(fold_dir / RESULT, json.dumps(row, indent=2) + "\n")


def load_fold(fold_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from safetensors.numpy import load_file

    arrays = load_file(str(fold_dir / FOLD_OOF))
    result = json.loads((fold_dir / RESULT).read_text(encoding="utf-8"))
    return arrays["index"], arrays["probs"], result


def folds_done(run: Path) -> list[int]:
    done = []
    for d in run.glob("fold-*"):
        if (d / RESULT).is_file() and (d / FOLD_OOF).is_file() and d.name[5:].isdigit():
            done.append(int(d.name[5:]))
    return sorted(done)


def fold_dirs(run: Path) -> list[Path]:
    return [run / f"fold-{k}" for k in folds_done(run)]


def probs_cell(p: np.ndarray) -> str:
    """The competition's probs column: a JSON list of class probabilities in label-map order."""
    return "[" + ", ".join(f"{x:.6g}" for x in p) + "]"


def write_oof(path: Path, records: list[Record], fold_of: np.ndarray, oof: np.ndarray, label_map: LabelMap) -> None:
    """Every training row: its fold (-1 = never held out: a rare class), gold, prediction, probs."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "fold", "label", "pred_label", "probs"])
    for r, k, p in zip(records, fold_of, oof):
        if k < 0:
            w.writerow([r.id, -1, r.label, "", ""])
        else:
            w.writerow([r.id, int(k), r.label, label_map.labels[int(np.argmax(p))], probs_cell(p)])
    atomic_write_text(path, buf.getvalue())
