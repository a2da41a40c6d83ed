"""K-fold cross-validation: read, encode once, fit every fold, collect out-of-fold predictions.

A run directory (README "The run directory"):
  config.yaml  labels.json  state.json  metrics.jsonl  summary.json  oof.csv  README.md (model card)
  fold-K/  model.safetensors head.safetensors config.json rekit.json labels.json tokenizer files README.md
           result.json oof.safetensors
           (+ train_state.json and its .safetensors while the fold trains)

A fold is done when result.json and oof.safetensors exist. A resumed run (`resume=True`) skips
done folds and continues the others from their saved training state (loop.fit).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import cast

import numpy as np
import torch

from rekit import lock, rundir
from rekit.config import RunConfig
from rekit.data.constraints import describe_types
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.markers import first_segment, mark
from rekit.encoding.tokenize import Features, REEncoder
from rekit.errors import ConfigError, DataError, RekitError
from rekit.io import atomic_write_text
from rekit.metrics import evaluate, per_class_report
from rekit.modelcard import write_run_cards
from rekit.modeling.backbone import build_model, check_backbone, check_max_length, count_parameters, load_tokenizer
from rekit.modeling.model import REModel
from rekit.rundir import SPEC_FILE
from rekit.runtime import resolve_device, seed_everything
from rekit.tracking import open_tracker
from rekit.training import checkpoint, concurrent, distributed
from rekit.training.augmentation import training_features
from rekit.training.folds import Folds, make_folds
from rekit.training.loop import FitResult, FoldTrainer, MetricsLog, fit

READ_REPORT = "read_report.json"  # every repaired or skipped training row, in the run directory


def read_training_file(cfg: RunConfig, echo=print):
    """(records, ReadReport) of the training file under the run's read options. Unambiguous span
    repairs are applied and a small share of unusable rows skipped (see `options_from_config`);
    the report names where it will be kept (RUN/read_report.json, `save_read_report`)."""
    from rekit.data.readers import options_from_config, read_records

    d = cfg.data
    if not d.train:
        raise ConfigError("no training file: pass --train PATH (or data.train in the config file)")
    records, report = read_records(d.train, options_from_config(d, limit=d.max_train_samples))
    out = cfg.train.output
    echo(report.summary(Path(out) / READ_REPORT if out else None))
    unlabeled = [r for r in records if r.label is None]
    if unlabeled:
        raise DataError(f"{len(unlabeled)} training rows have no label (first: id {unlabeled[0].id}); "
                        "training needs a label on every row", path=d.train)
    if not records:
        raise DataError("no training rows", path=d.train)
    labels = {r.label for r in records}
    if len(labels) == 1:
        echo(f"warning: {d.train}: every training row has the label {next(iter(labels))!r}, so the model can only "
             "learn to predict that label; is this the right file (or the right label column)?")
    return records, report


def read_training_data(cfg: RunConfig, echo=print) -> list[Record]:
    """The training records (see `read_training_file`, which also returns the read report)."""
    return read_training_file(cfg, echo)[0]


def save_read_report(report, run: Path) -> None:
    report.save(run / READ_REPORT)


def _checked_records(records: list[Record], cfg: RunConfig) -> list[Record]:
    """In-memory training records: the same requirements as a training file's."""
    unlabeled = [r for r in records if r.label is None]
    if unlabeled:
        raise DataError(f"{len(unlabeled)} training records have no label (first: id {unlabeled[0].id}); "
                        "training needs a label on every record")
    if not records:
        raise DataError("no training records")
    limit = cfg.data.max_train_samples
    return list(records[:limit]) if limit is not None else list(records)



def gold_labels(records: Sequence[Record]) -> list[str]:
    """The training records' labels (every one has a label: the readers refuse unlabeled training rows)."""
    labels = [r.label for r in records]
    if None in labels:
        raise DataError(f"training row {records[labels.index(None)].id!r} has no label")
    return cast("list[str]", labels)


