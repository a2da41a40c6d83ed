"""Distillation (`rekit distill`): one student model trained on every training row from a fold
ensemble's probabilities, so serving costs one model instead of K.

The student's targets are the teacher run's out-of-fold probabilities (each row predicted by the
fold models that did not train on it: honest targets) and, optionally, the whole ensemble's
probabilities on unlabeled sentences (rekit.api.distilling computes those). The loss is
modeling/losses.py's `DistillLoss`; the soft targets travel in the batch like the labels
(Features.soft_targets), so CUDA-graph steps capture them as inputs.

The output is a normal run directory with one fold, `fold-0/`, trained on every row: nothing is
held out, so the saved model is the last epoch's, its oof.csv has no out-of-fold probabilities
(every row fold -1), and summary.json no cross-validation score. The scores logged per epoch are on
a sample of the training rows (`MONITOR_ROWS`), for watching the fit only. `distill.json` names
the teacher and the settings; `rekit train --resume` refuses the directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rekit import lock, rundir
from rekit.config import DistillSettings, RunConfig
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.tokenize import Features, REEncoder
from rekit.errors import DataError, RekitError
from rekit.io import atomic_write_text
from rekit.modeling.backbone import build_model, check_backbone, check_max_length, count_parameters
from rekit.modeling.losses import DistillLoss
from rekit.runtime import resolve_device, seed_everything
from rekit.training import checkpoint
from rekit.training.augmentation import concat
from rekit.training.cv import finalize, gold_labels, run_tokenizer, save_read_report
from rekit.training.loop import FitResult, FoldTrainer, MetricsLog, fit

MONITOR_ROWS = 2000  # training rows scored at each evaluation (the student has no held-out rows)


@dataclass
class Teacher:
    """What the student learns from: the teacher's label map, its probabilities for every training
    record (row i: record i) and for the unlabeled sentences, and facts for distill.json."""

    label_map: LabelMap
    soft: np.ndarray  # (N, C) float32
    extra: list[Record] = field(default_factory=list)  # unlabeled sentences (labels dropped)
    extra_soft: np.ndarray | None = None  # (M, C) float32: the ensemble's probabilities on `extra`
    info: dict = field(default_factory=dict)


def align_soft_targets(records: Sequence[Record], ids: Sequence[str], y: np.ndarray, probs: np.ndarray,
                       label_map: LabelMap, where: str = "oof.csv") -> tuple[np.ndarray, int]:
    """(targets (N, C) float32 with row i for records[i], rows without out-of-fold probabilities).

    The rows of an oof.csv (`ids`, gold label ids `y`, `probs` with NaN rows for rows never held out)
    are matched to the records by position when the ids agree in order, else by id; every gold label
    must agree. A row never held out (a class too rare to split) gets its gold label, one-hot."""
    rec_ids = [r.id for r in records]
    if rec_ids == list(ids):
        order = np.arange(len(rec_ids))
    else:
        if len(set(ids)) != len(ids):
            raise DataError(f"{where}: ids repeat and the rows are not in the training file's order; cannot tell "
                            "which probabilities belong to which row")
        pos = {id_: k for k, id_ in enumerate(ids)}
        missing = [i for i in rec_ids if i not in pos]
        if missing:
            raise DataError(f"training row {missing[0]!r} ({len(missing)} in all) is not in {where}; is this the "
                            "training file the teacher run was trained on?")
        order = np.asarray([pos[i] for i in rec_ids], dtype=np.int64)
    gold = np.asarray([label_map.label2id[label] for label in gold_labels(records)], dtype=np.int64)
    wrong = np.flatnonzero(np.asarray(y)[order] != gold)
    if len(wrong):
        raise DataError(f"training row {rec_ids[wrong[0]]!r}: its label differs from the one in {where} "
                        f"({len(wrong)} rows differ); is this the training file the teacher run was trained on?")
    soft = np.asarray(probs, dtype=np.float32)[order]
    held_out = np.isfinite(soft).all(axis=1)
    soft[~held_out] = np.eye(len(label_map), dtype=np.float32)[gold[~held_out]]
    return soft, int((~held_out).sum())


class StudentTrainer(FoldTrainer):
    """A fold trainer without held-out rows: every evaluation counts as the best, so the weights
    saved are the latest (the last epoch's when training ends), and patience never stops it."""

    def track_best(self, score: float, epoch: float, row: dict, probs: np.ndarray) -> bool:
        result = self.result
        result.best_score, result.best_epoch, result.best_step = score, epoch, self.progress.step
        result.best_metrics, result.best_probs = row, probs
        return True


def student_features(encoder: REEncoder, records: list[Record], teacher: Teacher) -> Features:
    """The labeled rows, then the unlabeled ones, each with its target probabilities."""
    feats = encoder.encode(records, teacher.label_map)
    feats.soft_targets = teacher.soft
    if teacher.extra:
        extra = encoder.encode(teacher.extra, teacher.label_map)  # labels are IGNORE_LABEL: soft term only
        extra.soft_targets = teacher.extra_soft
        feats = concat(feats, extra)
    return feats


def monitor_rows(n: int, seed: int) -> np.ndarray:
    """A fixed sample of at most MONITOR_ROWS labeled rows, in order, scored at each evaluation."""
    if n <= MONITOR_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MONITOR_ROWS, replace=False))


