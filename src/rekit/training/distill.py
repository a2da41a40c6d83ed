"""Distillation (`rekit distill`): one student model trained on every training row from a fold
ensemble's probabilities, so serving costs one model instead of K; or, with `--folds K`, K
students on K folds (self-training, a "noisy student" ensemble).

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

With `--folds K` (K >= 2) the output is a K-fold run like `rekit train`'s, trained by the same fold
loop (cv.FoldRunner, so --concurrent-folds works as there): `StudentFolds` changes only each fold's
model (the distillation loss) and rows. Student k learns the labeled rows outside fold k (gold label
and out-of-fold targets) and every unlabeled sentence (the ensemble's probabilities), and keeps its
best checkpoint on fold k's labeled rows, scored on their gold labels alone. Its CV score is a
little optimistic: the teacher's targets came from models that had seen fold k's rows.
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
from rekit.data.constraints import describe_types
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.tokenize import Features, REEncoder
from rekit.errors import DataError, RekitError
from rekit.io import atomic_write_text
from rekit.modeling.backbone import build_model, check_backbone, check_max_length, count_parameters
from rekit.modeling.losses import DistillLoss
from rekit.runtime import resolve_device, seed_everything
from rekit.training import checkpoint, distributed
from rekit.training.augmentation import concat
from rekit.training.cv import FoldRunner, conclude, finalize, gold_labels, run_tokenizer, save_read_report, split_folds
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


class StudentFolds(FoldRunner):
    """`rekit train`'s fold loop for K students: fold k's model learns with the distillation loss
    from the labeled rows outside fold k and every unlabeled row, and is validated on fold k's
    labeled rows by their gold labels only. `feats`: the labeled rows' (with soft targets)."""

    def __init__(self, *args, unlabeled: Features | None, settings: DistillSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.unlabeled, self.settings = unlabeled, settings

    def new_model(self):
        model = super().new_model()
        model.loss_fn = DistillLoss(self.settings.alpha, self.settings.temperature, self.cfg.train.label_smoothing)
        return model

    def fold_features(self, k: int) -> tuple[Features, Features]:
        tr, va = self.folds.splits[k]
        train = self.feats.subset(tr)
        if self.unlabeled is not None:
            train = concat(train, self.unlabeled)
        valid = self.feats.subset(va)
        valid.soft_targets = None  # selection by the gold labels alone
        return train, valid

    def n_train(self, k: int) -> int:
        return super().n_train(k) + (len(self.unlabeled) if self.unlabeled is not None else 0)


def student_features(encoder: REEncoder, records: list[Record], teacher: Teacher) -> tuple[Features, Features | None]:
    """The labeled rows' features and the unlabeled ones' (None without), each with its target
    probabilities."""
    feats = encoder.encode(records, teacher.label_map)
    feats.soft_targets = teacher.soft
    if not teacher.extra:
        return feats, None
    extra = encoder.encode(teacher.extra, teacher.label_map)  # labels are IGNORE_LABEL: soft term only
    extra.soft_targets = teacher.extra_soft
    return feats, extra


def monitor_rows(n: int, seed: int) -> np.ndarray:
    """A fixed sample of at most MONITOR_ROWS labeled rows, in order, scored at each evaluation."""
    if n <= MONITOR_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MONITOR_ROWS, replace=False))


def distill(cfg: RunConfig, records: list[Record], teacher: Teacher, settings: DistillSettings,
            echo=print, read_report=None) -> dict:
    """Train the student described by `cfg` (one fold, cfg.train.output; or settings.folds students
    on as many folds) from `teacher`; returns the run's summary. The run directory is locked,
    created (replacing one with overwrite) only after the model is checked, and its state says how
    it ended, as `rekit train`'s do. `read_report`: the training file's (kept as RUN/read_report.json)."""
    if not cfg.train.output:
        raise RekitError("no output directory: pass --output RUN_DIR")
    with lock.locked(cfg.train.output):
        run = _open_run(cfg, records, teacher, settings, read_report)
        train = _train_student if settings.folds == 1 else _train_students
        try:
            return train(cfg, run, records, teacher, settings, echo)
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
    describe_types(model.spec, records, m.type_constraints)
    check_max_length(m, model)
    return model


