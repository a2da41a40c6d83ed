"""Check a saved model directory before the long work: every file it needs is there and readable,
every safetensors file is whole, and the label files agree with the classifier's outputs.

Reads only JSON files and safetensors headers (no weights, no torch), so checking all fold
models of a run takes milliseconds. Each problem is one line naming the file (`ModelFileError`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from rekit.data.labels import LabelMap
from rekit.errors import RekitError
from rekit.rundir import LABELS_FILE, SPEC_FILE, WEIGHTS_FILE, weight_files
from rekit.rundir import MODEL_CONFIG_FILE as CONFIG_FILE

UNSAFE_WEIGHT_FILES = ("pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


class ModelFileError(RekitError):
    """A model or run file that is missing, truncated or inconsistent."""


def safetensors_header(path: Path) -> dict[str, dict]:
    """{tensor name: {"dtype", "shape", "data_offsets"}} of a safetensors file whose header and
    size are consistent; ModelFileError for a truncated, padded or non-safetensors file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 2 or n > min(_MAX_HEADER, size - 8):
                raise ModelFileError(f"{path}: not a safetensors file, or truncated ({size:,} bytes)")
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror})") from None
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(f"{path}: corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: corrupt safetensors header")
    header.pop("__metadata__", None)
    end = 0
    for name, t in header.items():
        try:
            start, stop = (int(x) for x in t["data_offsets"])
            count = 1
            for dim in t["shape"]:
                count *= int(dim)
            nbytes = count * _DTYPE_BYTES.get(t["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{path}: corrupt safetensors header (tensor {name})") from None
        if stop - start != nbytes and t["dtype"] in _DTYPE_BYTES:
            raise ModelFileError(f"{path}: corrupt safetensors header (tensor {name} has the wrong size)")
        end = max(end, stop)
    if 8 + n + end != size:
        raise ModelFileError(f"{path}: {size:,} bytes where its header describes {8 + n + end:,}: the file is "
                             "truncated or damaged (copy it again, or retrain)")
    return header


def _json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror})") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _output_size(headers: dict[Path, dict]) -> tuple[Path, int] | None:
    """(file, number of classes) from the classifier's last bias (`...head.out.bias`, or `out.bias`
    in a file of its own whose name says head): the model's real number of outputs."""
    for path, header in headers.items():
        for name, t in header.items():
            parts = name.split(".")
            if parts[-2:] == ["out", "bias"] and ("head" in parts or "head" in path.stem) and len(t["shape"]) == 1:
                return path, int(t["shape"][0])
    return None


def check_model_dir(d: str | Path) -> LabelMap:
    """A fold (or single) model directory that `REModel.load` will load; returns its label map."""
    d = Path(d)
    for name in (SPEC_FILE, LABELS_FILE, CONFIG_FILE):
        if not (d / name).is_file():
            raise ModelFileError(f"{d} is not a complete rekit model directory: {name} is missing")
    spec = _json_object(d / SPEC_FILE)
    n_labels = spec.get("n_labels")
    if not isinstance(n_labels, int) or isinstance(n_labels, bool) or n_labels < 1:
        raise ModelFileError(f"{d / SPEC_FILE}: n_labels must be a positive integer, found {n_labels!r}")
    _json_object(d / CONFIG_FILE)
    label_map = LabelMap.load(d / LABELS_FILE)
    if n_labels != len(label_map):
        raise ModelFileError(f"{d / SPEC_FILE} says n_labels {n_labels} but {d / LABELS_FILE} lists "
                             f"{len(label_map)} labels; the two files do not belong together")
    files = weight_files(d)
    if not (d / WEIGHTS_FILE).is_file():  # the encoder; head.safetensors alone is not a model
        unsafe = [n for n in UNSAFE_WEIGHT_FILES if (d / n).exists()]
        why = f" (only {unsafe[0]}, a pickle, which rekit never loads)" if unsafe else ""
        raise ModelFileError(f"{d} is not a rekit model directory: {WEIGHTS_FILE} is missing{why}")
    out = _output_size({p: safetensors_header(p) for p in files})
    if out is not None and out[1] != len(label_map):
        raise ModelFileError(f"{out[0]}: the classifier has {out[1]} outputs but {d / LABELS_FILE} lists "
                             f"{len(label_map)} labels")
    return label_map
