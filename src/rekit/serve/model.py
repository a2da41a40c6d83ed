"""The served model: labels, a label-list version, and batched class probabilities.

`load_model` is the one place the server touches the model API. Today it adapts the fold
ensemble (`rekit.ensemble.Ensemble`); once `rekit.load` exists (run dir, fold dir or ONNX export)
it becomes `rekit.load(path)` and nothing else in rekit/serve changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rekit.data.schema import Entity, Record


class ServedModel:
    """Wraps any object with `.labels` and `.predict_proba(records) -> (N, C)`."""

    def __init__(self, model, path: str):
        self.model, self.path = model, path
        self.labels: list[str] = list(model.labels)
        self.version = label_version(self.labels)

    def predict_proba(self, records: Sequence[Record]) -> np.ndarray:
        probs = np.asarray(self.model.predict_proba(list(records)), dtype=np.float32)
        if probs.shape != (len(records), len(self.labels)):
            raise RuntimeError(f"the model returned probabilities of shape {probs.shape} for {len(records)} examples")
        return probs

    def warm_up(self) -> None:
        """One prediction at load time: fold models load lazily, and the first batch should not pay for it."""
        self.predict_proba([Record("warm-up", "A B", Entity("A", 0, 1), Entity("B", 2, 3))])


class _EnsembleAdapter:
    """`Ensemble` under the `rekit.load` interface (`classes_` -> `labels`)."""

    def __init__(self, ensemble):
        self.ensemble = ensemble
        self.labels = list(ensemble.classes_)

    def predict_proba(self, records):
        return self.ensemble.predict_proba(records)


def load_model(path: str | Path, device: str = "auto", threads: int | None = None) -> ServedModel:
    """Called on the model thread, which then runs every batch."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    # MERGE: replace the next two lines with `model = rekit.load(path, device=device)` (or
    # `rekit.load(path)` if it takes no device) once rekit.load exists; drop _EnsembleAdapter.
    from rekit.ensemble import Ensemble

    model = _EnsembleAdapter(Ensemble.load(path, device=device))
    served = ServedModel(model, str(path))
    served.warm_up()
    return served


def check_path(path: str | Path) -> None:
    """Fail at once, before the server starts, on a path that holds no model (RekitError)."""
    # MERGE: rekit.load also reads ONNX exports; accept whatever it accepts (e.g. skip this for them).
    from rekit.ensemble import model_dirs

    model_dirs(path)


def label_version(labels: Sequence[str]) -> str:
    """A short hash of the label list (order matters): clients can tell two label maps apart."""
    return hashlib.sha256("\n".join(labels).encode("utf-8")).hexdigest()[:12]
