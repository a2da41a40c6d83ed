"""`rekit.distill`: one student model from a run's fold ensemble, or K students on K folds (see
training/distill.py).

    result = rekit.distill("runs/x", output="runs/x-student", unlabeled="test.csv", epochs=5)
    rekit.load(result.output).predict([...])    # one model instead of K
    rekit.distill("runs/x", output="runs/x-noisy", unlabeled="test.csv", folds=5).cv  # an ensemble of students

Everything that can fail on the user's input (the teacher run, its out-of-fold file, the training
file, the options, the output directory) is checked before the teacher predicts anything and
before an existing output is replaced.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rekit import lock, rundir
from rekit.api.examples import to_records
from rekit.api.training import TrainResult, _log_lines
from rekit.config import DistillSettings, RunConfig, parse_augments
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.errors import ConfigError, RekitError

if TYPE_CHECKING:
    from rekit.training.distill import Teacher

# The teacher's options that do not carry over to the student (it is one model on every row).
NOT_INHERITED = ("output", "overwrite", "only_folds", "folds", "resume")


def distill(run: str | Path, output: str | Path, train=None, unlabeled=None, alpha: float | None = None,
            temperature: float | None = None, folds: int | None = None, echo=None, **options) -> TrainResult:
    """Train one student on every training row of `run` from its out-of-fold probabilities (and on
    `unlabeled` sentences from the ensemble's), into the new run directory `output`. folds=K (2 or
    more): K students on K folds, each also learning every unlabeled sentence and selected on its
    fold's held-out rows; `output` is then a K-fold run with a CV score, like `rekit.train`'s.

    train: the teacher's training file (default: the one in its config.yaml), another path to it,
    or its examples (a teacher trained from in-memory records needs them). unlabeled: a file (any
    format `rekit predict` reads; labels ignored) or a list of examples. options: `rekit train`
    options for the student (epochs=, lr=, model=, device=, overwrite=True, ...); by default the
    teacher's. Progress goes to the "rekit" logger unless `echo` is given.
    """
    echo = echo or _log_lines
    settings = DistillSettings.from_dict({"alpha": alpha, "temperature": temperature, "folds": folds,
                                          "unlabeled": str(unlabeled) if isinstance(unlabeled, (str, Path)) else None})
    teacher_dir = Path(run)
    dirs, label_map = teacher_models(teacher_dir)
    oof = teacher_oof(teacher_dir, label_map)
    cfg = student_config(teacher_dir, output, train, options, settings.folds)
    lock.check_free(rundir.check_new(cfg.train.output, cfg.train.overwrite, resumable=False))
    records, report = training_records(cfg, train, echo)
    if settings.folds > 1:  # too few rows for the folds: said before the teacher predicts anything
        from rekit.training.cv import split_folds

        split_folds(cfg, records, say=lambda *_: None)
    from rekit.training.distill import Teacher, align_soft_targets
    from rekit.training.distill import distill as train_student

    soft, fallback = align_soft_targets(records, *oof, label_map, where=str(teacher_dir / rundir.OOF_CSV))
    if fallback:
        echo(f"{fallback:,} training rows have no out-of-fold probabilities in {teacher_dir} (classes too rare to "
             "hold out): their gold label is their target")
    teacher = Teacher(label_map, soft, info=teacher_info(teacher_dir, cfg, len(dirs)))
    if teacher.info.get("data_changed"):
        echo(f"warning: {cfg.data.train} changed since {teacher_dir} was trained; its ids and labels still match "
             "the out-of-fold file, so each row gets the probabilities of its id")
    if unlabeled is not None:
        add_unlabeled(teacher, unlabeled, dirs, cfg, echo)
    summary = train_student(cfg, records, teacher, settings, echo, read_report=report)
    return TrainResult(Path(output), summary.get("status", "finished"), summary.get("cv") or {},
                       summary.get("folds") or [], summary.get("labels") or [], summary)


def teacher_models(run: Path) -> tuple[list[Path], LabelMap]:
    """The teacher's finished fold models and label map; one line if `run` is not a finished run
    with out-of-fold probabilities."""
    if not run.is_dir():
        raise RekitError(f"{run}: no such run directory")
    dirs = rundir.model_dirs(run)
    if not (run / rundir.OOF_CSV).is_file() or not (run / rundir.CONFIG).is_file():
        raise RekitError(f"{run} has no out-of-fold probabilities (no {rundir.OOF_CSV}); distil a run made by "
                         "`rekit train` with 2 or more folds")
    return dirs, LabelMap.load(dirs[0] / rundir.LABELS_FILE)


def student_config(teacher: Path, output: str | Path, train, options: dict, folds: int = 1) -> RunConfig:
    """The teacher's config.yaml with the student's options: `folds` folds, `output`, record
    augmentations off (the teacher has no probabilities for augmented copies; --augment mask stays)."""
    saved = rundir.read_config(teacher)
    sections = {name: {k: v for k, v in (saved.get(name) or {}).items() if k not in NOT_INHERITED}
                for name in ("data", "model", "train")}
    kept = [a for a in parse_augments(str(sections["train"].get("augment", "none"))) if a == "mask"]
    sections["train"]["augment"] = ",".join(kept) or "none"
    sections["train"]["folds"] = folds
    if isinstance(train, (str, Path)):
        sections["data"]["train"] = str(train)
    elif train is not None:
        sections["data"]["train"] = None
    if "train" in options or "output" in options or "folds" in options:
        raise ConfigError("pass the training data, output directory and number of students as train=, output= "
                          "and folds=")
    options.setdefault("progress", False)
    try:
        return RunConfig.from_dict(sections, {**options, "output": str(output)})
    except ConfigError as e:
        if any(str(e).startswith(f"{s}.") for s in sections):  # a value from the teacher's file
            raise ConfigError(f"{teacher / rundir.CONFIG}: {e}") from None
        raise


def training_records(cfg: RunConfig, train, echo) -> tuple[list[Record], object | None]:
    """The teacher's training rows (file or given examples) and the read report (None for examples)."""
    from rekit.training.cv import read_training_file

    if train is not None and not isinstance(train, (str, Path)):
        return to_records(train), None
    if not cfg.data.train:
        raise ConfigError("the teacher run was trained on in-memory records (its config.yaml names no training "
                          "file); pass the training data (--train FILE, or train= in Python)")
    if train is None and not Path(cfg.data.train).is_file():
        raise ConfigError(f"{cfg.data.train}: no such file (the teacher's training file, from its config.yaml); "
                          "pass --train FILE (train= in Python) where it is now")
    return read_training_file(cfg, echo)


