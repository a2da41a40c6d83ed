"""Build a fresh model for training: backbone from the hub, a local directory, or scratch."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch

from rekit.config import ModelConfig
from rekit.data.labels import LabelMap
from rekit.encoding.markers import new_tokens
from rekit.errors import RekitError
from rekit.modeling import scratch
from rekit.modeling.model import ModelSpec, REModel


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


def _from_pretrained(loader, name: str, **kw):
    """Local directory or cache first; the hub only if it answers; one clear line otherwise."""
    try:
        return loader.from_pretrained(name, local_files_only=True, **kw)
    except (OSError, ValueError) as e:
        if Path(name).exists():
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


def load_tokenizer(cfg: ModelConfig, train_texts: Sequence[str], entity_types: Sequence[str]):
    """The tokenizer for training, with the marker scheme's new tokens added."""
    extra = new_tokens(cfg.marker, entity_types)
    if cfg.model == "scratch":
        return scratch.train_tokenizer(train_texts, cfg.scratch_vocab_size, extra)
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, cfg.model, trust_remote_code=cfg.trust_remote_code)
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    return tok


def build_model(cfg: ModelConfig, tokenizer, label_map: LabelMap, label_smoothing: float = 0.0) -> REModel:
    """A new REModel. Seed the RNGs before calling: initialisation draws random numbers."""
    from transformers import AutoConfig, AutoModel

    if cfg.model == "scratch":
        config = scratch.encoder_config(cfg.scratch_size, len(tokenizer), max(512, cfg.max_length), cfg.dropout)
        encoder = AutoModel.from_config(config)
    else:
        kw = {"trust_remote_code": cfg.trust_remote_code}
        if cfg.dropout is not None:
            kw.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        config = _from_pretrained(AutoConfig, cfg.model, **kw)
        if getattr(config, "is_encoder_decoder", False):
            raise RekitError(f"{cfg.model} is an encoder-decoder model; rekit needs an encoder (BERT, RoBERTa, ELECTRA, ...)")
        encoder = _from_pretrained(AutoModel, cfg.model, config=config, trust_remote_code=cfg.trust_remote_code)
        if len(tokenizer) > encoder.get_input_embeddings().num_embeddings:
            encoder.resize_token_embeddings(len(tokenizer))
    dropout = cfg.dropout if cfg.dropout is not None else float(getattr(encoder.config, "hidden_dropout_prob", 0.1))
    spec = ModelSpec(cfg.head, len(label_map), cfg.marker, cfg.first_segment, cfg.max_length, dropout)
    return REModel(encoder, spec, label_smoothing)


def check_max_length(cfg: ModelConfig, model: REModel) -> None:
    limit = getattr(model.encoder.config, "max_position_embeddings", None)
    # RoBERTa-style models reserve two positions for padding offsets.
    if limit and cfg.max_length > limit - (2 if "roberta" in model.encoder.config.model_type else 0):
        raise RekitError(f"--max-length {cfg.max_length} exceeds what {cfg.model} supports ({limit} positions)")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