def resolve_label_map(cfg: RunConfig, labels: list[str]) -> LabelMap:
    spec = cfg.data.labels
    no_rel = None if cfg.data.no_relation_label == "none" else cfg.data.no_relation_label
    if spec == "auto":
        try:
            return LabelMap.infer(labels, no_rel)
        except DataError as e:
            raise DataError(e.problem, path=cfg.data.train) from None
    lm = LabelMap.load(spec) if Path(spec).suffix == ".json" else LabelMap.builtin(spec)
    if no_rel not in ("auto", lm.no_relation):
        lm = LabelMap(lm.labels, no_rel, lm.name)
    unknown = sorted(set(labels) - set(lm.labels))
    if unknown:
        raise DataError(f"labels not in the {lm.name} label set: {', '.join(unknown[:10])}", path=cfg.data.train)
    return lm


def tokenizer_corpus(records: list[Record], cfg: RunConfig) -> list[str]:
    """What a scratch tokenizer trains on: exactly the texts the model will read."""
    m = cfg.model
    texts = [mark(r, m.marker).text for r in records]
    firsts = [first_segment(r, m.first_segment, m.marker, "[SEP]") for r in records]
    return texts + [f for f in firsts if f]


def train_cv(cfg: RunConfig, echo=print, callbacks=(), resume: bool = False,
             records: list[Record] | None = None) -> dict:
    """Run the whole K-fold training described by `cfg`; returns the summary (also on disk).

    `records`: train on these (e.g. from `rekit.train`) instead of reading `cfg.data.train`.

    `callbacks(fold, row)` are called after every evaluation (see `loop.fit`). With resume=True,
    `cfg.train.output` is an existing run directory made with this config (`rekit train --resume`
    reads it from there): done folds are kept, the others continue from their saved state.
    """
    t = cfg.train
    tracker = open_tracker(cfg)  # --report-to: a missing backend fails here, before the run directory exists
    dist, device_name = distributed.from_env(t.parallel, t.device)
    if not dist.is_main:  # torchrun: the main process owns the run directory and its files
        return _train_worker(cfg, dist, device_name, echo, callbacks, resume)
    if not t.output:
        raise ConfigError(f"no run directory: pass {'--resume' if resume else '--output'} RUN_DIR")
    # One writer per run directory (rekit.lock): a second train/--overwrite/--resume refuses at once.
    with lock.locked(t.output):
        return _train_main(cfg, echo, callbacks, resume, tracker, dist, device_name, records)


def _open_run(cfg: RunConfig, resume: bool, echo, given: list[Record] | None) -> tuple[Path, list[Record] | None]:
    """The run directory, reopened to resume or created anew (after every check that can fail).
    `given`: in-memory training records (rekit.train) instead of the training file."""
    t = cfg.train
    if resume:
        run = rundir.reopen(t.output)
        checkpoint.check_resumable(run)  # a damaged train_state.json fails now, not after encoding
        return run, None
    # Read before --overwrite removes anything: a training file that cannot be read, or a
    # mistyped --model, leaves an existing run as it was and creates no new one.
    rundir.check_new(t.output, t.overwrite)
    check_backbone(cfg.model)
    records, read_report = (_checked_records(given, cfg), None) if given is not None else read_training_file(cfg, echo)
    resolve_label_map(cfg, gold_labels(records))  # a label-set mistake fails before the run directory exists
    run = rundir.create(t.output, t.overwrite)
    if read_report is not None:
        save_read_report(read_report, run)
    atomic_write_text(run / rundir.CONFIG, cfg.to_yaml())  # first: a run directory with a config can resume
    rundir.write_state(run, "running")
    return run, records


