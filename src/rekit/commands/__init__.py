"""One module per `rekit` subcommand, each with `register(subparsers)`; shared flag helpers here.

Config flags are generated from the typed config dataclasses, so every option has one
definition (name, type, default, help) whether it comes from a flag, a YAML file or a trial.
"""

from __future__ import annotations

import argparse
import dataclasses

from rekit.config import SECTIONS, DataConfig
from rekit.convert import build, flag_name, kind_of

READ_FIELDS = ("format", "on_mismatch", "on_bad_row", "offsets", "columns", "entity_keys", "strict", "max_skip_share")


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def add_field_flag(group, f: dataclasses.Field, default, flag: str | None = None, dest: str | None = None,
                   metavar: str | None = None) -> None:
    """One flag for a typed dataclass field: choices and the default shown in the help, and
    default=SUPPRESS so only flags the user passed reach the config. Values stay text here: the
    config's converter (rekit.convert) turns them into numbers and checks them, with the same
    one-line message for a flag as for a YAML key."""
    flag = flag or "--" + f.name.replace("_", "-")
    help_text = f.metadata.get("help", "")
    if default not in (None, {}, []):
        help_text += f" (default: {default})"
    kw: dict = {"dest": dest or f.name, "default": argparse.SUPPRESS}
    if metavar:
        kw["metavar"] = metavar
    kind, _ = kind_of(f.type)
    if f.metadata.get("choices"):
        kw["choices"] = f.metadata["choices"]
    if kind == "bool":
        kw["action"] = argparse.BooleanOptionalAction
    elif kind == "dict":
        kw.update(action="extend", nargs="+", type=_key_value, metavar="KEY=VALUE")
        help_text += f"; several pairs after one flag ({flag} a=b c=d) or the flag repeated"
    elif kind == "list":
        kw.update(nargs="+", metavar="K")
    group.add_argument(flag, help=help_text.replace("%", "%%"), **kw)


def add_config_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None,
                     sections: tuple[str, ...] = ("data", "model", "train")) -> None:
    """One flag per config field (`max_length` -> `--max-length`), grouped by section."""
    for name in sections:
        klass = SECTIONS[name]
        group = parser.add_argument_group(f"{name} options")
        defaults = klass()
        for f in dataclasses.fields(klass):
            if f.metadata.get("flag", True) and (only is None or f.name in only):
                add_field_flag(group, f, getattr(defaults, f.name))


_ALL_SECTIONS = tuple(SECTIONS.values())


def explicit_flags(args: argparse.Namespace, klasses=_ALL_SECTIONS) -> dict:
    """Only the config flags the user actually passed (so a config file's values survive)."""
    names = {f.name for k in klasses for f in dataclasses.fields(k)}
    out = {k: v for k, v in vars(args).items() if k in names}
    for k, v in list(out.items()):
        if isinstance(v, list) and v and isinstance(v[0], tuple):
            out[k] = dict(v)
    return out


def read_options(args: argparse.Namespace):
    from rekit.data.readers import options_from_config

    d = build(DataConfig, {k: v for k, v in explicit_flags(args, (DataConfig,)).items() if k in READ_FIELDS}, flag_name)
    return options_from_config(d)
