"""Fold-level glue for training-time augmentation (`--augment swap,entity,punct,mask`).

Record-level augmentations (data/augment.py) add encoded copies to a fold's training split
only (never to its validation split, so the fold's score stays honest). Token masking
(`--augment mask`) is part of the model built for training: modeling/masking.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rekit.config import TrainConfig, parse_augments
from rekit.data.augment import augment_records
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.tokenize import Features


def concat(a: Features, b: Features) -> Features:
    """`a`'s rows, then `b`'s. Soft targets (distillation) are kept only if both have them."""
    types = None if a.token_type_ids is None or b.token_type_ids is None else a.token_type_ids + b.token_type_ids
    soft = None if a.soft_targets is None or b.soft_targets is None else np.concatenate([a.soft_targets, b.soft_targets])
    return Features(a.input_ids + b.input_ids, types, a.subj_pos + b.subj_pos, a.obj_pos + b.obj_pos,
                    a.labels + b.labels, soft)


def training_features(feats: Features, train_idx: Sequence[int], records: Sequence[Record], cfg: TrainConfig,
                      encoder, label_map: LabelMap) -> Features:
    """The fold's training features plus encoded augmented copies of its training records."""
    base = feats.subset(train_idx)
    kinds = [k for k in parse_augments(cfg.augment) if k != "mask"]
    if not kinds:
        return base
    extra = augment_records([records[i] for i in train_idx], kinds, cfg.augment_prob, cfg.seed, label_map.labels)
    if not extra:
        return base
    return concat(base, encoder.encode(extra, label_map))


def augment_summary(n_base: int, n_total: int) -> str:
    return f"augmented: {n_total - n_base:,} extra training rows ({(n_total - n_base) / max(1, n_base):.0%})"
