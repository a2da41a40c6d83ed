"""Fold-level glue for training-time augmentation (`--augment swap,entity,punct,mask`).

Record-level augmentations (data/augment.py) add encoded copies to a fold's training split
only (never to its validation split, so the fold's score stays honest). Token masking is
dynamic: a forward pre-hook on the word embeddings replaces a random share of ordinary
tokens by [MASK] on every training step and does nothing in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rekit.config import TrainConfig
from rekit.data.augment import augment_records, parse_augments
from rekit.data.labels import LabelMap
from rekit.data.schema import Record
from rekit.encoding.tokenize import Features

# Marker punctuation of the punct schemes and the KLUE entity types: the head reads the markers,
# so masking them would hide where the entities are.
MARKER_TEXT = ("@", "*", "#", "^", "PER", "ORG", "LOC", "DAT", "POH", "NOH")


def concat(a: Features, b: Features) -> Features:
    types = None if a.token_type_ids is None or b.token_type_ids is None else a.token_type_ids + b.token_type_ids
    return Features(a.input_ids + b.input_ids, types, a.subj_pos + b.subj_pos, a.obj_pos + b.obj_pos,
                    a.labels + b.labels)


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


def protected_ids(tokenizer) -> list[int]:
    ids = set(tokenizer.all_special_ids)
    for text in MARKER_TEXT:
        pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
        ids.update(i for i in pieces if i is not None)
    return sorted(ids)


def install_token_masking(model, tokenizer, prob: float):
    """Dynamic random masking of ordinary input tokens while training; returns the hook handle."""
    if prob <= 0 or tokenizer.mask_token_id is None:
        return None
    mask_id = tokenizer.mask_token_id
    keep = {"cpu": torch.as_tensor(protected_ids(tokenizer), dtype=torch.long)}

    def hook(module, args):
        if not module.training:
            return None
        ids = args[0]
        if str(ids.device) not in keep:  # copied once: no host-to-device copy inside a CUDA graph capture
            keep[str(ids.device)] = keep["cpu"].to(ids.device)
        hit = torch.rand(ids.shape, device=ids.device) < prob
        hit &= ~torch.isin(ids, keep[str(ids.device)])
        return (torch.where(hit, torch.full_like(ids, mask_id), ids), *args[1:])

    return model.encoder.get_input_embeddings().register_forward_pre_hook(hook)


def augment_summary(n_base: int, n_total: int) -> str:
    return f"augmented: {n_total - n_base:,} extra training rows ({(n_total - n_base) / max(1, n_base):.0%})"
