"""Where a backbone comes from (`--model`): checked in milliseconds, before anything is created.

`scratch`, a local model directory, or a Hugging Face hub name (`owner/name`). A path that exists
on disk (a symlink included, even a broken or looping one) is always local: it never becomes a
hub request. A local directory needs a readable config.json and whole safetensors weights (rekit
never loads unsafe weights). Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from rekit.errors import RekitError
from rekit.modeling.integrity import UNSAFE_WEIGHT_FILES, safetensors_header

# owner/name as the hub spells it: letters, digits, '-', '_', '.'; no '--' or '..'.
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_hub_name(name: str) -> bool:
    return bool(HUB_NAME.fullmatch(name)) and "--" not in name and ".." not in name and len(name) <= 96


def check_model_source(name: str, flag: str = "--model") -> str:
    """'scratch', 'local' or 'hub' for a usable `--model`; a one-line RekitError otherwise."""
    if name == "scratch":
        return "scratch"
    path = Path(name).expanduser()
    if os.path.lexists(path):
        check_local_model(path, flag)
        return "local"
    if name.startswith(("/", "./", "../", "~")) or name.endswith("/") or "\\" in name or name.count("/") > 1:
        raise RekitError(f"{flag} {name}: no such directory")
    if not is_hub_name(name):
        raise RekitError(f"{flag} {name!r} is neither a local model directory nor a Hugging Face hub name "
                         "(owner/name), nor 'scratch'")
    return "hub"


def check_local_model(path: Path, flag: str = "--model") -> None:
    """A local backbone directory that transformers can load with safetensors only."""
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise RekitError(f"{flag} {path}: a broken symbolic link (its target does not exist)") from None
    except (RuntimeError, OSError) as e:  # Python 3.11 reports a symlink loop as RuntimeError
        raise RekitError(f"{flag} {path}: cannot resolve the path ({str(e).splitlines()[0]}); a symbolic link loop?") from None
    if not real.is_dir():
        raise RekitError(f"{flag} {path} is a file; pass the model's directory (with config.json and weights)")
    config = real / "config.json"
    if not config.is_file():
        raise RekitError(f"{flag} {path}: no config.json there; not a Hugging Face model directory")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except OSError as e:
        raise RekitError(f"{config}: cannot read ({e.strerror})") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise RekitError(f"{config}: not valid JSON ({e})") from None
    weights = sorted(real.glob("*.safetensors"))
    if not weights:
        unsafe = [n for n in UNSAFE_WEIGHT_FILES if (real / n).exists()]
        if unsafe:
            raise RekitError(f"{flag} {path}: its weights are only in {unsafe[0]} (pickle), which rekit never loads; "
                             "convert them to model.safetensors (save_pretrained with safe_serialization)")
        raise RekitError(f"{flag} {path}: no weights there (model.safetensors)")
    for w in weights:
        safetensors_header(w)
