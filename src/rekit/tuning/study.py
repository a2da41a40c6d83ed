"""The study directory and the study in its storage: create or join, check, export the best config.

    STUDY_DIR/
      study.json      what the study searches (base config, settings, space) and where it is stored
      study.db        the SQLite storage (default; absent with --storage URL)
      trial-0000/     one normal run directory per trial (config.yaml, metrics.jsonl, fold-K/, ...)
      logs/           worker-K.log of each worker process (--workers > 1)

The search itself (base config minus machine-local paths, space, metric, folds) is also stored in
the study's own attributes, so a worker joining from another machine through a shared database
is refused when it would search something else under the same name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rekit.config import RunConfig
from rekit.data.formats.source import check_file
from rekit.errors import ConfigError
from rekit.io import atomic_write_text
from rekit.tuning.settings import TuneSettings, read_config_file
from rekit.tuning.space import Param, default_space, parse_space
from rekit.tuning.storage import (
    STORAGE_ENV,
    default_url,
    has_password,
    mask,
    open_storage,
    url_for,
)

META = "study.json"
SIGNATURE_ATTR = "rekit_search"
# Config options that may differ between machines joining one study (paths, devices, display).
LOCAL_KEYS = ("train", "output", "overwrite", "progress", "device", "eval_batch_size", "report_to")


@dataclass
class Study:
    dir: Path
    name: str
    url: str
    base: dict  # RunConfig.to_dict() of the config every trial starts from
    settings: TuneSettings
    params: list[Param]

    def signature(self) -> dict:
        """What makes two studies the same search."""
        base = {sec: {k: v for k, v in vals.items() if k not in LOCAL_KEYS} for sec, vals in self.base.items()}
        return {"base": base, "space": self.settings.space, "metric": self.settings.metric,
                "folds": sorted(self.settings.folds)}

    def storage(self):
        return open_storage(self.url, self.settings.heartbeat, self.settings.retries)

    def load(self, sampler=None, pruner=None):
        import optuna

        return optuna.load_study(study_name=self.name, storage=self.storage(), sampler=sampler, pruner=pruner)

    def trial_dir(self, number: int) -> Path:
        return self.dir / f"trial-{number:04d}"


def trial_config(base: dict, overrides: dict, output: Path | str, only_folds: list, progress: bool | None = None
                 ) -> RunConfig:
    """The base config with a trial's values, its own run directory and the folds to run."""
    flags: dict[str, Any] = {**overrides, "output": str(output), "only_folds": list(only_folds), "overwrite": False}
    if progress is not None:
        flags["progress"] = progress
    return RunConfig.from_dict(base, flags)


def _read_meta(study_dir: Path) -> dict:
    try:
        return json.loads((study_dir / META).read_text(encoding="utf-8"))
    except OSError:
        raise ConfigError(f"{study_dir} is not a study directory (no {META}); start one with "
                          f"rekit tune --config FILE --output {study_dir}") from None
    except ValueError as e:
        raise ConfigError(f"{study_dir / META}: not valid JSON ({e})") from None


def is_study_dir(path: Path) -> bool:
    return (Path(path) / META).is_file()


def stored_url(meta: dict, study_dir: Path, given: str | None) -> str:
    """The storage URL of a recorded study: the one given, else $REKIT_TUNE_STORAGE, else the recorded
    one (None there means SQLite in the study directory, wherever that directory now is)."""
    url = given or os.environ.get(STORAGE_ENV)
    if url:
        return url
    if meta.get("storage") is None:
        return default_url(study_dir)
    if meta.get("storage_masked"):
        raise ConfigError(f"study {meta.get('study_name')!r} is stored at {meta['storage']}; pass --storage URL "
                          f"(with the password) or set {STORAGE_ENV}")
    return meta["storage"]


def open_study(study_dir: Path, storage: str | None = None, tune_flags: dict | None = None) -> Study:
    """An existing study, as its study.json describes it."""
    study_dir = Path(study_dir)
    meta = _read_meta(study_dir)
    settings = TuneSettings.from_dict({**meta["settings"], "storage": None}, tune_flags)
    url = stored_url(meta, study_dir, storage or settings.storage)
    settings.storage = url
    return Study(study_dir, meta["study_name"], url, meta["base"], settings, parse_space(settings.space))


