"""The run directory on disk, read and written here only: creation, state, per-fold results, the
out-of-fold file, which fold models count, and the file names of a saved model. Torch-free.

Every file is written atomically (rekit.io), except metrics.jsonl, which is appended one line at
a time; a resumed run drops its torn last line and the rows of the replayed steps (`prune_metrics`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.errors import ConfigError, RekitError
from rekit.io import atomic_path, atomic_write_text

STATE, RESULT, FOLD_OOF = "state.json", "result.json", "oof.safetensors"
CONFIG, METRICS, OOF_CSV = "config.yaml", "metrics.jsonl", "oof.csv"
DISTILL = "distill.json"  # a run made by `rekit distill`: its teacher and the distillation settings
# A saved model directory (a fold-k/ of a run, or a model directory on its own): REModel.save writes
# these; modeling/integrity.py checks them without torch.
SPEC_FILE, WEIGHTS_FILE, HEAD_FILE = "rekit.json", "model.safetensors", "head.safetensors"
LABELS_FILE, MODEL_CONFIG_FILE = "labels.json", "config.json"
# safetensors files of a fold directory that are not model weights.
NOT_WEIGHTS = (FOLD_OOF,)
# Facts about the run itself, carried over from one state.json to the next.
_KEPT = ("started", "data_sha256", "resumed")


def check_new(output: str | None, overwrite: bool, what: str = "run directory", resumable: bool = True) -> Path:
    """Where a new run (or another output directory: `what`) goes, if it may go there; nothing is
    written or removed yet."""
    if not output:
        raise ConfigError("no run directory: pass --output RUN_DIR")
    run = Path(output)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--output {run} exists and is not a directory")
    if run.is_dir() and any(run.iterdir()) and not overwrite:
        hint = f" (or --resume {run} to continue it)" if resumable else ""
        raise ConfigError(f"{what} {run} is not empty; pass --overwrite to replace it{hint}")
    return run


def create(output: str | None, overwrite: bool) -> Path:
    """A new, empty run directory (with overwrite, an earlier one there is removed)."""
    run = check_new(output, overwrite)
    if run.is_dir() and any(run.iterdir()):
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    return run


def reopen(output: str | None) -> Path:
    """An existing run directory to resume."""
    if not output:
        raise ConfigError("no run directory to resume: pass --resume RUN_DIR")
    run = Path(output)
    if not (run / CONFIG).is_file():
        raise ConfigError(f"{run} is not a rekit run directory (no {CONFIG}); nothing to resume")
    return run


def write_state(run: Path, status: str, **info) -> None:
    """running / partial / finished / failed / interrupted / pruned, with folds done, the current
    fold and a reason. `started`, `data_sha256` and `resumed` carry over from the previous state."""
    old = read_state(run)
    kept = {k: old[k] for k in _KEPT if k in old and k not in info}
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    state = {"status": status, "updated": now, "started": now, **kept, **info}
    atomic_write_text(run / STATE, json.dumps(state, ensure_ascii=False) + "\n")


def read_state(run: Path) -> dict:
    try:
        return json.loads((run / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def save_fold(fold_dir: Path, k: int, valid_idx: np.ndarray, result, n_train: int,
              n_parameters: int | None = None) -> None:
    """The fold's out-of-fold probabilities, then result.json: with both present the fold is done."""
    from safetensors.numpy import save_file

    with atomic_path(fold_dir / FOLD_OOF) as tmp:
        save_file({"index": np.asarray(valid_idx, dtype=np.int64),
                   "probs": np.asarray(result.best_probs, dtype=np.float32)}, str(tmp))
    row = {"fold": k, "n_train": n_train, "n_valid": int(len(valid_idx)), "best_epoch": result.best_epoch,
           "best_step": result.best_step, "best": result.best_metrics, "stopped": result.stopped,
           "nonfinite": result.nonfinite, "notes": result.notes, "parameters": n_parameters}
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


# A fold model is complete when REModel.save wrote its last file (rekit.json) after these.
MODEL_FILES = (MODEL_CONFIG_FILE, LABELS_FILE, SPEC_FILE)


def model_complete(fold_dir: Path) -> bool:
    """The fold directory holds a whole saved model: config, labels, spec and safetensors weights."""
    return bool(weight_files(fold_dir)) and all((fold_dir / name).is_file() for name in MODEL_FILES)


def weight_files(d: Path) -> list[Path]:
    """The safetensors weight files of a model directory (training state and OOF files excluded)."""
    return sorted(p for p in Path(d).glob("*.safetensors")
                  if p.name not in NOT_WEIGHTS and not p.name.startswith(("train_state", ".")))


def finished_folds(run: Path) -> list[int]:
    """Folds that count for predictions: done (result.json + out-of-fold file) and a complete model."""
    return [k for k in folds_done(run) if model_complete(run / f"fold-{k}")]


def read_config(run: Path) -> dict:
    """The run's config.yaml as plain data; one line naming the file if it is unreadable."""
    path = run / CONFIG
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RekitError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise RekitError(f"{path}: not UTF-8 text (byte {e.start}); the file is damaged") from None
    except yaml.YAMLError as e:
        raise RekitError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RekitError(f"{path}: not a rekit run config (expected data/model/train sections)")
    return data


