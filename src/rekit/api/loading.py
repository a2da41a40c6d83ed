"""`rekit.load`: a run, a fold directory or an ONNX export as one predictor.

    model = rekit.load("runs/x")
    model.labels                     # the columns of predict_proba
    model.predict_proba(examples)    # (N, C) float32: the fold models' mean softmax
    model.predict(examples)          # N labels

`examples`: see rekit.api.examples. An ONNX export (`rekit export`) runs on onnxruntime and never
imports torch; the other kinds load the PyTorch fold models (safetensors only, no remote code).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rekit.api.examples import to_records
from rekit.errors import RekitError
from rekit.rundir import SPEC_FILE, model_dirs

ONNX_MANIFEST = "rekit-onnx.json"


class Model:
    """A loaded ensemble (or single fold model) behind one interface, whatever its runtime."""

    def __init__(self, backend, entity_types: Sequence[str] | None = None):
        self.backend = backend  # rekit.ensemble.Ensemble or rekit.export.runtime.OnnxEnsemble
        self.entity_types = list(entity_types) if entity_types else None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.backend.label_map_.labels)

    def predict_proba(self, examples) -> np.ndarray:
        records = to_records(examples, self.entity_types)
        if not records:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.backend.predict_proba(records)

    def predict(self, examples) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(examples).argmax(axis=1)]

    def __repr__(self) -> str:
        return f"<rekit.Model: {type(self.backend).__name__}, {len(self.backend.dirs)} fold models, {len(self.labels)} labels>"


def _entity_types(spec_file: Path) -> list[str] | None:
    try:
        return json.loads(spec_file.read_text(encoding="utf-8")).get("entity_types")
    except (OSError, ValueError):
        return None


def load(path: str | Path, device: str = "auto", batch_size: int = 64, **options) -> Model:
    """A run directory, one fold directory, or a directory made by `rekit export --format onnx`.

    device/batch_size/options go to the PyTorch ensemble (rekit.ensemble.Ensemble); an ONNX
    export takes batch_size and `threads` (onnxruntime intra-op threads; default: its own). Both
    take `type_constraints=False` to predict without a model's type-pair constraints.
    """
    p = Path(path)
    if not p.exists():
        raise RekitError(f"{p}: no such run, model or export directory")
    if (p / ONNX_MANIFEST).is_file():
        from rekit.export.runtime import OnnxEnsemble

        onnx = OnnxEnsemble(p, batch_size=batch_size, **options)
        return Model(onnx, onnx.entity_types)
    from rekit.ensemble import Ensemble

    dirs = model_dirs(p)
    ens = Ensemble(dirs, device=device, batch_size=batch_size, **options)
    return Model(ens, _entity_types(dirs[0] / SPEC_FILE))
