"""The `tune:` section of a config file: how to search (settings) and what to search (space).

    data: {train: data/train.csv}
    model: {model: scratch, scratch_size: tiny}
    train: {output: runs/study, folds: 5, epochs: 3}
    tune:
      trials: 30                # trials that complete or are pruned (failed ones do not count)
      metric: micro_f1          # objective (maximised)
      folds: [0, 1]             # tune on these folds only (faster); default: all folds
      space:
        lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}
        batch_size: {type: categorical, choices: [16, 32, 64]}
        optimizer: [adam, adamw]                # a plain list is a categorical

The `data/model/train` sections are the base config every trial starts from (the same a
`rekit train --config` reads); `RunConfig.from_dict` rejects unknown keys, so the `tune:` section
is split off here first. Every setting is also a flag of `rekit tune` (the flag wins).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rekit.config import described, read_yaml
from rekit.errors import ConfigError

OBJECTIVE_METRICS = ("micro_f1", "auprc", "accuracy", "macro_f1")  # all maximised
# Measured: with a 1 s heartbeat (2 s grace), 8 workers on 2 busy cores had a healthy trial failed as
# stale; heartbeats are cheap, but a long grace only delays recovery of workers on other machines.
MIN_HEARTBEAT_S = 10


def _s(default: Any, flag: str, help: str, choices: tuple | None = None):
    return described(default, flag=flag, help=help, choices=choices)


@dataclass
class TuneSettings:
    trials: int = _s(20, "--trials", "trials to finish (complete or pruned); a resumed study runs only the rest")
    timeout: float | None = _s(None, "--timeout", "start no new trial after this many seconds")
    metric: str = _s("micro_f1", "--tune-metric", "objective to maximise", OBJECTIVE_METRICS)
    folds: list = _s([], "--tune-folds", "tune on these fold indices only (the objective is then the mean of "
                     "their best scores); default: all folds (the out-of-fold CV score)")
    pruner: str = _s("median", "--pruner", "stop a trial whose score after an evaluation is below the median "
                     "of earlier trials at the same fold and evaluation", ("median", "none"))
    startup_trials: int = _s(5, "--pruner-startup-trials", "finished trials before pruning starts")
    warmup_evals: int = _s(1, "--pruner-warmup-evals", "evaluations of each fold before it can be pruned")
    sampler: str = _s("tpe", "--sampler", "how trials pick values", ("tpe", "random"))
    seed: int | None = _s(None, "--tune-seed", "sampler seed (each worker adds its index)")
    storage: str | None = _s(None, "--storage", "database URL shared by workers on several machines, e.g. "
                             "postgresql://user@host/db; default: sqlite in the study directory")
    study_name: str | None = _s(None, "--study-name", "study name in the storage; default: the study directory's name")
    workers: str = _s("1", "--workers", "worker processes on this machine ('auto': one per GPU, else 1)")
    heartbeat: int = _s(60, "--heartbeat", "seconds between a running trial's heartbeats; a trial silent for "
                        "twice as long (its worker died) is failed and re-queued")
    retries: int = _s(2, "--retries", "times a trial whose worker died is re-queued")
    space: dict = _s({}, "", "the search space (config file only)")

    def __post_init__(self):
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {self.trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout}")
        if self.heartbeat < MIN_HEARTBEAT_S:
            raise ConfigError(f"--heartbeat must be >= {MIN_HEARTBEAT_S} seconds (a shorter one can fail a healthy "
                              f"trial whose heartbeat is late on a busy machine), got {self.heartbeat}")
        if self.retries < 0 or self.startup_trials < 0 or self.warmup_evals < 0:
            raise ConfigError("--retries, --pruner-startup-trials and --pruner-warmup-evals must be >= 0")
        if not (str(self.workers) == "auto" or str(self.workers).isdigit() and int(self.workers) >= 1):
            raise ConfigError(f"--workers must be a number >= 1 or 'auto', got {self.workers!r}")
        if not isinstance(self.space, dict):
            raise ConfigError("tune.space must be a mapping of config option -> distribution")
        if any(not isinstance(k, int) or k < 0 for k in self.folds):
            raise ConfigError(f"tune folds must be fold indices, got {self.folds}")
        for f in dataclasses.fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{f.metadata['flag']} must be one of {', '.join(choices)}; got {value!r}")
        self.workers = str(self.workers)

    @classmethod
    def from_dict(cls, d: dict | None, overrides: dict | None = None) -> TuneSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        merged = {**(d or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"unknown tune setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
        try:
            return cls(**merged)
        except TypeError as e:
            raise ConfigError(f"tune settings: {e}") from None


def split_config(data: dict, where: str = "config") -> tuple[dict, dict]:
    """(base config for RunConfig.from_dict, the `tune:` section)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a config file must be a mapping of options")
    base = {k: v for k, v in data.items() if k != "tune"}
    tune = data.get("tune") or {}
    if not isinstance(tune, dict):
        raise ConfigError(f"{where}: the tune section must be a mapping")
    return base, tune


def read_config_file(path: str | Path) -> tuple[dict, dict]:
    """Read a YAML config with an optional `tune:` section -> (base, tune section)."""
    return split_config(read_yaml(path), str(path))
