"""The fold ensemble: load every fold model of a run, average their softmax probabilities."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.tokenize import REEncoder
from rekit.errors import RekitError
from rekit.modeling.inference import predict_proba
from rekit.modeling.model import SPEC_FILE, WEIGHTS_FILE, REModel
from rekit.runtime import autocast_dtype, resolve_device


def model_dirs(run_dir: str | Path) -> list[Path]:
    run = Path(run_dir)
    if (run / WEIGHTS_FILE).is_file():  # a single model directory works too
        return [run]
    dirs = sorted((d for d in run.glob("fold-*") if (d / WEIGHTS_FILE).is_file() and (d / SPEC_FILE).is_file()),
                  key=lambda d: int(d.name[5:]) if d.name[5:].isdigit() else 0)
    if not dirs:
        raise RekitError(f"{run} holds no trained models (no fold-*/{WEIGHTS_FILE}); is it a finished rekit run?")
    return dirs


class Ensemble:
    """Soft vote of fold models. `predict_proba` columns follow `label_map_.labels`.

    Members are loaded on first use and kept (set keep_loaded=False to load one at a time and
    free it after its predictions, for large models on small GPUs).
    """

    def __init__(self, dirs: Sequence[Path], weights: Sequence[float] | None = None, device: str = "auto",
                 batch_size: int = 256, precision: str = "auto", trust_remote_code: bool = False,
                 keep_loaded: bool = True, progress: bool = False):
        self.dirs = list(dirs)
        if weights is not None and len(weights) != len(self.dirs):
            raise RekitError(f"{len(weights)} weights given for {len(self.dirs)} fold models")
        w = np.ones(len(self.dirs)) if weights is None else np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise RekitError("ensemble weights must be non-negative and not all zero")
        self.weights_ = w / w.sum()
        self.device = resolve_device(device)
        self.amp_dtype = autocast_dtype(precision, self.device)
        self.batch_size, self.trust_remote_code = batch_size, trust_remote_code
        self.keep_loaded, self.progress = keep_loaded, progress
        self._cache: dict[int, tuple] = {}
        self.label_map_: LabelMap = LabelMap.load(self.dirs[0] / "labels.json")
        for d in self.dirs[1:]:
            if LabelMap.load(d / "labels.json").labels != self.label_map_.labels:
                raise RekitError(f"{d} has a different label map from {self.dirs[0]}; cannot ensemble them")

    @classmethod
    def load(cls, run_dir: str | Path, **kw) -> "Ensemble":
        return cls(model_dirs(run_dir), **kw)

    @property
    def classes_(self) -> tuple[str, ...]:
        return self.label_map_.labels

    def _member(self, i: int):
        if i in self._cache:
            return self._cache[i]
        member = REModel.load(self.dirs[i], self.trust_remote_code, self.device)
        if self.keep_loaded:
            self._cache[i] = member
        return member

    def member_probas(self, records: Sequence[Record]) -> list[np.ndarray]:
        """Each member's (N, C) probabilities; inputs are encoded once per distinct tokenizer."""
        encoded: dict[str, object] = {}
        out = []
        for i in tqdm(range(len(self.dirs)), desc="fold models", disable=not self.progress, leave=False):
            model, tokenizer, _ = self._member(i)
            spec = model.spec
            key = _fingerprint(self.dirs[i], spec)
            if key not in encoded:
                encoded[key] = REEncoder(tokenizer, spec.marker, spec.max_length, spec.first_segment).encode(records)
            out.append(predict_proba(model, encoded[key], tokenizer.pad_token_id, self.batch_size, self.device, self.amp_dtype))
            if not self.keep_loaded:
                del model
                gc.collect()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return out

    def predict_proba(self, records: Sequence[Record]) -> np.ndarray:
        if not records:
            return np.zeros((0, len(self.label_map_)), dtype=np.float32)
        probs = self.member_probas(records)
        return np.tensordot(self.weights_, np.stack(probs), axes=1).astype(np.float32)

    def predict(self, records: Sequence[Record]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(records).argmax(axis=1)]


def _fingerprint(model_dir: Path, spec) -> str:
    """Same tokenizer files + same encoding settings => the same features: encode once."""
    h = hashlib.sha256(f"{spec.marker}|{spec.max_length}|{spec.first_segment}".encode())
    for name in ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "tokenizer_config.json"):
        p = model_dir / name
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