def distill(cfg: RunConfig, records: list[Record], teacher: Teacher, settings: DistillSettings,
            echo=print, read_report=None) -> dict:
    """Train the student described by `cfg` (one fold, cfg.train.output) from `teacher`; returns the
    run's summary. The run directory is locked, created (replacing one with overwrite) only after
    the model is checked, and its state says how it ended, as `rekit train`'s do. `read_report`:
    the training file's (kept as RUN/read_report.json)."""
    if not cfg.train.output:
        raise RekitError("no output directory: pass --output RUN_DIR")
    with lock.locked(cfg.train.output):
        run = _open_run(cfg, records, teacher, settings, read_report)
        try:
            return _train_student(cfg, run, records, teacher, settings, echo)
        except KeyboardInterrupt as e:
            rundir.write_state(run, "interrupted", reason=str(e) or "stopped by the user (Ctrl-C)")
            raise
        except Exception as e:
            rundir.write_state(run, "failed", reason=str(e) if isinstance(e, RekitError) else f"{type(e).__name__}: {e}")
            raise


def _open_run(cfg: RunConfig, records: list[Record], teacher: Teacher, settings: DistillSettings,
              read_report) -> Path:
    """The new run directory with its config.yaml, distill.json and state (after the model's check)."""
    rundir.check_new(cfg.train.output, cfg.train.overwrite, resumable=False)
    check_backbone(cfg.model)
    run = rundir.create(cfg.train.output, cfg.train.overwrite)
    if read_report is not None:
        save_read_report(read_report, run)
    atomic_write_text(run / rundir.CONFIG, cfg.to_yaml())
    info = {**teacher.info, "settings": asdict(settings), "n_labeled": len(records), "n_unlabeled": len(teacher.extra)}
    atomic_write_text(run / rundir.DISTILL, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    digest = teacher.info.get("data_sha256")
    rundir.write_state(run, "running", **({"data_sha256": digest} if digest else {}))
    return run


def build_student(cfg: RunConfig, tokenizer, records: list[Record], teacher: Teacher, settings: DistillSettings):
    """A new model for the student, with the distillation loss. Seeded as a fold's model is."""
    t, m = cfg.train, cfg.model
    seed_everything(t.seed, t.deterministic)  # before init: the weights draw from this RNG
    model = build_model(m, tokenizer, teacher.label_map, t.label_smoothing, train=t)  # --augment mask, if asked
    model.loss_fn = DistillLoss(settings.alpha, settings.temperature, t.label_smoothing)
    model.spec.entity_types = sorted({e.type for r in records for e in (r.subject, r.object)})
    check_max_length(m, model)
    return model


def _train_student(cfg: RunConfig, run: Path, records: list[Record], teacher: Teacher,
                   settings: DistillSettings, echo) -> dict:
    t, m, label_map = cfg.train, cfg.model, teacher.label_map
    start = time.time()
    label_map.save(run / "labels.json")
    device = resolve_device(t.device)
    seed_everything(t.seed)
    tokenizer = run_tokenizer(cfg, run, [*records, *teacher.extra], resume=False)
    encoder = REEncoder(tokenizer, m.marker, m.max_length, m.first_segment)
    feats = student_features(encoder, records, teacher)
    echo(f"encoded {len(feats):,} examples ({len(records):,} labeled, {len(teacher.extra):,} unlabeled; {m.marker}, "
         f"max_length {m.max_length}): {encoder.stats.summary()}")
    model = build_student(cfg, tokenizer, records, teacher, settings)
    params = count_parameters(model)
    monitor = monitor_rows(len(records), t.seed)
    echo(f"student: {len(feats):,} rows, {params / 1e6:.1f}M parameters, {device}; alpha {settings.alpha}, "
         f"temperature {settings.temperature}; scores below are on {len(monitor):,} training rows (nothing is held out)")
    valid = feats.subset(monitor.tolist())
    valid.soft_targets = None
    result = fit(model, tokenizer, label_map, feats, valid, t, fold_dir=run / "fold-0", seed=t.seed, device=device,
                 log=MetricsLog(run / rundir.METRICS, fold=0), desc="student", echo=echo, trainer=StudentTrainer)
    _save_student(run, result, len(feats), params, label_map, len(monitor))
    extra = {"parameters": params, "n_records": len(records), "n_unlabeled": len(teacher.extra),
             "device": str(device), "train_seconds": round(time.time() - start, 1), "distilled_from": teacher.info}
    summary = finalize(run, records, label_map, extra, echo)
    echo(f"student trained on {len(feats):,} rows in {extra['train_seconds']:.0f}s")
    return summary


def _save_student(run: Path, result: FitResult, n_train: int, params: int, label_map: LabelMap,
                  n_monitor: int) -> None:
    """fold-0's result.json and an out-of-fold file with no rows: the student held nothing out."""
    result.notes.append(f"no held-out rows: the scores are on {n_monitor:,} training rows the model was trained on")
    result.best_probs = np.zeros((0, len(label_map)), dtype=np.float32)
    rundir.save_fold(run / "fold-0", 0, np.zeros(0, dtype=np.int64), result, n_train=n_train, n_parameters=params)
    checkpoint.clear_state(run / "fold-0")
