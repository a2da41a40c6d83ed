"""The relation classifier: backbone encoder + head, saved as a self-describing directory.

A model directory is also a Hugging Face model directory:
  model.safetensors  the encoder, under the names transformers uses: `AutoModel.from_pretrained(dir)`
                     returns the trained encoder, `AutoTokenizer.from_pretrained(dir)` its tokenizer
  head.safetensors   the relation head (`dense.*`, `out.*`; see heads.py), read by rekit
  config.json        the encoder's config;  tokenizer files
  rekit.json         head and encoding settings (ModelSpec);  labels.json  the label order
  README.md          the model card (rekit.modelcard)
Directories saved before head.safetensors existed hold every weight in model.safetensors under
`encoder.`/`head.` names; `load` reads both layouts. No pickle, no code from the directory unless allowed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from rekit.data.labels import LabelMap
from rekit.errors import RekitError
from rekit.io import atomic_path, atomic_write_text
from rekit.modeling.heads import HEADS
from rekit.modeling.losses import symmetric_kl
from rekit.rundir import HEAD_FILE, LABELS_FILE, SPEC_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class ModelSpec:
    """What a saved model needs besides its weights to encode inputs and rebuild its head."""

    head: str
    n_labels: int
    marker: str
    first_segment: str
    max_length: int
    dropout: float
    entity_types: list[str] | None = None  # the types seen in training (None: saved before rekit knew them)
    # --type-constraints: {"SUBJ|OBJ": labels seen with that type pair in training}; predictions
    # give a row 0 for the labels its pair never took (rekit.data.constraints). None: no constraints.
    type_pairs: dict[str, list[str]] | None = None

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class REModel(nn.Module):
    def __init__(self, encoder: PreTrainedModel, spec: ModelSpec, label_smoothing: float = 0.0):
        super().__init__()
        self.encoder = encoder
        # The heads read hidden states, never the backbone's pooler: freeze it so it gets no
        # optimizer state or weight decay, and DDP does not wait for gradients that never come.
        for name, param in encoder.named_parameters():
            if name.startswith("pooler."):
                param.requires_grad_(False)
        self.spec = spec
        hidden = encoder.config.hidden_size
        self.head = HEADS[spec.head](hidden, spec.n_labels, spec.dropout)
        self.loss_fn: nn.Module = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # R-Drop weight (--rdrop; build_model sets it): a training setting, not part of the spec, so a
        # saved model predicts the same whatever it was.
        self.rdrop = 0.0
        self.use_token_types = getattr(encoder.config, "type_vocab_size", 1) > 1

    def forward(self, input_ids, attention_mask, subj_pos, obj_pos, token_type_ids=None, labels=None,
                soft_targets=None):
        """input_ids, attention_mask: (B, T); subj_pos, obj_pos: (B,) -> logits (B, C), loss or None.
        soft_targets: (B, C) target probabilities for a distillation loss (losses.DistillLoss)."""
        if labels is not None and self.training and self.rdrop > 0:
            return self._rdrop_forward(input_ids, attention_mask, subj_pos, obj_pos, token_type_ids, labels,
                                       soft_targets)
        logits = self._logits(input_ids, attention_mask, subj_pos, obj_pos, token_type_ids)
        if labels is None:
            return logits, None
        return logits, self._loss(logits, labels, soft_targets)

    def _logits(self, input_ids, attention_mask, subj_pos, obj_pos, token_type_ids):
        kw = {"token_type_ids": token_type_ids} if (token_type_ids is not None and self.use_token_types) else {}
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        return self.head(h, subj_pos, obj_pos)

    def _loss(self, logits, labels, soft_targets):
        if soft_targets is None:
            return self.loss_fn(logits.float(), labels)
        return self.loss_fn(logits.float(), labels, soft_targets)

    def _rdrop_forward(self, input_ids, attention_mask, subj_pos, obj_pos, token_type_ids, labels, soft_targets):
        """R-Drop (Liang et al. 2021): the mean of the two passes' losses + rdrop x their symmetric KL.

        Both passes are one forward over the batch stacked on itself (2B rows, each row its own
        dropout mask): one call for DDP's hooks, static shapes for CUDA graphs, and gradient
        accumulation, concurrent folds and --augment mask (each copy masked independently) unchanged.
        Returns the first pass's logits, (B, C) as without R-Drop."""
        twice = [None if t is None else torch.cat((t, t)) for t in (input_ids, attention_mask, subj_pos, obj_pos,
                                                                     token_type_ids)]
        first, second = self._logits(*twice).chunk(2)
        task = (self._loss(first, labels, soft_targets) + self._loss(second, labels, soft_targets)) / 2
        return first, task + self.rdrop * symmetric_kl(first, second)

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: str | Path, tokenizer, label_map: LabelMap, weights: bool = True) -> None:
        """Weights (unless weights=False), backbone config, tokenizer, labels, then rekit.json.

        Every file is replaced atomically, and rekit.json comes last: a directory that has it
        has a complete config and tokenizer (a resumed run reloads its tokenizer from there).
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if weights:
            self.save_weights(d)
        # transformers writes in place: write into a temporary directory, then move file by file.
        with tempfile.TemporaryDirectory(prefix=".save-", suffix=".tmp", dir=d) as tmp:
            self.encoder.config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            for f in sorted(Path(tmp).iterdir()):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
                    os.replace(f, d / f.name)
        label_map.save(d / LABELS_FILE)
        atomic_write_text(d / SPEC_FILE, json.dumps(asdict(self.spec), indent=2) + "\n")

    def save_weights(self, directory: str | Path) -> None:
        """Only the weights, atomically per file (the best checkpoint is rewritten on every
        improvement): the head first, then the encoder in transformers' own names."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, module in ((HEAD_FILE, self.head), (WEIGHTS_FILE, self.encoder)):
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            with atomic_path(d / name) as tmp:
                save_file(state, str(tmp), metadata={"format": "pt", "rekit": "2"})

    @classmethod
    def load(cls, directory: str | Path, trust_remote_code: bool = False, device: str | torch.device = "cpu"):
        """-> (model, tokenizer, label_map), weights read with safetensors only."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        d = Path(directory)
        for name in (SPEC_FILE, WEIGHTS_FILE, LABELS_FILE, "config.json"):
            if not (d / name).is_file():
                raise RekitError(f"{d} is not a rekit model directory: {name} is missing")
        try:
            spec = ModelSpec.from_dict(json.loads((d / SPEC_FILE).read_text(encoding="utf-8")))
            config = AutoConfig.from_pretrained(d, trust_remote_code=trust_remote_code)
            encoder = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(d, trust_remote_code=trust_remote_code)
        except (ValueError, KeyError, TypeError, OSError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "trust_remote_code" in str(e):
                msg = "it asks to run its own Python code; pass --trust-remote-code only if you trust its source"
            raise RekitError(f"cannot load model from {d}: {msg}") from None
        label_map = LabelMap.load(d / LABELS_FILE)
        model = cls(encoder, spec)
        missing, unexpected = model.load_state_dict(_read_weights(d, load_file), strict=False)
        # Position-id buffers are rebuilt by the backbone; anything else missing is a broken file.
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise RekitError(f"{d / WEIGHTS_FILE} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
        return model.to(device).eval(), tokenizer, label_map


def _read_weights(d: Path, load_file) -> dict:
    """The REModel state dict of a directory in either layout (see the module docstring)."""
    state = load_file(str(d / WEIGHTS_FILE))
    if not (d / HEAD_FILE).is_file():  # the old layout: every weight, prefixed, in one file
        return state
    out = {f"encoder.{k}": v for k, v in state.items()}
    out.update({f"head.{k}": v for k, v in load_file(str(d / HEAD_FILE)).items()})
    return out
