"""K-fold cross-validation: read, encode once, fit every fold, collect out-of-fold predictions.

A run directory (README "The run directory"):
  config.yaml  labels.json  state.json  metrics.jsonl  summary.json  oof.csv
  fold-K/  model.safetensors config.json rekit.json labels.json tokenizer files result.json oof.safetensors
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from rekit.config import RunConfig
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.markers import first_segment, mark
from rekit.encoding.tokenize import REEncoder
from rekit.errors import ConfigError, DataError, RekitError
from rekit.io import atomic_write_text
from rekit.metrics import evaluate, per_class_report
from rekit.modeling.backbone import build_model, check_max_length, count_parameters, load_tokenizer
from rekit.runtime import resolve_device, seed_everything
from rekit.training import rundir
from rekit.training.folds import make_folds
from rekit.training.loop import MetricsLog, fit


def read_training_data(cfg: RunConfig, echo=print) -> list[Record]:
    from rekit.data.readers import ReadOptions, read_records

    d = cfg.data
    if not d.train:
        raise ConfigError("no training file: pass --train PATH (or data.train in the config file)")
    options = ReadOptions(format=d.format, on_mismatch=d.on_mismatch, on_bad_row=d.on_bad_row,
                          columns=d.columns or None, entity_keys=d.entity_keys or None,
                          offsets=d.offsets, limit=d.max_train_samples)
    records, report = read_records(d.train, options)
    echo(report.summary())
    unlabeled = [r for r in records if r.label is None]
    if unlabeled:
        raise DataError(f"{len(unlabeled)} training rows have no label (first: id {unlabeled[0].id}); "
                        "training needs a label on every row", path=d.train)
    if not records:
        raise DataError("no training rows", path=d.train)
    return records


def resolve_label_map(cfg: RunConfig, labels: list[str]) -> LabelMap:
    spec, no_rel = cfg.data.labels, cfg.data.no_relation_label
    no_rel = None if no_rel == "none" else no_rel
    if spec == "auto":
        return LabelMap.infer(labels, no_rel)
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


def train_cv(cfg: RunConfig, echo=print, callbacks=()) -> dict:
    """Run the whole K-fold training described by `cfg`; returns the summary (also on disk).

    `callbacks(fold, row)` are called after every evaluation (see `loop.fit`).
    """
    t, m = cfg.train, cfg.model
    run = rundir.create(t.output, t.overwrite)
    rundir.write_state(run, "running")
    try:
        summary = _train(cfg, run, echo, callbacks)
    except KeyboardInterrupt:
        rundir.write_state(run, "interrupted", reason="stopped by the user (Ctrl-C)")
        raise
    except RekitError as e:
        rundir.write_state(run, "failed", reason=str(e))
        raise
    except Exception as e:  # noqa: BLE001 - record why, then let the traceback through
        rundir.write_state(run, "failed", reason=f"{type(e).__name__}: {e}")
        raise
    return summary


def _train(cfg: RunConfig, run: Path, echo, callbacks=()) -> dict:
    t, m = cfg.train, cfg.model
    start = time.time()
    atomic_write_text(run / "config.yaml", cfg.to_yaml())
    records = read_training_data(cfg, echo)
    label_map = resolve_label_map(cfg, [r.label for r in records])
    label_map.save(run / "labels.json")
    device = resolve_device(t.device)

    seed_everything(t.seed)
    types = sorted({e.type for r in records for e in (r.subject, r.object)})
    tokenizer = load_tokenizer(m, tokenizer_corpus(records, cfg), types)
    encoder = REEncoder(tokenizer, m.marker, m.max_length, m.first_segment)
    feats = encoder.encode(records, label_map)
    echo(f"encoded {len(feats):,} examples ({m.marker}, max_length {m.max_length}): {encoder.stats.summary()}")

    folds = make_folds([r.label for r in records], t.folds, t.split, t.valid_ratio, t.seed)
    if folds.rare:
        echo(f"classes with fewer rows than needed to split ({max(t.folds, 2)}) stay in every training split "
             f"and are never validated: {', '.join(f'{k} ({v})' for k, v in folds.rare.items())}")
    todo = t.only_folds or list(range(len(folds.splits)))
    params = None
    for k in todo:
        tr, va = folds.splits[k]
        fold_dir = run / f"fold-{k}"
        seed_everything(t.seed + k, t.deterministic)  # before init: the weights draw from this RNG
        model = build_model(m, tokenizer, label_map, t.label_smoothing)
        check_max_length(m, model)
        params = count_parameters(model)
        echo(f"fold {k + 1}/{len(folds.splits)}: {len(tr):,} train / {len(va):,} valid, {params / 1e6:.1f}M parameters, {device}")
        result = fit(model, tokenizer, label_map, feats.subset(tr), feats.subset(va), t, fold_dir,
                     seed=t.seed + k, device=device, log=MetricsLog(run / "metrics.jsonl", fold=k),
                     desc=f"fold {k + 1}/{len(folds.splits)}",
                     callbacks=[lambda row, k=k, cb=cb: cb(k, row) for cb in callbacks])
        rundir.save_fold(fold_dir, k, va, result, n_train=len(tr))
        best = result.best_metrics
        echo(f"fold {k + 1}: best {t.metric} {result.best_score:.4g} at epoch {result.best_epoch:g} "
             f"(micro-F1 {best.get('micro_f1', float('nan')):.2f}, AUPRC {best.get('auprc', float('nan')):.2f}, "
             f"accuracy {best.get('accuracy', float('nan')):.4f})" + (f"; {result.stopped}" if result.stopped else ""))
        rundir.write_state(run, "running", folds_done=rundir.folds_done(run))
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    extra = {"rare_classes": folds.rare, "encode": asdict(encoder.stats), "parameters": params,
             "n_records": len(records), "device": str(device), "train_seconds": round(time.time() - start, 1)}
    if len(rundir.folds_done(run)) < len(folds.splits):
        rundir.write_state(run, "partial", folds_done=rundir.folds_done(run))
        return {"status": "partial", **extra}
    return finalize(run, records, label_map, extra, echo)


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
    held = fold_of >= 0
    y = np.asarray([label_map.label2id[r.label] for r in records])
    cv = evaluate(y[held], oof[held], label_map) if held.any() else {}
    per_class = per_class_report(y[held], oof[held].argmax(1), label_map) if held.any() else []
    rundir.write_oof(run / "oof.csv", records, fold_of, oof, label_map)
    summary = {"status": "finished", "cv": cv, "folds": fold_rows, "per_class": per_class,
               "labels": list(label_map.labels), "no_relation": label_map.no_relation, **extra}
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    rundir.write_state(run, "finished", folds_done=rundir.folds_done(run))
    if cv:
        echo(f"CV (out-of-fold, {int(held.sum()):,} rows): micro-F1 {cv['micro_f1']:.2f}  AUPRC {cv['auprc']:.2f}  "
             f"accuracy {cv['accuracy']:.4f}")
    return summary