def _train_main(cfg: RunConfig, echo, callbacks, resume: bool, tracker, dist, device_name: str,
                given: list[Record] | None) -> dict:
    """The main process, holding the run's lock: open the run, train, record how it ended."""
    run, records = _open_run(cfg, resume, echo, given)
    if resume:
        state = rundir.read_state(run)
        if state.get("status") == "finished" and (run / "summary.json").is_file():
            echo(f"{run} has finished already; nothing to resume")
            return json.loads((run / "summary.json").read_text(encoding="utf-8"))
        rundir.remove_temp_files(run)
        rundir.write_state(run, "running", resumed=int(state.get("resumed", 0)) + 1)
    dist.barrier()  # the other processes may now read the run directory
    try:
        with tracker.attached(run, cfg):
            summary = _train(cfg, run, echo, [*callbacks, tracker], resume, dist, device_name, records)
            tracker.log_summary(summary)
    except KeyboardInterrupt as e:  # loop.TrainingInterrupted says where it stopped
        rundir.write_state(run, "interrupted", reason=str(e) or "stopped by the user (Ctrl-C)",
                           folds_done=rundir.folds_done(run))
        raise
    except RekitError as e:
        rundir.write_state(run, "failed", reason=str(e))
        raise
    except Exception as e:
        rundir.write_state(run, "failed", reason=f"{type(e).__name__}: {e}")
        raise
    finally:
        distributed.shutdown(dist)
    return summary


def _train_worker(cfg: RunConfig, dist, device_name: str, echo, callbacks, resume: bool) -> dict:
    """A non-main torchrun process: its folds (or its share of every fold), no run-level files. In
    fold-parallel mode it reports its own folds; under DDP the main process speaks for all."""
    dist.barrier()  # wait for the main process to create (or reopen) the run directory
    assert cfg.train.output is not None  # the main process created the run directory there
    try:
        return _train(cfg, Path(cfg.train.output), echo if dist.mode == "folds" else quiet, callbacks, resume,
                      dist, device_name)
    finally:
        distributed.shutdown(dist)


def check_same_data(cfg: RunConfig, run: Path, resume: bool) -> None:
    """Record the training file's sha256; a resume refuses a file that changed since the start."""
    path = cfg.data.train
    if not path or not Path(path).is_file():
        return  # read_training_data says what is wrong
    digest = rundir.file_digest(path)
    known = rundir.read_state(run).get("data_sha256")
    if resume and known and known != digest:
        raise ConfigError(f"{path} changed since {run} was started; resuming would mix two datasets. "
                          "Start a new run (or restore the original file)")
    rundir.write_state(run, "running", data_sha256=digest)


def shared_tokenizer(cfg: RunConfig, run: Path, records: list[Record], resume: bool, dist):
    """One tokenizer for all processes of a torchrun job: the main one builds and saves it, the
    others load it (two scratch trainings of the same text can differ)."""
    if not dist.active:
        return run_tokenizer(cfg, run, records, resume)
    path = run / "tokenizer"
    if dist.is_main:
        tok = run_tokenizer(cfg, run, records, resume)
        tok.save_pretrained(path)
    dist.barrier()
    if dist.is_main:
        return tok
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.model.trust_remote_code)


def run_tokenizer(cfg: RunConfig, run: Path, records: list[Record], resume: bool):
    """The run's tokenizer. A resumed run reloads the one its folds used, from a fold directory
    that REModel.save completed: a scratch tokenizer trained again can differ (the WordPiece
    trainer breaks frequency ties arbitrarily), and hub files can change."""
    if resume:
        for d in sorted(run.glob("fold-*")):
            if (d / SPEC_FILE).is_file():
                from transformers import AutoTokenizer

                try:
                    return AutoTokenizer.from_pretrained(d, trust_remote_code=cfg.model.trust_remote_code)
                except (OSError, ValueError) as e:
                    raise RekitError(f"cannot reload the run's tokenizer from {d}: {str(e).splitlines()[0]}") from None
    types = sorted({e.type for r in records for e in (r.subject, r.object)})
    return load_tokenizer(cfg.model, tokenizer_corpus(records, cfg), types)


def quiet(*args, **kwargs) -> None:
    """The echo of a process that has nothing to report."""