def expected_folds(run: Path) -> int | None:
    """How many folds the run trains (its config's train.folds), or None without a config.yaml."""
    if not (run / CONFIG).is_file():
        return None
    folds = read_config(run).get("train", {}).get("folds", 5)
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 1:
        raise RekitError(f"{run / CONFIG}: train.folds must be a positive integer, found {folds!r}")
    return folds


def file_digest(path: str | Path) -> str:
    """sha256 of a file, so a resumed run can tell that its training data changed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prune_metrics(run: Path, keep_until: dict[int, int | None]) -> int:
    """Before a resume: drop metrics.jsonl rows the resumed folds will write again.

    `keep_until` maps each fold that will train to the step its saved state reached (None: it
    restarts from scratch); its later rows go. Rows of other folds stay; a torn last line (a
    kill mid-write) goes. Returns the number of lines dropped.
    """
    path = run / METRICS
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            fold, step = int(row["fold"]), int(row["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if fold in keep_until and ((limit := keep_until[fold]) is None or step > limit):
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return dropped


def remove_temp_files(run: Path) -> None:
    """Leftovers of writes a kill interrupted (rekit.io's `.NAME.*.tmp` files, model.save's temp dirs)."""
    for d in (run, *run.glob("fold-*")):
        for p in d.glob(".*.tmp"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


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


# -- reading a finished run: the fold models that count, the out-of-fold predictions ----------
def model_dirs(run_dir: str | Path, allow_partial: bool = False, echo=None) -> list[Path]:
    """The fold model directories of a run that count: finished folds only (result.json and a
    complete model). A run with unfinished folds is refused unless `allow_partial`; then `echo`
    (if given) is told which folds are used. A single model directory is returned as it is."""
    run = Path(run_dir)
    if (run / SPEC_FILE).is_file() and weight_files(run):  # a single model directory works too
        return [run]
    started = sorted(int(d.name[5:]) for d in run.glob("fold-*") if d.name[5:].isdigit())
    if not (run / CONFIG).is_file() and not (run / STATE).is_file():
        # Not made by `rekit train` (fold model directories put together by hand): no notion of
        # finished folds; every complete model counts.
        done = [k for k in started if model_complete(run / f"fold-{k}")]
        expected = len(done)
    else:
        done, expected = finished_folds(run), expected_folds(run) or 0
        expected = max([expected, *(k + 1 for k in started)])
    if not done:
        raise RekitError(f"{run} holds no trained models (no finished fold-*/ with result.json and {WEIGHTS_FILE}); "
                         "is it a finished rekit run?")
    missing = [k for k in range(expected) if k not in done]
    if missing and not allow_partial:
        status = read_state(run).get("status", "unknown")
        raise RekitError(f"{run} is unfinished (status {status}): {_folds(missing)} not finished, only "
                         f"{_folds(done)}; finish it with `rekit train --resume {run}`, or pass --allow-partial "
                         "to predict with the finished folds only")
    if missing and echo is not None:
        echo(f"--allow-partial: {run}: using {len(done)} of {expected} folds ({_folds(done)}); "
             f"{_folds(missing)} not finished")
    return [run / f"fold-{k}" for k in done]


def _folds(ks: Sequence[int]) -> str:
    """Fold directory names, as on disk."""
    return ", ".join(f"fold-{k}" for k in ks)


def run_root(path: str | Path) -> Path:
    """The run directory of a run or of one of its fold models (where oof.csv lives)."""
    p = Path(path)
    for d in (p, p.parent):
        if (d / OOF_CSV).is_file():
            return d
    raise RekitError(f"{p}: no oof.csv here or in its parent; out-of-fold predictions come from a finished `rekit train` run")


def oof_rows(path: Path) -> list[tuple[str, int, str, list[float] | None]]:
    """Every row of an oof.csv (see `write_oof`): (id, fold, gold label, probs); probs is None for
    a row never held out (fold -1)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append((row["id"], int(row["fold"]), row["label"], json.loads(row["probs"]) if row["probs"] else None))
            except (KeyError, TypeError, ValueError) as e:
                raise RekitError(f"{path}: line {n}: not an out-of-fold row written by rekit ({e})") from None
    return rows


def read_oof(run_dir: str | Path, label_map: LabelMap) -> tuple[list[str], np.ndarray, np.ndarray]:
    """-> (ids, label ids (N,), probs (N, C)) of a run's oof.csv; rows never held out (fold -1) have NaN probs."""
    path = run_root(run_dir) / OOF_CSV
    ids, ys, probs = [], [], []
    for id_, _, label, p in oof_rows(path):
        if label not in label_map.label2id:
            raise RekitError(f"{path}: label {label!r} is not in the model's label map")
        ids.append(id_)
        ys.append(label_map.label2id[label])
        probs.append(p if p is not None else [float("nan")] * len(label_map))
    return ids, np.asarray(ys, dtype=np.int64), np.asarray(probs, dtype=np.float64).reshape(len(ids), len(label_map))
