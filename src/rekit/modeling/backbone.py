"""Build a fresh model for training: backbone from the hub, a local directory, or scratch."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import torch

from rekit.config import ModelConfig, TrainConfig, parse_augments
from rekit.data.labels import LabelMap
from rekit.encoding.markers import new_tokens
from rekit.errors import RekitError
from rekit.modeling import scratch
from rekit.modeling.losses import make_loss
from rekit.modeling.masking import install_token_masking
from rekit.modeling.model import ModelSpec, REModel
from rekit.modeling.source import check_model_source


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check before transformers' own retries (which take about a minute offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def from_pretrained(loader, name: str, **kw):
    """Local directory or cache first; the hub only if it answers; one clear line otherwise."""
    try:
        return loader.from_pretrained(name, local_files_only=True, **kw)
    except (OSError, ValueError) as e:
        if os.path.lexists(name):  # a local path (even a broken link or a loop) is never a hub name
            raise RekitError(f"cannot load model from {name}: {str(e).splitlines()[0]}") from None
    if not hub_reachable():
        raise RekitError(
            f"cannot load model {name!r}: it is not a local directory and the Hugging Face hub is not "
            "reachable; pass a local model directory (with config.json) or --model scratch"
        )
    try:
        return loader.from_pretrained(name, **kw)
    except (OSError, ValueError) as e:
        raise RekitError(f"cannot load model {name!r}: {str(e).splitlines()[0]}") from None


def check_backbone(cfg: ModelConfig) -> None:
    """Before a run is created: `--model` is scratch or its config loads (local directory, cache,
    or the hub if it answers), so a mistyped name leaves nothing behind."""
    check_model_source(cfg.model)  # milliseconds: paths, symlinks, config.json, safetensors headers
    if cfg.model != "scratch":
        from transformers import AutoConfig

        from_pretrained(AutoConfig, cfg.model, trust_remote_code=cfg.trust_remote_code)


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar, once per fold
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(cfg: ModelConfig, train_texts: Sequence[str], entity_types: Sequence[str]):
    """The tokenizer for training, with the marker scheme's new tokens added."""
    extra = new_tokens(cfg.marker, entity_types)
    if cfg.model == "scratch":
        return scratch.train_tokenizer(train_texts, cfg.scratch_vocab_size, extra, kind=cfg.scratch_tokenizer)
    from transformers import AutoTokenizer

    tok = from_pretrained(AutoTokenizer, cfg.model, trust_remote_code=cfg.trust_remote_code)
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    return tok


def build_model(cfg: ModelConfig, tokenizer, label_map: LabelMap, label_smoothing: float = 0.0,
                train: TrainConfig | None = None) -> REModel:
    """A new REModel. Seed the RNGs before calling: initialisation draws random numbers.

    With `train`, its loss (--loss, --label-smoothing, --focal-gamma) becomes the model's
    loss_fn, --rdrop its R-Drop weight (applied in training mode only), and --augment mask
    installs dynamic token masking.
    """
    from transformers import AutoConfig, AutoModel

    if cfg.model == "scratch":
        config = scratch.encoder_config(cfg.scratch_size, len(tokenizer), max(512, cfg.max_length), cfg.dropout)
        encoder = AutoModel.from_config(config)
    else:
        kw: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
        if cfg.dropout is not None:
            kw.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        config = from_pretrained(AutoConfig, cfg.model, **kw)
        if getattr(config, "is_encoder_decoder", False):
            raise RekitError(f"{cfg.model} is an encoder-decoder model; rekit needs an encoder (BERT, RoBERTa, ELECTRA, ...)")
        # An encoder saved with an MLM head (e.g. by `rekit pretrain`) has head weights the bare encoder
        # does not use, and no pooler (rekit's heads do not use it): transformers' load report about
        # those would only alarm, so it is silenced for this one call.
        with _quiet_transformers():
            encoder = from_pretrained(AutoModel, cfg.model, config=config, trust_remote_code=cfg.trust_remote_code)
        if len(tokenizer) > encoder.get_input_embeddings().num_embeddings:
            encoder.resize_token_embeddings(len(tokenizer))
    dropout = cfg.dropout if cfg.dropout is not None else float(getattr(encoder.config, "hidden_dropout_prob", 0.1))
    spec = ModelSpec(cfg.head, len(label_map), cfg.marker, cfg.first_segment, cfg.max_length, dropout)
    model = REModel(encoder, spec, label_smoothing)
    if train is not None:
        model.loss_fn = make_loss(train.loss, train.label_smoothing, train.focal_gamma)
        model.rdrop = train.rdrop
        if "mask" in parse_augments(train.augment):
            install_token_masking(model, tokenizer, train.token_mask_prob)
    return model


def check_max_length(cfg: ModelConfig, model: REModel) -> None:
    limit = getattr(model.encoder.config, "max_position_embeddings", None)
    # RoBERTa-style models reserve two positions for padding offsets.
    if limit and cfg.max_length > limit - (2 if "roberta" in model.encoder.config.model_type else 0):
        raise RekitError(f"--max-length {cfg.max_length} exceeds what {cfg.model} supports ({limit} positions)")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