def _train(cfg: RunConfig, run: Path, echo, callbacks=(), resume: bool = False,
           dist: distributed.Dist | None = None, device_name: str | None = None,
           records: list[Record] | None = None) -> dict:
    t, m = cfg.train, cfg.model
    dist = dist or distributed.Dist()
    say = echo if dist.is_main else quiet  # run-level news, said once; `echo` is for this process's folds
    start = time.time()
    if dist.is_main:
        check_same_data(cfg, run, resume)
    if records is None:
        records, read_report = read_training_file(cfg, say)
        if dist.is_main:
            save_read_report(read_report, run)
    label_map = resolve_label_map(cfg, gold_labels(records))
    if resume and (run / "labels.json").is_file() and LabelMap.load(run / "labels.json").labels != label_map.labels:
        raise ConfigError(f"the label set no longer matches {run / 'labels.json'}; start a new run")
    if dist.is_main:
        label_map.save(run / "labels.json")
    device = resolve_device(device_name or t.device)

    seed_everything(t.seed)
    tokenizer = shared_tokenizer(cfg, run, records, resume, dist)
    encoder = REEncoder(tokenizer, m.marker, m.max_length, m.first_segment)
    feats = encoder.encode(records, label_map)
    say(f"encoded {len(feats):,} examples ({m.marker}, max_length {m.max_length}): {encoder.stats.summary()}")

    folds = split_folds(cfg, records, say)
    todo = t.only_folds or list(range(len(folds.splits)))
    done = set(rundir.folds_done(run))
    if dist.active and dist.mode == "folds":
        todo = [k for k in todo if dist.owns_fold(k)]
        echo(f"fold-parallel over {dist.world} processes: this one trains folds {[k + 1 for k in todo]}")
    if resume and dist.is_main:  # rows the resumed folds will write again (and a torn last line) go
        rundir.prune_metrics(run, {k: checkpoint.saved_step(run / f"fold-{k}") for k in todo if k not in done})
    pending = []
    for k in todo:
        if k in done:
            checkpoint.clear_state(run / f"fold-{k}")  # in case a kill came between saving the fold and clearing it
            echo(f"fold {k + 1}/{len(folds.splits)}: done in an earlier session, kept")
        else:
            pending.append(k)
    folds_run = FoldRunner(cfg, run, records, feats, folds, tokenizer, encoder, label_map, device, dist, echo,
                           callbacks, resume)
    params = folds_run.train(pending, done)

    extra = {"rare_classes": folds.rare, "encode": asdict(encoder.stats), "parameters": params,
             "n_records": len(records), "device": str(device), "train_seconds": round(time.time() - start, 1)}
    if dist.active:
        extra["processes"] = {"world_size": dist.world, "parallel": dist.mode}
        dist.barrier()  # fold-parallel: wait for every process's folds before merging
        if not dist.is_main:
            return {"status": "worker", **extra}
    return conclude(run, records, label_map, len(folds.splits), extra, echo)


def split_folds(cfg: RunConfig, records: list[Record], say=print) -> Folds:
    """The run's folds (stratified by gold label unless --split kfold, from the run's seed); classes
    too rare to split are said once."""
    t = cfg.train
    folds = make_folds(gold_labels(records), t.folds, t.split, t.valid_ratio, t.seed)
    if folds.rare:
        say(f"classes with fewer rows than needed to split ({max(t.folds, 2)}) stay in every training split "
            f"and are never validated: {', '.join(f'{k} ({v})' for k, v in folds.rare.items())}")
    return folds


def conclude(run: Path, records: list[Record], label_map: LabelMap, n_folds: int, extra: dict, echo) -> dict:
    """The run's summary once its folds are trained: finalized, or "partial" while some are missing
    (--only-folds)."""
    if len(rundir.folds_done(run)) < n_folds:
        rundir.write_state(run, "partial", folds_done=rundir.folds_done(run))
        return {"status": "partial", **extra}
    return finalize(run, records, label_map, extra, echo)


