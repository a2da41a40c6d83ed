"""Typed values from YAML files, command-line flags and HPO trials: a small converter over dataclass fields.

Every option of rekit is a dataclass field declared with `option(default, help, ...)`: its type
annotation, its limits (`low`/`high`) and its choices are the one definition that the CLI flag,
the YAML key and the checks are all generated from. `coerce_fields(obj, section)` (called from
each config dataclass's `__post_init__`) converts what is unambiguous and refuses the rest in one
line that names the key, the value and what is expected:

    lr: 2e-5         (YAML reads a string)  -> 2e-05
    epochs: "3"                              -> 3
    folds: 2.0                               -> 2;  folds: 2.5 -> "train.folds: expected an integer >= 1, got 2.5"
    only_folds: 0                            -> [0]
    trust_remote_code: "false"               -> False (only booleans and true/false/yes/no; never truthiness)
    model: 123                               -> "model.model: expected text, got 123"

Why not pydantic (installed): its import costs ~50 ms on every `rekit` start, its messages span
several lines, and the dataclasses already carry the CLI metadata; the rules above fit in this
module. This module imports nothing from rekit but `errors`, so every layer (data/ included) may
use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rekit.errors import ConfigError

TRUE, FALSE = ("true", "yes"), ("false", "no")


def option(default: Any, help: str, choices: tuple | None = None, *, flag: Any = True, low: float | None = None,
           high: float | None = None, low_open: bool = False, high_open: bool = False,
           parse: Callable[[Any, str], Any] | None = None) -> Any:
    """A dataclass field with everything the CLI, the YAML reader and the checks need.

    low/high: inclusive bounds (exclusive with low_open/high_open); parse(value, where): a custom
    converter that returns the value or raises ConfigError. A list or dict default is copied per instance.
    """
    meta = {"help": help, "choices": choices, "flag": flag, "low": low, "high": high, "low_open": low_open,
            "high_open": high_open, "parse": parse}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bad(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {value!r}")


def kind_of(annotation: Any) -> tuple[str, bool]:
    """('int' | 'float' | 'str' | 'bool' | 'list' | 'dict' | 'any', optional) from a field's annotation."""
    text = str(annotation).replace(" ", "").replace("typing.", "")
    parts = text.split("|")
    optional = "None" in parts or text.startswith("Optional[")
    base = next((p for p in parts if p != "None"), "Any")
    base = base.split("[", 1)[0].lower()
    return (base if base in ("int", "float", "str", "bool", "list", "dict") else "any"), optional


def _bounds_text(meta: Mapping[str, Any]) -> str:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f" in {'(' if meta.get('low_open') else '['}{low:g}, {high:g}{')' if meta.get('high_open') else ']'}"
    if low is not None:
        return f" {'>' if meta.get('low_open') else '>='} {low:g}"
    if high is not None:
        return f" {'<' if meta.get('high_open') else '<='} {high:g}"
    return ""


def expected(kind: str, meta: Mapping[str, Any]) -> str:
    """What a field accepts, in words: 'a positive number', 'an integer >= 1', 'true or false'."""
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    if kind == "float" and meta.get("low") == 0 and meta.get("low_open") and meta.get("high") is None:
        return "a positive number"
    bounds = _bounds_text(meta)
    return {"int": "an integer" + bounds, "float": "a number" + bounds, "bool": "true or false (or yes/no)",
            "str": "text", "list": "a list of integers" + bounds, "dict": "a mapping of KEY: VALUE"}.get(kind, "a value")


def _in_bounds(x: float, meta: Mapping[str, Any]) -> bool:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (x <= low if meta.get("low_open") else x < low):
        return False
    return not (high is not None and (x >= high if meta.get("high_open") else x > high))


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    raise ValueError


def to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    x = float(value.strip()) if isinstance(value, str) else float(value)
    if not math.isfinite(x):
        raise ValueError
    return x


def to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    x = to_float(value)  # "64", 64.0, "1e3" are whole numbers; 2.5 is not
    if not x.is_integer():
        raise ValueError
    return int(x)


def to_int_list(value: Any) -> list[int]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    elif not isinstance(value, (list, tuple)):
        value = [value]  # only_folds: 0 -> [0]
    return [to_int(v) for v in value]


def to_dict(value: Any) -> dict:
    """A mapping; also KEY=VALUE strings ('a=b c=d' or ['a=b', 'c=d']) as the command line gives them."""
    if isinstance(value, str):
        value = value.split()
    if isinstance(value, (list, tuple)):
        pairs = [v.split("=", 1) if isinstance(v, str) and "=" in v else None for v in value]
        if any(p is None or not p[0].strip() for p in pairs):
            raise ValueError
        value = {k.strip(): v.strip() for k, v in pairs}  # type: ignore[misc]
    if not isinstance(value, dict):
        raise ValueError
    return value


_CONVERT: dict[str, Callable[[Any], Any]] = {"bool": to_bool, "float": to_float, "int": to_int,
                                              "list": to_int_list, "dict": to_dict}


def convert(f: dataclasses.Field, value: Any, where: str) -> Any:
    """One field's value converted and checked; ConfigError (one line) if it cannot be."""
    meta, (kind, optional) = f.metadata, kind_of(f.type)
    if value is None and (optional or kind == "any"):
        return None
    if meta.get("parse"):
        return meta["parse"](value, where)
    if kind == "str":
        if not isinstance(value, str):
            raise bad(where, expected(kind, meta), value)
    elif kind in _CONVERT:
        given = value
        try:
            value = _CONVERT[kind](value)
        except (ValueError, TypeError, OverflowError):
            raise bad(where, expected(kind, meta), given) from None
        numbers = value if kind == "list" else [value] if kind in ("int", "float") else []
        if any(not _in_bounds(x, meta) for x in numbers):
            raise bad(where, expected(kind, meta), given)
    choices = meta.get("choices")
    if choices and value not in choices:
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return value


def coerce_fields(obj: Any, label: Callable[[str], str]) -> None:
    """Convert every field of a dataclass instance in place (see the module docstring)."""
    for f in dataclasses.fields(obj):
        setattr(obj, f.name, convert(f, getattr(obj, f.name), label(f.name)))


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def unknown_key(key: str, known: Iterable[str], what: str = "config key", hint: str = "",
                aliases: dict[str, str] | None = None) -> ConfigError:
    """'unknown config key 'lrr'; did you mean 'lr'?' (difflib's closest valid key, or the key that
    another tool's name for the option means: aliases such as learning_rate -> lr)."""
    aliases = aliases or {}
    name = key.split(".")[-1]
    close = difflib.get_close_matches(name, [*known, *aliases], n=1, cutoff=0.6)
    close = [aliases.get(c, c) for c in close]
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    tail = f"; did you mean {prefix + close[0]!r}?" if close else (f"; {hint}" if hint else "")
    return ConfigError(f"unknown {what} {key!r}{tail}")


def build(klass: type, values: dict, label: Callable[[str], str], what: str = "config key", hint: str = "") -> Any:
    """An instance of the dataclass `klass` from a plain dict: unknown keys refused with the closest
    valid one, each value converted under its own label (e.g. 'train.lr' or '--lr')."""
    fields = {f.name: f for f in dataclasses.fields(klass)}
    kwargs = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise unknown_key(label(str(key)), fields, what, hint)
        kwargs[name] = convert(fields[name], value, label(name))
    return klass(**kwargs)
