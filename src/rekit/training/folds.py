"""Fold assignment. Classes too rare to be split stay in every training split and are reported."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from rekit.errors import ConfigError


@dataclass
class Folds:
    splits: list[tuple[np.ndarray, np.ndarray]]  # (train_idx, valid_idx) per fold
    rare: dict[str, int]  # label -> rows; these rows are in every training split, never validated


def make_folds(labels: list[str], n_folds: int, kind: str = "stratified", valid_ratio: float = 0.1,
               seed: int = 42) -> Folds:
    counts = Counter(labels)
    need = max(n_folds, 2)
    rare = {label: c for label, c in sorted(counts.items()) if c < need}
    y = np.asarray(labels, dtype=object)
    always = np.flatnonzero(np.isin(y, list(rare))) if rare else np.empty(0, dtype=int)
    pool = np.setdiff1d(np.arange(len(y)), always)
    if len(pool) < need:
        raise ConfigError(f"{len(pool)} splittable rows are too few for {n_folds} fold(s)")
    if n_folds == 1:
        try:
            tr, va = train_test_split(pool, test_size=valid_ratio, random_state=seed,
                                      stratify=y[pool] if kind == "stratified" else None)
        except ValueError as e:
            raise ConfigError(f"cannot make a {valid_ratio:.0%} stratified holdout: {e}; raise --valid-ratio") from None
        splits = [(np.sort(tr), np.sort(va))]
    else:
        splitter = (StratifiedKFold if kind == "stratified" else KFold)(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = [(pool[tr], pool[va]) for tr, va in splitter.split(pool, y[pool].astype(str))]
    splits = [(np.sort(np.concatenate([tr, always])), va) for tr, va in splits]
    return Folds(splits, rare)