def prepare(config: str | None, base_flags: dict, tune_flags: dict, echo=print) -> Study:
    """Create the study (or join/resume it) from a config file and flags; returns it ready to run.
    Everything is checked before anything is written or removed (--overwrite)."""
    base_dict, tune_dict = read_config_file(config) if config else ({}, {})
    cfg = RunConfig.from_dict(base_dict, base_flags)
    if not cfg.train.output:
        raise ConfigError("no study directory: pass --output STUDY_DIR (or train.output in the config file)")
    study_dir = Path(cfg.train.output)
    if study_dir.exists() and not study_dir.is_dir():
        raise ConfigError(f"--output {study_dir} exists and is not a directory")
    overwrite = cfg.train.overwrite
    resuming = is_study_dir(study_dir) and not overwrite
    if is_study_dir(study_dir) and not config:
        # `rekit tune --output DIR`: carry on with what the study was started with (+ flags).
        meta = _read_meta(study_dir)
        cfg = RunConfig.from_dict(meta["base"], {**base_flags, "output": str(study_dir)})
        tune_dict = {**meta["settings"], "storage": stored_url(meta, study_dir, (tune_flags or {}).get("storage"))}
    if not tune_dict.get("space"):
        tune_dict = {**tune_dict, "space": default_space(cfg.model.model)}
        echo("no tune.space given: searching the default space (saved with the study; a tune.space section in "
             "--config replaces it)")
    if cfg.data.train:
        check_file(Path(cfg.data.train))  # a mistyped path: no study directory, no trial started
    base = dataclasses.replace(cfg.train, output=str(study_dir), overwrite=False)
    cfg = RunConfig(cfg.data, cfg.model, base)
    settings = TuneSettings.from_dict(tune_dict, tune_flags)
    params = parse_space(settings.space, cfg.to_dict())  # all checked before --overwrite removes anything
    if overwrite and study_dir.is_dir() and any(study_dir.iterdir()):
        shutil.rmtree(study_dir)
    if not resuming and study_dir.is_dir() and any(study_dir.iterdir()):
        raise ConfigError(f"{study_dir} is not empty and holds no study; pass another --output (or --overwrite)")
    url = url_for(study_dir, settings.storage)
    default_storage = url == default_url(study_dir)
    name = settings.study_name or study_dir.resolve().name
    study = Study(study_dir, name, url, cfg.to_dict(), settings, params)
    if is_study_dir(study_dir) and _read_meta(study_dir).get("study_name") != name:
        raise ConfigError(f"{study_dir} holds study {_read_meta(study_dir)['study_name']!r}, not {name!r}; "
                          "use one study directory per study")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # rekit prints its own lines
    study_dir.mkdir(parents=True, exist_ok=True)
    storage = study.storage()
    if cfg.train.overwrite and settings.storage:
        try:
            optuna.delete_study(study_name=name, storage=storage)
            echo(f"deleted study {name!r} from {mask(url)} (--overwrite)")
        except KeyError:
            pass
    ost = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    stored = ost.user_attrs.get(SIGNATURE_ATTR)
    if stored is None:
        ost.set_user_attr(SIGNATURE_ATTR, study.signature())
    elif stored != study.signature():
        raise ConfigError(f"study {name!r} in {mask(url)} searches something else (base config, space, metric or "
                          "folds differ); use another --study-name / --output, or --overwrite to start over")
    meta = {"study_name": name, "storage": None if default_storage else mask(url), "storage_masked": has_password(url),
            "base": study.base, "settings": {**dataclasses.asdict(settings), "storage": None}}
    atomic_write_text(study_dir / META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return study


def format_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def describe(trial, metric: str) -> str:
    """One line for a finished trial."""
    state = trial.state.name
    head = f"trial {trial.number}"
    if "failed_trial" in trial.system_attrs:  # set by the retry callback on a re-queued copy
        head += f" (re-run of trial {trial.system_attrs['failed_trial']})"
    if state == "COMPLETE":
        return f"{head}: {metric} {trial.value:.4g}  ({format_params(trial.params)})"
    if state == "PRUNED":
        return f"{head}: pruned at {trial.user_attrs.get('pruned_at') or '?'}  ({format_params(trial.params)})"
    if state == "FAIL":
        return f"{head}: failed: {trial.user_attrs.get('error') or 'no result (its worker stopped)'}"
    return f"{head}: {state.lower()}"


def export_best(study: Study, path: str | Path) -> tuple[Any, RunConfig]:
    """Write the best trial's config for `rekit train --config` (all folds, output STUDY_DIR/best)."""
    ost = study.load()
    try:
        best = ost.best_trial
    except ValueError:
        raise ConfigError(f"study {study.name!r} has no completed trial yet; nothing to export") from None
    cfg = trial_config(study.base, best.params, study.dir / "best", only_folds=[])
    folds = study.settings.folds
    header = (f"# rekit tune: best of study '{study.name}' ({study.dir}): trial {best.number}, "
              f"{study.settings.metric} {best.value:.4g} "
              + (f"(mean over folds {folds})" if folds else "(out-of-fold CV)") + "\n"
              f"# searched: {format_params(best.params)}\n"
              f"# train it on every fold: rekit train --config {path}\n")
    atomic_write_text(path, header + cfg.to_yaml())
    return best, cfg