def teacher_oof(run: Path, label_map: LabelMap) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The teacher's oof.csv: (ids, gold label ids, probabilities; NaN rows were never held out)."""
    ids, y, probs = rundir.read_oof(run, label_map)
    if not np.isfinite(probs).all(axis=1).any():
        raise RekitError(f"{run / rundir.OOF_CSV} has no out-of-fold probabilities (no row was held out: a "
                         "distilled run?); distil a run made by `rekit train` with 2 or more folds")
    return ids, y, probs


def add_unlabeled(teacher: Teacher, unlabeled, dirs: list[Path], cfg: RunConfig, echo) -> None:
    """The unlabeled sentences (labels dropped) and the whole ensemble's probabilities on them."""
    from rekit.data.readers import options_from_config, read_for_prediction
    from rekit.ensemble import Ensemble

    if isinstance(unlabeled, (str, Path)):
        rows = read_for_prediction(unlabeled, options_from_config(cfg.data))
        echo(rows.report.summary())
        records, where = rows.records, str(unlabeled)
        teacher.info["unlabeled"] = {"path": str(unlabeled), "sha256": rundir.file_digest(unlabeled)}
    else:
        records, where = to_records(unlabeled), "examples"
    if not records:
        raise RekitError(f"{where}: no readable unlabeled sentences")
    teacher.extra = [dataclasses.replace(r, label=None) for r in records]
    echo(f"the teacher ({len(dirs)} fold models) predicts {len(records):,} unlabeled sentences from {where}")
    ens = Ensemble(dirs, device=cfg.train.device, batch_size=cfg.train.eval_batch_size,
                   trust_remote_code=cfg.model.trust_remote_code)
    teacher.extra_soft = ens.predict_proba(teacher.extra).astype(np.float32)
    del ens
    gc.collect()


def teacher_info(run: Path, cfg: RunConfig, n_models: int) -> dict:
    """Where the student came from, for distill.json and summary.json: the teacher's path, a
    fingerprint of its results (config, out-of-fold file, each fold's result), its CV score."""
    h = hashlib.sha256()
    for p in [run / rundir.CONFIG, run / rundir.OOF_CSV, *sorted(run.glob(f"fold-*/{rundir.RESULT}"))]:
        h.update(p.relative_to(run).as_posix().encode() + b"\0" + rundir.file_digest(p).encode())
    summary = _json(run / "summary.json")
    state = rundir.read_state(run)
    info = {"teacher": str(run.resolve()), "teacher_fingerprint": h.hexdigest(), "teacher_models": n_models,
            "teacher_started": state.get("started"), "teacher_cv": summary.get("cv") or {},
            "soft_targets": "out-of-fold probabilities of the teacher's fold models"}
    if cfg.data.train and Path(cfg.data.train).is_file():
        info["data_sha256"] = rundir.file_digest(cfg.data.train)
        if state.get("data_sha256") and state["data_sha256"] != info["data_sha256"]:
            info["data_changed"] = True  # ids and labels still matched (align_soft_targets checked them)
    return info


def _json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
