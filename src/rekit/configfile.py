"""One config file for the whole pipeline: the sections each command reads (`--config FILE`).

    data: model: train:   rekit train (and the base config of rekit tune); flat keys are theirs too
    pretrain:             rekit pretrain, with model.scratch_size / scratch_vocab_size /
                          scratch_tokenizer (the scratch encoder it builds), data.train and data's
                          read options (how that file is read)
    distill:              rekit distill, with the model/train options a student may change
    tune:                 rekit tune only (`rekit tune` splits it off; the others refuse a search space)

Whichever command reads it, the whole file is checked: an unknown section or key, or a wrong
value, is one line naming the file. Each command then takes only what it uses, and the flags
given on the command line win. See configs/offline-klue.yaml.

Public API:
    data = load(path)                                  # the checked mapping
    run_options(data, ("scratch_size", "train"))       # data/model/train options it sets, converted
    section(data, "pretrain")                          # the keys a command's section sets, converted
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rekit.config import COMMAND_SECTIONS, RunConfig, check_value, given_options, read_yaml, section_of
from rekit.errors import ConfigError


def load(path: str | Path) -> dict:
    """The file's mapping, every section checked (other commands' ones too)."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of options")
    try:
        RunConfig.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return data


def run_options(data: dict, names: Iterable[str] | None = None) -> dict:
    """The data/model/train options (all, or those among `names`) that the checked mapping sets:
    name -> converted value."""
    keep = None if names is None else set(names)
    return {name: check_value(name, value, where) for name, (value, where) in given_options(data).items()
            if keep is None or name in keep}


def section(data: dict, name: str) -> dict:
    """The settings a command's section (pretrain, distill) of the (checked) mapping sets: name -> value."""
    raw = {str(k).replace("-", "_"): v for k, v in section_of(data, name).items()}
    settings = COMMAND_SECTIONS[name].from_dict(raw)
    return {k: getattr(settings, k) for k in raw}