def _encode(cfg: RunConfig, run: Path, records: list[Record], teacher: Teacher, echo):
    """(tokenizer, encoder, labeled features, unlabeled features or None) of the run (tokenizer seeded)."""
    m = cfg.model
    teacher.label_map.save(run / "labels.json")
    seed_everything(cfg.train.seed)
    tokenizer = run_tokenizer(cfg, run, [*records, *teacher.extra], resume=False)
    encoder = REEncoder(tokenizer, m.marker, m.max_length, m.first_segment)
    labeled, unlabeled = student_features(encoder, records, teacher)
    echo(f"encoded {len(records) + len(teacher.extra):,} examples ({len(records):,} labeled, {len(teacher.extra):,} "
         f"unlabeled; {m.marker}, max_length {m.max_length}): {encoder.stats.summary()}")
    return tokenizer, encoder, labeled, unlabeled


def _train_student(cfg: RunConfig, run: Path, records: list[Record], teacher: Teacher,
                   settings: DistillSettings, echo) -> dict:
    t, label_map = cfg.train, teacher.label_map
    start = time.time()
    device = resolve_device(t.device)
    tokenizer, _, labeled, unlabeled = _encode(cfg, run, records, teacher, echo)
    feats = labeled if unlabeled is None else concat(labeled, unlabeled)
    model = build_student(cfg, tokenizer, records, teacher, settings)
    params = count_parameters(model)
    monitor = monitor_rows(len(records), t.seed)
    echo(f"student: {len(feats):,} rows, {params / 1e6:.1f}M parameters, {device}; alpha {settings.alpha}, "
         f"temperature {settings.temperature}; scores below are on {len(monitor):,} training rows (nothing is held out)")
    valid = labeled.subset(monitor.tolist())
    valid.soft_targets = None
    result = fit(model, tokenizer, label_map, feats, valid, t, fold_dir=run / "fold-0", seed=t.seed, device=device,
                 log=MetricsLog(run / rundir.METRICS, fold=0), desc="student", echo=echo, trainer=StudentTrainer)
    _save_student(run, result, len(feats), params, label_map, len(monitor))
    extra = {"parameters": params, "n_records": len(records), "n_unlabeled": len(teacher.extra),
             "device": str(device), "train_seconds": round(time.time() - start, 1), "distilled_from": teacher.info}
    summary = finalize(run, records, label_map, extra, echo)
    echo(f"student trained on {len(feats):,} rows in {extra['train_seconds']:.0f}s")
    return summary


def _train_students(cfg: RunConfig, run: Path, records: list[Record], teacher: Teacher,
                    settings: DistillSettings, echo) -> dict:
    """settings.folds students on as many folds, as `rekit train` trains its folds (StudentFolds)."""
    t, label_map = cfg.train, teacher.label_map
    start = time.time()
    device = resolve_device(t.device)
    tokenizer, encoder, labeled, unlabeled = _encode(cfg, run, records, teacher, echo)
    folds = split_folds(cfg, records, echo)
    echo(f"{len(folds.splits)} students, alpha {settings.alpha}, temperature {settings.temperature}: each learns the "
         f"labeled rows outside its fold and {len(teacher.extra):,} unlabeled rows, and keeps its best {t.metric} "
         "on its fold's labeled rows (gold labels only)")
    runner = StudentFolds(cfg, run, records, labeled, folds, tokenizer, encoder, label_map, device, distributed.Dist(),
                          echo, (), False, unlabeled=unlabeled, settings=settings)
    params = runner.train(t.only_folds or list(range(len(folds.splits))), set())
    extra = {"rare_classes": folds.rare, "encode": asdict(encoder.stats), "parameters": params,
             "n_records": len(records), "n_unlabeled": len(teacher.extra), "device": str(device),
             "train_seconds": round(time.time() - start, 1), "distilled_from": teacher.info}
    summary = conclude(run, records, label_map, len(folds.splits), extra, echo)
    echo(f"{len(folds.splits)} students trained in {extra['train_seconds']:.0f}s")
    return summary


def _save_student(run: Path, result: FitResult, n_train: int, params: int, label_map: LabelMap,
                  n_monitor: int) -> None:
    """fold-0's result.json and an out-of-fold file with no rows: the student held nothing out."""
    result.notes.append(f"no held-out rows: the scores are on {n_monitor:,} training rows the model was trained on")
    result.best_probs = np.zeros((0, len(label_map)), dtype=np.float32)
    rundir.save_fold(run / "fold-0", 0, np.zeros(0, dtype=np.int64), result, n_train=n_train, n_parameters=params)
    checkpoint.clear_state(run / "fold-0")
