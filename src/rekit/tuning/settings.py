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
is split off here first. Every setting is also a flag of `rekit tune` (the flag wins); `TuneSettings`
is defined with the other options in rekit/config.py. Without a `space`, the study searches
`tuning.space.DEFAULT_SPACE`.
"""

from __future__ import annotations

from pathlib import Path

from rekit.config import MIN_HEARTBEAT_S, OBJECTIVE_METRICS, TuneSettings, read_yaml
from rekit.errors import ConfigError

__all__ = ["MIN_HEARTBEAT_S", "OBJECTIVE_METRICS", "TuneSettings", "read_config_file", "split_config"]


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
