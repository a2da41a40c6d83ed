"""The served model: labels, a label-list version, and batched class probabilities.

`load_model` is the one place the server touches the model API: `rekit.load` (a run directory,
a fold directory or an ONNX export, which serves without torch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rekit.data.schema import Entity, Record
from rekit.rundir import model_dirs


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


def load_model(path: str | Path, device: str = "auto", threads: int | None = None,
               type_constraints: bool = True) -> ServedModel:
    """Called on the model thread, which then runs every batch."""
    from rekit.api.loading import ONNX_MANIFEST, load

    if (Path(path) / ONNX_MANIFEST).is_file():
        options: dict = {"threads": threads} if threads else {}
        model = load(path, type_constraints=type_constraints, **options)
    else:
        if threads:
            import torch

            torch.set_num_threads(threads)
        model = load(path, device=device, type_constraints=type_constraints)
    # The request items are validated already (rekit/serve/validation.py): the backend gets Records.
    served = ServedModel(_Backend(model), str(path))
    served.warm_up()
    return served


class _Backend:
    """A loaded `rekit.Model`'s labels with its backend's batched predict_proba on Records (the
    same path as `rekit predict`)."""

    def __init__(self, model):
        self.labels = list(model.labels)
        self.predict_proba = model.backend.predict_proba


def check_path(path: str | Path) -> None:
    """Fail at once, before the server starts, on a path that holds no model (RekitError)."""
    from rekit.api.loading import ONNX_MANIFEST

    if (Path(path) / ONNX_MANIFEST).is_file():
        return
    model_dirs(path)


def label_version(labels: Sequence[str]) -> str:
    """A short hash of the label list (order matters): clients can tell two label maps apart."""
    return hashlib.sha256("\n".join(labels).encode("utf-8")).hexdigest()[:12]
