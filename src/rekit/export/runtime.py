"""Predict with an ONNX export (`rekit export --format onnx`) on onnxruntime, without torch.

The export directory (see rekit.export.onnx) holds one graph per fold model, all reading the
same features; this module encodes records with the run's tokenizer (rekit.export.tokenizer),
pads batches with numpy and averages the graphs' softmax outputs with the fold weights, as
`rekit.ensemble.Ensemble` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rekit.data.constraints import constrain
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.tokenize import Features, REEncoder
from rekit.errors import RekitError
from rekit.export.tokenizer import SavedTokenizer

MANIFEST, FORMAT = "rekit-onnx.json", "rekit-onnx/1"


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RekitError(f"{path}: unreadable export manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RekitError(f"{path}: not a rekit ONNX export ({FORMAT})")
    for name in manifest.get("models", []):
        if not isinstance(name, str) or "/" in name or "\\" in name or not name.endswith(".onnx"):
            raise RekitError(f"{path}: names an unexpected model file {name!r}")
    return manifest


def pad_batch(feats: Features, idx: Sequence[int] | np.ndarray, pad_id: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The graph inputs for these examples, padded to the longest (int64, as exported)."""
    width = max(len(feats.input_ids[i]) for i in idx)
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    types = np.zeros((len(idx), width), dtype=np.int64)
    for row, i in enumerate(idx):
        n = len(feats.input_ids[i])
        ids[row, :n], mask[row, :n] = feats.input_ids[i], 1
        if feats.token_type_ids is not None:
            types[row, :n] = feats.token_type_ids[i]
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
             "subj_pos": np.asarray([feats.subj_pos[i] for i in idx], dtype=np.int64),
             "obj_pos": np.asarray([feats.obj_pos[i] for i in idx], dtype=np.int64)}
    return {k: batch[k] for k in names}


class OnnxEnsemble:
    """The exported fold models; `predict_proba` columns follow `label_map_.labels`."""

    def __init__(self, directory: str | Path, batch_size: int = 64, threads: int | None = None,
                 type_constraints: bool = True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RekitError("predicting with an ONNX export needs onnxruntime: pip install 'rekit[onnx]'") from None
        d = Path(directory)
        manifest = read_manifest(d)
        self.directory, self.batch_size = d, batch_size
        self.dirs = [d / name for name in manifest["models"]]  # one per fold model, as Ensemble.dirs
        missing = [p.name for p in self.dirs if not p.is_file()]
        if missing or not self.dirs:
            raise RekitError(f"{d}: export is incomplete; missing {', '.join(missing) or 'every model file'}")
        w = np.asarray(manifest.get("weights") or [1.0] * len(self.dirs), dtype=np.float64)
        self.weights_ = w / w.sum()
        self.label_map_ = LabelMap.load(d / "labels.json")
        spec = manifest["spec"]
        self.entity_types = spec.get("entity_types")
        self.type_pairs = spec.get("type_pairs") if type_constraints else None  # as Ensemble applies them
        self.quantized = bool(manifest.get("quantized"))
        self.tokenizer = SavedTokenizer(d)
        self.encoder = REEncoder(self.tokenizer, spec["marker"], spec["max_length"], spec["first_segment"])
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.sessions = [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in self.dirs]
        self.input_names = [i.name for i in self.sessions[0].get_inputs()]

    @property
    def classes_(self) -> tuple[str, ...]:
        return self.label_map_.labels

    def member_probas(self, records: Sequence[Record]) -> list[np.ndarray]:
        feats = self.encoder.encode(records)
        order = np.argsort(-np.asarray(feats.lengths()), kind="stable")  # longest first: less padding
        out = [np.empty((len(records), len(self.label_map_)), dtype=np.float32) for _ in self.sessions]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = pad_batch(feats, idx, self.tokenizer.pad_token_id, self.input_names)
            for k, session in enumerate(self.sessions):
                out[k][idx] = session.run(None, batch)[0]
        return [constrain(p, records, self.type_pairs, self.classes_) for p in out]

    def predict_proba(self, records: Sequence[Record]) -> np.ndarray:
        if not records:
            return np.zeros((0, len(self.label_map_)), dtype=np.float32)
        return np.tensordot(self.weights_, np.stack(self.member_probas(records)), axes=1).astype(np.float32)

    def predict(self, records: Sequence[Record]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(records).argmax(axis=1)]