class FoldRunner:
    """Trains the run's pending folds: one after another, or in groups that train at the same time
    on one GPU (--concurrent-folds, concurrent.py); each fold is saved the moment it finishes."""

    def __init__(self, cfg: RunConfig, run: Path, records: list[Record], feats, folds, tokenizer, encoder,
                 label_map: LabelMap, device: torch.device, dist, echo, callbacks, resume: bool):
        self.cfg, self.run, self.records, self.feats, self.folds = cfg, run, records, feats, folds
        self.tokenizer, self.encoder, self.label_map, self.device = tokenizer, encoder, label_map, device
        self.dist, self.echo, self.callbacks, self.resume = dist, echo, callbacks, resume
        self.params: int | None = None
        self.done: set[int] = set()

    def train(self, pending: list[int], done: set[int]) -> int | None:
        """Train `pending`; returns the model's parameter count (None if nothing was trained)."""
        self.done = done
        if not pending:
            return None
        first = self.build(pending[0])
        t = self.cfg.train
        size, why = concurrent.plan(t.concurrent_folds, self.device, len(pending),
                                    concurrent.fold_bytes(first[0], t.batch_size, self.cfg.model.max_length),
                                    self.dist.ddp)
        if why:
            self.echo(why)
        if size > 1:
            self.echo(f"{size} folds train at the same time on {self.device} (--concurrent-folds {t.concurrent_folds})")
        built = {pending[0]: first}
        del first
        for group in concurrent.groups(pending, size):
            parts = [built.pop(k) if k in built else self.build(k) for k in group]
            if len(group) == 1:
                self.finish(group[0], self.fit_alone(group[0], *parts[0][:3]))
            else:
                self.fit_group(group, parts)
            del parts  # the models go before the next group's are built
        return self.params

    def build(self, k: int) -> tuple:
        """(model, train features, valid features, host RNG) of fold k, seeded as fold k always is."""
        t, n = self.cfg.train, len(self.folds.splits)
        seed_everything(t.seed + k, t.deterministic)  # before init: the weights draw from this RNG
        model = self.new_model()
        self.params = count_parameters(model)
        train, valid = self.fold_features(k)
        self.echo(f"fold {k + 1}/{n}: {self.n_train(k):,} train / {len(valid):,} valid, "
                  f"{self.params / 1e6:.1f}M parameters, {self.device}")
        return model, train, valid, concurrent.HostRng()

    # The per-fold hooks: a subclass trains other models on other rows in the same loop (distill.py).
    def new_model(self) -> REModel:
        """A fresh model with the run's loss (and token masking, if asked); the caller seeds."""
        t, m = self.cfg.train, self.cfg.model
        model = build_model(m, self.tokenizer, self.label_map, t.label_smoothing, train=t)
        describe_types(model.spec, self.records, m.type_constraints)
        check_max_length(m, model)
        return model

    def fold_features(self, k: int) -> tuple[Features, Features]:
        """Fold k's (training, validation) features: its training rows with their augmented copies,
        and its held-out rows."""
        tr, va = self.folds.splits[k]
        train = training_features(self.feats, tr, self.records, self.cfg.train, self.encoder, self.label_map)
        return train, self.feats.subset(va)

    def n_train(self, k: int) -> int:
        """Fold k's training rows, as said and kept in result.json (augmented copies not counted)."""
        return len(self.folds.splits[k][0])

    def fold_args(self, k: int) -> dict:
        dist, n = self.dist, len(self.folds.splits)
        return {"fold_dir": self.run / f"fold-{k}", "seed": self.cfg.train.seed + k, "device": self.device,
                "dist": dist, "echo": self.echo, "desc": f"fold {k + 1}/{n}",
                "log": MetricsLog(self.run / "metrics.jsonl", fold=k) if dist.is_main or dist.mode == "folds" else None,
                "callbacks": [lambda row, k=k, cb=cb: cb(k, row) for cb in self.callbacks]}

    def fit_alone(self, k: int, model, train, valid) -> FitResult:
        if self.dist.is_main:
            rundir.write_state(self.run, "running", fold=k, folds_done=sorted(self.done))
        return fit(model, self.tokenizer, self.label_map, train, valid, self.cfg.train, resume=self.resume,
                   **self.fold_args(k))

    def fit_group(self, group: list[int], parts: list[tuple]) -> None:
        if self.dist.is_main:
            rundir.write_state(self.run, "running", fold=group[0], folds_running=group, folds_done=sorted(self.done))
        trainers = [FoldTrainer(model, self.tokenizer, self.label_map, train, valid, self.cfg.train,
                                concurrent=i, **self.fold_args(k))
                    for i, (k, (model, train, valid, _)) in enumerate(zip(group, parts))]
        concurrent.fit_together(trainers, [p[3] for p in parts], self.resume,
                                on_done=lambda i, result: self.finish(group[i], result))

    def finish(self, k: int, result: FitResult) -> None:
        """Fold k's results into its directory (by its owner process) and one line about it."""
        t, dist, fold_dir = self.cfg.train, self.dist, self.run / f"fold-{k}"
        va = self.folds.splits[k][1]
        if dist.is_main or dist.mode == "folds":  # the fold's owner records it
            rundir.save_fold(fold_dir, k, va, result, n_train=self.n_train(k), n_parameters=self.params)
            checkpoint.clear_state(fold_dir)  # the fold is done: only its best checkpoint stays
        self.done.add(k)
        best = result.best_metrics
        self.echo(f"fold {k + 1}: best {t.metric} {result.best_score:.4g} at epoch {result.best_epoch:g} "
                  f"(micro-F1 {best.get('micro_f1', float('nan')):.2f}, AUPRC {best.get('auprc', float('nan')):.2f}, "
                  f"accuracy {best.get('accuracy', float('nan')):.4f})" + (f"; {result.stopped}" if result.stopped else ""))
        if dist.is_main:
            rundir.write_state(self.run, "running", folds_done=rundir.folds_done(self.run))
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def finalize(run: Path, records: list[Record], label_map: LabelMap, extra: dict, echo=print) -> dict:
    """Merge the folds' out-of-fold predictions into oof.csv and the CV score in summary.json."""
    n, c = len(records), len(label_map)
    oof = np.full((n, c), np.nan, dtype=np.float32)
    fold_of = np.full(n, -1)
    fold_rows = []
    for k in rundir.folds_done(run):
        idx, probs, result = rundir.load_fold(run / f"fold-{k}")
        oof[idx], fold_of[idx] = probs, k
        fold_rows.append(result)
    if extra.get("parameters") is None:  # every fold was trained in an earlier session
        extra["parameters"] = next((r["parameters"] for r in fold_rows if r.get("parameters")), None)
    nonfinite = [r["fold"] for r in fold_rows if r.get("nonfinite")]
    for r in fold_rows:
        if r.get("nonfinite"):
            echo(f"warning: fold {r['fold'] + 1} {r['stopped']}")
    held = fold_of >= 0
    y = np.asarray([label_map.label2id[label] for label in gold_labels(records)])
    cv = evaluate(y[held], oof[held], label_map) if held.any() else {}
    per_class = per_class_report(y[held], oof[held].argmax(1), label_map) if held.any() else []
    rundir.write_oof(run / "oof.csv", records, fold_of, oof, label_map)
    summary = {"status": "finished", "cv": cv, "folds": fold_rows, "nonfinite_folds": nonfinite,
               "per_class": per_class, "labels": list(label_map.labels), "no_relation": label_map.no_relation,
               "resumed": int(rundir.read_state(run).get("resumed", 0)), **extra}
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    rundir.write_state(run, "finished", folds_done=rundir.folds_done(run))
    write_run_cards(run)
    if cv:
        echo(f"CV (out-of-fold, {int(held.sum()):,} rows): micro-F1 {cv['micro_f1']:.2f}  AUPRC {cv['auprc']:.2f}  "
             f"accuracy {cv['accuracy']:.4f}")
    return summary
