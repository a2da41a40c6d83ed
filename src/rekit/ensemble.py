"""The fold ensemble: load every fold model of one or more runs, average their softmax probabilities.

Several runs (seeds, backbones, recipes) ensemble too: each run gets a weight, shared equally by
its fold models. Run weights can be fit on the runs' out-of-fold predictions (training data
only) by maximising the OOF likelihood of the mixture (`fit_run_weights`).
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rekit.data.constraints import constrain
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.tokenize import Features, REEncoder
from rekit.errors import RekitError
from rekit.modeling.inference import predict_proba
from rekit.modeling.integrity import check_model_dir
from rekit.modeling.model import REModel
from rekit.rundir import SPEC_FILE, model_dirs, read_oof
from rekit.runtime import autocast_dtype, compile_blocks, resolve_device


class Ensemble:
    """Soft vote of fold models. `predict_proba` columns follow `label_map_.labels`.

    Members are loaded on first use and kept (set keep_loaded=False to load one at a time and
    free it after its predictions, for large models on small GPUs). A member trained with
    --type-constraints gives 0 to labels a row's type pair never took (rekit.data.constraints), unless
    type_constraints=False.
    """

    def __init__(self, dirs: Sequence[Path], weights: Sequence[float] | None = None, device: str = "auto",
                 batch_size: int = 512, precision: str = "auto", trust_remote_code: bool = False,
                 keep_loaded: bool = True, progress: bool = False, compile: bool = False,
                 type_constraints: bool = True):
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
        self.type_constraints = type_constraints  # apply each member's spec.type_pairs (if it has them)
        if compile and self.device.type != "cuda":
            raise RekitError(f"--compile compiles the fold models' layers for a CUDA device; this run uses {self.device}")
        self.compile = compile
        self._cache: dict[int, tuple] = {}
        # Every member's files are checked now (headers only), before any input is read or predicted.
        self.label_map_: LabelMap = check_model_dir(self.dirs[0])
        for d in self.dirs[1:]:
            if check_model_dir(d).labels != self.label_map_.labels:
                raise RekitError(f"{d} has a different label map from {self.dirs[0]}; cannot ensemble them")

    @classmethod
    def load(cls, run_dir: str | Path, allow_partial: bool = False, echo=None, **kw) -> Ensemble:
        """The finished fold models of a run (see `model_dirs` for `allow_partial` and `echo`)."""
        return cls(model_dirs(run_dir, allow_partial, echo), **kw)

    @classmethod
    def load_runs(cls, run_dirs: Sequence[str | Path], run_weights: Sequence[float] | None = None,
                  allow_partial: bool = False, echo=None, **kw) -> Ensemble:
        """All fold models of several runs; run k's weight is split equally among its folds."""
        groups = [model_dirs(r, allow_partial, echo) for r in run_dirs]
        if run_weights is not None and len(run_weights) != len(groups):
            raise RekitError(f"{len(run_weights)} run weights given for {len(groups)} runs")
        rw = [1.0] * len(groups) if run_weights is None else list(run_weights)
        dirs = [d for g in groups for d in g]
        weights = [w / len(g) for w, g in zip(rw, groups) for _ in g]
        return cls(dirs, weights=weights, **kw)

    @property
    def classes_(self) -> tuple[str, ...]:
        return self.label_map_.labels

    @property
    def type_pairs(self) -> dict[str, list[str]] | None:
        """The first member's type-pair constraints when they are applied (None when off or when it
        has none), as `OnnxEnsemble.type_pairs`; each member applies its own."""
        if not self.type_constraints:
            return None
        spec = json.loads((self.dirs[0] / SPEC_FILE).read_text(encoding="utf-8"))  # checked in __init__
        return spec.get("type_pairs")

    def _member(self, i: int):
        if i in self._cache:
            return self._cache[i]
        member = REModel.load(self.dirs[i], self.trust_remote_code, self.device)
        if self.amp_dtype == torch.bfloat16:
            # Predicting only: bf16 weights instead of autocast over fp32 ones (no per-op casts, half
            # the memory traffic; BENCHMARKS.md "Training throughput and inference speed").
            member[0].to(torch.bfloat16)
        if self.compile:
            # Regional inductor compilation, once for all lengths; members of one architecture share
            # it (BENCHMARKS.md: about 8 % faster once warm, after about 12 s of compiling and warming up).
            compile_blocks(member[0], dynamic=True)
        if self.keep_loaded:
            self._cache[i] = member
        return member

    def member_probas(self, records: Sequence[Record]) -> list[np.ndarray]:
        """Each member's (N, C) probabilities; inputs are encoded once per distinct tokenizer."""
        encoded: dict[str, Features] = {}
        out = []
        for i in tqdm(range(len(self.dirs)), desc="fold models", disable=not self.progress, leave=False):
            model, tokenizer, _ = self._member(i)
            spec = model.spec
            key = _fingerprint(self.dirs[i], spec)
            if key not in encoded:
                encoded[key] = REEncoder(tokenizer, spec.marker, spec.max_length, spec.first_segment).encode(records)
            amp = None if self.amp_dtype == torch.bfloat16 else self.amp_dtype  # bf16 members are cast already
            probs = predict_proba(model, encoded[key], tokenizer.pad_token_id, self.batch_size, self.device, amp,
                                  echo=tqdm.write if self.progress else None)
            out.append(constrain(probs, records, spec.type_pairs, self.classes_) if self.type_constraints else probs)
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


# -- run weights fit on the runs' out-of-fold predictions -----------------------------------
def fit_run_weights(oofs: Sequence[np.ndarray], y: np.ndarray, iters: int = 500, tol: float = 1e-10) -> np.ndarray:
    """Mixture weights w (simplex) maximising sum_i log sum_k w_k p_k(y_i | x_i) (EM for mixture
    weights: the objective is concave, so this converges to the optimum). oofs: K arrays (N, C)."""
    lik = np.stack([np.clip(p[np.arange(len(y)), y], 1e-12, None) for p in oofs], axis=1)  # (N, K)
    w = np.full(lik.shape[1], 1.0 / lik.shape[1])
    for _ in range(iters):
        r = lik * w
        new = (r / r.sum(axis=1, keepdims=True)).mean(axis=0)
        if np.abs(new - w).max() < tol:
            return new
        w = new
    return w


def oof_run_weights(run_dirs: Sequence[str | Path], label_map: LabelMap) -> np.ndarray:
    """Fit run weights on the rows every run held out (matched by id)."""
    tables = [read_oof(r, label_map) for r in run_dirs]
    common = set.intersection(*({i for i, p in zip(t[0], t[2]) if not np.isnan(p).any()} for t in tables))
    if not common:
        raise RekitError("the runs share no out-of-fold rows; were they trained on the same file?")
    order = sorted(common)
    oofs = []
    for ids, _, probs in tables:
        pos = {i: n for n, i in enumerate(ids)}
        oofs.append(probs[[pos[i] for i in order]])
    first = {i: n for n, i in enumerate(tables[0][0])}
    y = tables[0][1][[first[i] for i in order]]  # the gold labels: the same file, so the first run's
    return fit_run_weights(oofs, y)
