"""The search space: config option -> distribution, parsed from `tune.space`, sampled per trial.

    lr:            {type: loguniform, low: 1.0e-5, high: 1.0e-3}
    warmup_ratio:  {type: uniform, low: 0.0, high: 0.3}        # or type: float (log: true, step: 0.05)
    epochs:        {type: int, low: 2, high: 6}               # step, log as for float
    batch_size:    {type: categorical, choices: [16, 32, 64]}
    marker:        [typed_entity_marker_punct, entity_marker]  # a list is a categorical

Any model/train option can be searched except those that say where things are or how a run is
shown (paths, devices, progress): a trial's config is the base config plus the sampled values,
so each sampled value goes through the same validation as a `rekit train` flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rekit.config import RunConfig, field_owners
from rekit.errors import ConfigError

TYPES = ("float", "uniform", "loguniform", "int", "categorical")
# Options that are not hyper-parameters: where data and runs are, what is shown, which folds run
# (tune.folds picks those), and what the folds are (a changed split makes scores incomparable).
NOT_SEARCHABLE = frozenset({
    "train", "format", "on_mismatch", "on_bad_row", "offsets", "columns", "entity_keys", "max_train_samples",
    "strict", "max_skip_share",
    "labels", "no_relation_label", "trust_remote_code", "output", "overwrite", "folds", "split", "valid_ratio",
    "only_folds", "device", "progress", "report_to", "eval_batch_size", "metric", "save_every", "oom_retry",
})


def default_space(model: str) -> dict:
    """What people sweep by hand, used when a study is given no `tune.space` (saved with the study,
    so a resumed one searches the same). A model trained from random init wants larger steps."""
    lr = (1e-4, 3e-3) if model == "scratch" else (1e-5, 1e-4)
    return {
        "lr": {"type": "loguniform", "low": lr[0], "high": lr[1]},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        "epochs": {"type": "int", "low": 2, "high": 5},
        "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
        "optimizer": {"type": "categorical", "choices": ["adamw", "adam"]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
    }


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None  # a range's ends are checked when it is parsed
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list:
        """Values to validate up front: every choice, or both ends of a range."""
        if self.type == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]

    def describe(self) -> str:
        if self.type == "categorical":
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "") + \
            (f" step {self.step:g}" if self.step else "")


def _number(spec: dict, key: str, name: str) -> float:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"tune.space.{name}: '{key}' must be a number, got {value!r}")
    return value


def parse_param(name: str, spec: Any) -> Param:
    owners = field_owners()
    if name not in owners:
        raise ConfigError(f"tune.space: unknown config option {name!r}; see `rekit train --help`")
    if name in NOT_SEARCHABLE:
        raise ConfigError(f"tune.space: {name!r} is not a hyper-parameter and cannot be searched")
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"tune.space.{name}: expected a list of choices or {{type: ..., ...}} with type one of "
                          f"{', '.join(TYPES)}")
    kind = spec["type"]
    extra = set(spec) - {"type", "low", "high", "step", "log", "choices"}
    if kind not in TYPES:
        raise ConfigError(f"tune.space.{name}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    if extra:
        raise ConfigError(f"tune.space.{name}: unknown key(s) {', '.join(sorted(extra))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"tune.space.{name}: 'choices' must be a non-empty list")
        if any(c is not None and not isinstance(c, (str, int, float, bool)) for c in choices):
            raise ConfigError(f"tune.space.{name}: choices must be plain values (str, number, bool, null)")
        return Param(name, "categorical", choices=tuple(choices))
    low, high = _number(spec, "low", name), _number(spec, "high", name)
    log = bool(spec.get("log", False)) or kind == "loguniform"
    step = spec.get("step")
    if step is not None:
        step = _number(spec, "step", name)
    if low >= high:
        raise ConfigError(f"tune.space.{name}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"tune.space.{name}: a log scale needs low > 0, got {low}")
    if log and step is not None:
        raise ConfigError(f"tune.space.{name}: 'step' and a log scale cannot be combined")
    if kind == "int":
        if any(isinstance(v, float) and not v.is_integer() for v in (low, high, step or 1)):
            raise ConfigError(f"tune.space.{name}: an int range needs whole numbers")
        return Param(name, "int", int(low), int(high), int(step) if step else None, log)
    return Param(name, "float", float(low), float(high), float(step) if step else None, log)


def parse_space(space: dict, base: dict | None = None) -> list[Param]:
    """Parse `tune.space`; each choice and range end is checked against `base` as a real config."""
    if not space:
        raise ConfigError("the search space is empty: add a tune.space section to the config file, e.g. "
                          "tune: {space: {lr: {type: loguniform, low: 1.0e-5, high: 1.0e-3}}}")
    params = [parse_param(str(name), spec) for name, spec in space.items()]
    if base is not None:
        for p in params:
            for value in p.extremes():
                try:
                    RunConfig.from_dict(base, {p.name: value})
                except ConfigError as e:
                    raise ConfigError(f"tune.space.{p.name}: value {value!r} is not valid: {e}") from None
    return params


def sample(trial, params: list[Param]) -> dict[str, Any]:
    """The trial's config overrides, in space order."""
    return {p.name: p.suggest(trial) for p in params}
