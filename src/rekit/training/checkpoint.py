"""The training state of an unfinished fold: save, load, clear. Safetensors + JSON, never pickle.

A fold that stops (crash, kill, Ctrl-C) restarts from its last saved state: model, optimizer,
scheduler, GradScaler, every RNG the loop draws from, the loop's position and the FitResult so
far. `loop.fit` decides what goes in (a nested dict); this module only stores it. Tensors and
arrays go to a safetensors file; everything else (numbers, strings, lists, the optimizer's
nesting, RNG states) to a JSON skeleton whose leaves name the tensors.

Crash safety: `train_state.json` is the commit record. A save writes a new tensor file
(`train_state-<step>.safetensors`, atomically), then the JSON that names it (atomically), then
removes older tensor files, so a kill at any instant leaves the old state or the new one.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rekit.errors import RekitError
from rekit.io import atomic_path, atomic_write_text

STATE_FILE = "train_state.json"
FORMAT = "rekit-train-state/1"
RECORD_KEYS = ("format", "step", "tensors", "state")  # train_state.json's keys, no others
_TENSOR_FILE = re.compile(r"train_state-\d{8}\.safetensors")


# -- nested state <-> (JSON skeleton, flat tensors) ------------------------------------------
class _Packer:
    """Replaces tensors and arrays by references into one flat {key: tensor} dict.

    JSON cannot tell a tuple from a list or keep integer dict keys (the optimizer's state is
    keyed by parameter index), so those get tagged forms. The same tensor reached twice (tied
    weights) is stored once; distinct views of one storage are copied (safetensors refuses
    shared memory).
    """

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self._keys: dict[tuple, str] = {}
        self._storages: set[int] = set()

    def pack(self, obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            return {"__tensor__": self._add(obj, path)}
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": self._add(torch.from_numpy(np.ascontiguousarray(obj)), path)}
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj):
                return {k: self.pack(v, f"{path}.{k}") for k, v in obj.items()}
            return {"__items__": [[k, self.pack(v, f"{path}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.pack(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.pack(v, f"{path}.{i}") for i, v in enumerate(obj)]
        if isinstance(obj, np.generic):
            return obj.item()
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store a {type(obj).__name__} in a training state (at {path or 'top level'})")

    def _add(self, t: torch.Tensor, path: str) -> str:
        t = t.detach()
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if ident in self._keys:
            return self._keys[ident]
        if t.device.type != "cpu":
            t = t.cpu()  # a copy: nothing shared
        elif ident[1] in self._storages and t.numel():
            t = t.clone()
        else:
            t = t.contiguous()
        self._storages.add(ident[1])
        key = path.lstrip(".") or "value"
        self.tensors[key] = t
        self._keys[ident] = key
        return key


def _unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag == "__tensor__":
            return tensors[value]
        if tag == "__ndarray__":
            return tensors[value].numpy()
        if tag == "__tuple__":
            return tuple(_unpack(v, tensors) for v in value)
        if tag == "__items__":
            return {k: _unpack(v, tensors) for k, v in value}
    return {k: _unpack(v, tensors) for k, v in obj.items()}


# -- files ------------------------------------------------------------------------------------
def save_state(fold_dir: Path, step: int, state: dict) -> None:
    """Write `state` (nested dicts/lists of tensors, arrays and JSON values) for optimizer step `step`."""
    from safetensors.torch import save_file

    packer = _Packer()
    skeleton = packer.pack(state, "")
    name = f"train_state-{step:08d}.safetensors"
    with atomic_path(fold_dir / name) as tmp:
        save_file(packer.tensors, str(tmp), metadata={"format": FORMAT, "step": str(step)})
    record = {"format": FORMAT, "step": step, "tensors": name, "state": skeleton}
    atomic_write_text(fold_dir / STATE_FILE, json.dumps(record, separators=(",", ":")) + "\n")  # the commit
    for old in fold_dir.glob("train_state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _record(fold_dir: Path) -> dict | None:
    path = fold_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RekitError(f"{path}: unreadable training state ({e}); delete it to restart this fold") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RekitError(f"{path}: not a rekit training state ({FORMAT}); delete it to restart this fold")
    unknown = sorted(set(record) - set(RECORD_KEYS))
    if unknown or not isinstance(record.get("step"), int) or not isinstance(record.get("state"), dict):
        what = f"unknown key(s) {', '.join(map(repr, unknown))}" if unknown else "a missing or malformed step or state"
        raise RekitError(f"{path}: {what} (expected {', '.join(RECORD_KEYS)}); delete it to restart this fold")
    # The file name comes from disk: accept only our own names (no paths out of the fold directory).
    if not isinstance(record.get("tensors"), str) or not _TENSOR_FILE.fullmatch(record["tensors"]):
        raise RekitError(f"{path}: names an unexpected tensor file {record.get('tensors')!r}")
    return record


def saved_step(fold_dir: Path) -> int | None:
    """The optimizer step of the saved state, or None if there is none (reads only the JSON)."""
    record = _record(fold_dir)
    return None if record is None else int(record["step"])


def check_resumable(run: Path) -> None:
    """Before a resume does any work: every fold's saved training state is readable."""
    for d in sorted(run.glob("fold-*")):
        saved_step(d)


def load_state(fold_dir: Path) -> dict | None:
    """The state saved by `save_state` (tensors on the CPU), or None if the fold has none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    record = _record(fold_dir)
    if record is None:
        return None
    path = fold_dir / record["tensors"]
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise RekitError(f"{path}: cannot read the training state ({e}); delete {fold_dir / STATE_FILE} "
                         "to restart this fold") from None
    try:
        return _unpack(record["state"], tensors)
    except KeyError as e:
        raise RekitError(f"{path}: training state is missing tensor {e}; delete {fold_dir / STATE_FILE} "
                         "to restart this fold") from None


def clear_state(fold_dir: Path) -> None:
    """Remove the fold's training state (the commit record first, so a half-cleared one is no state)."""
    (fold_dir / STATE_FILE).unlink(missing_ok=True)
    for old in fold_dir.glob("train_state-*.safetensors"):
        old.unlink(missing_ok=True)


# -- random number generators ---------------------------------------------------------------
def capture_rng() -> dict:
    """Python's, NumPy's global and torch's (CPU and every CUDA device) generator states."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()  # 624 uint32: JSON, exactly
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np_state = dict(state["numpy"])
    np_state["state"] = {**np_state["state"], "key": np.asarray(np_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    # Resuming on another device (a CUDA run on a CPU) cannot restore those: that replay is not exact anyway.
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
