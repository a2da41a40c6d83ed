"""Typed configuration, split by concern. Built from a YAML file, CLI flags, or an HPO trial.

Every default lives here, next to a one-line help text that `rekit train --help` shows.
Field names are unique across sections so each one is also a CLI flag (`--max-length`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rekit.errors import ConfigError

MARKERS = ("none", "entity_marker", "entity_marker_punct", "typed_entity_marker", "typed_entity_marker_punct")
FIRST_SEGMENTS = ("auto", "none", "entities", "query")
HEADS = ("entity", "cls")
SCRATCH_SIZES = ("tiny", "small", "medium", "base")
SCRATCH_TOKENIZERS = ("wordpiece", "morpheme")
LOSSES = ("ce", "focal")
METRICS = ("micro_f1", "auprc", "accuracy", "macro_f1", "loss")
REPORT_TO = ("none", "tensorboard", "mlflow", "wandb")  # backends live in rekit/tracking.py


def described(default: Any, **meta: Any) -> Any:
    """A dataclass field that carries `meta` (help, choices, flag) for the command line; a list or
    dict default is copied for each instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _f(default: Any, help: str, choices: tuple | None = None, flag: bool = True):
    return described(default, help=help, choices=choices, flag=flag)


@dataclass
class DataConfig:
    train: str | None = _f(None, "training file (.csv community layout, .json KLUE, .tsv legacy, .jsonl rekit)")
    format: str | None = _f(None, "input format; default: detect from extension and columns",
                            ("klue-json", "csv", "tsv-legacy", "jsonl"))
    on_mismatch: str = _f("auto", "a row whose entity span does not match its text: auto (repair it when the right "
                          "place is certain, else treat it as a bad row), repair (also take the nearest of several "
                          "occurrences), skip, or error", ("auto", "repair", "skip", "error"))
    on_bad_row: str = _f("auto", "a malformed row (or a span auto can't repair): auto (skip while at most "
                         "--max-skip-share of the rows; prediction keeps every row), skip (any number), or error",
                         ("auto", "skip", "error"))
    offsets: str = _f("auto", "entity end-offset convention of the input", ("auto", "inclusive", "exclusive"))
    columns: dict = _f({}, "explicit column mapping, e.g. label=relation (keys: id sentence subject object label source)")
    entity_keys: dict = _f({}, "explicit keys inside entity cells, e.g. text=name (keys: text start end type)")
    max_train_samples: int | None = _f(None, "use only the first N training rows (cheap smoke runs)")
    labels: str = _f("auto", "label set: auto (KLUE order when the labels fit), klue-re, klue-re-legacy, or a labels.json path")
    no_relation_label: str = _f("auto", "the no-relation label (excluded from micro-F1); 'none' if the data has none")
    strict: bool = _f(False, "stop at the first row with a wrong span or any other problem (no repairs, no skips)")
    max_skip_share: float = _f(0.01, "largest share of training rows skipped as unreadable or unrepairable before "
                               "it is an error (0.01 = 1 %)")


@dataclass
class ModelConfig:
    model: str = _f("klue/roberta-base", "Hugging Face encoder name, local directory, or 'scratch' (offline, random init)")
    scratch_size: str = _f("small", "size preset for --model scratch", SCRATCH_SIZES)
    scratch_vocab_size: int = _f(12000, "WordPiece vocabulary size for --model scratch")
    scratch_tokenizer: str = _f("wordpiece", "tokenizer for --model scratch: wordpiece, or morpheme (vocabulary from "
                                "Korean morphemes; needs kiwipiepy)", SCRATCH_TOKENIZERS)
    marker: str = _f("typed_entity_marker_punct", "entity representation (Zhou & Chen 2022)", MARKERS)
    first_segment: str = _f("auto", "first input segment: auto (entities for marker 'none', else none), none, "
                            "entities ('subj[SEP]obj'), query (a Korean question built from the entities)", FIRST_SEGMENTS)
    head: str = _f("entity", "classifier head: entity (subject+object start tokens) or cls", HEADS)
    max_length: int = _f(256, "max tokens per example; longer sentences are windowed around both entities")
    dropout: float | None = _f(None, "classifier/backbone dropout; default: the backbone's own")
    trust_remote_code: bool = _f(False, "allow a model directory to run its own Python code (only for sources you trust)")


@dataclass
class TrainConfig:
    output: str | None = _f(None, "run directory to create")
    overwrite: bool = _f(False, "replace a non-empty run directory")
    folds: int = _f(5, "number of CV folds; 1 = one stratified holdout of --valid-ratio")
    split: str = _f("stratified", "fold assignment", ("stratified", "kfold"))
    valid_ratio: float = _f(0.1, "validation share when --folds 1")
    only_folds: list = _f([], "train only these fold indices (e.g. for fold-parallel runs); default all")
    epochs: int = _f(3, "training epochs per fold")
    lr: float = _f(5e-5, "peak learning rate")
    batch_size: int = _f(32, "examples per optimizer step (micro-batch x accumulation)")
    grad_accum: int = _f(1, "gradient accumulation steps (micro-batch = batch-size / grad-accum)")
    eval_batch_size: int = _f(512, "examples per evaluation/prediction batch (512: one RoBERTa-large fold model "
                              "predicts 11,500 rows/s on an H200, against 9,100 at 256; BENCHMARKS.md)")
    optimizer: str = _f("adamw", "optimizer; adamw skips weight decay on biases and norms", ("adamw", "adam"))
    weight_decay: float = _f(0.01, "weight decay (adamw)")
    warmup_ratio: float = _f(0.1, "share of steps with linear warmup")
    scheduler: str = _f("linear", "decay after warmup", ("linear", "cosine", "constant"))
    max_grad_norm: float = _f(1.0, "gradient clipping norm; 0 disables")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing")
    loss: str = _f("ce", "classification loss: ce (cross-entropy) or focal", LOSSES)
    focal_gamma: float = _f(2.0, "focusing exponent of --loss focal (0 = cross-entropy)")
    augment: str = _f("none", "training-time augmentations, comma-separated: swap (subject/object of symmetric "
                      "and inverse relations), entity (same-type entity replacement), punct (punctuation "
                      "insertion), mask (random token masking); none")
    augment_prob: float = _f(0.3, "share of training rows that get an entity/punct augmented copy")
    token_mask_prob: float = _f(0.1, "share of ordinary tokens masked per step with --augment mask")
    precision: str = _f("auto", "auto: bf16 autocast on CUDA (fp16 if no bf16), fp32 on CPU", ("auto", "bf16", "fp16", "fp32"))
    compile: str = _f("auto", "how the training step runs on a GPU: auto (= graphs on CUDA, off on CPU), off "
                      "(eager), graphs (each padded batch shape captured once as a CUDA graph of the whole step: "
                      "forward, backward, clipping, AdamW), graphs-inductor (the same over torch.compile-fused "
                      "kernels: 16 % faster per step, after 20-30 s of compiling; for runs of several epochs), or torch.compile's default, reduce-overhead, "
                      "max-autotune; see BENCHMARKS.md", ("auto", "off", "graphs", "graphs-inductor", "default",
                                                          "reduce-overhead", "max-autotune"))
    pad_multiple: int = _f(0, "pad each batch's length to a multiple of this (0 = auto: 32 with torch.compile modes, 8 "
                           "otherwise on CUDA, 1 on CPU); coarser = fewer shapes to compile, more padding")
    parallel: str = _f("folds", "under torchrun: folds (one fold per process) or ddp (all processes train each "
                       "fold together); ignored in a single process", ("folds", "ddp"))
    metric: str = _f("micro_f1", "metric that picks the best checkpoint per fold", METRICS)
    patience: int = _f(0, "early stopping: evaluations without improvement before stopping (0 = off)")
    eval_every: int = _f(0, "also evaluate every N optimizer steps (0 = once per epoch)")
    save_every: int = _f(0, "also save the resumable training state every N optimizer steps (0 = at each epoch "
                         "end and each new best only; -1 = never, no resume); continue with --resume RUN_DIR")
    oom_retry: bool = _f(False, "on CUDA out-of-memory, retry the step with half the micro-batch and twice the "
                         "--grad-accum (same effective batch); off under --parallel ddp")
    seed: int = _f(42, "random seed (folds, init, shuffling)")
    deterministic: bool = _f(False, "deterministic kernels (slower; bit-identical reruns on CPU)")
    device: str = _f("auto", "auto, cpu, cuda, cuda:1, ...")
    progress: bool = _f(True, "show progress bars")
    report_to: str = _f("none", "also log metrics to a tracker: tensorboard (RUN_DIR/tensorboard/), mlflow or wandb "
                        "(each needs its package installed)", REPORT_TO)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        t, m = self.train, self.model
        if t.folds < 1:
            raise ConfigError(f"--folds must be >= 1, got {t.folds}")
        if not 0 < t.valid_ratio < 1:
            raise ConfigError(f"--valid-ratio must be between 0 and 1, got {t.valid_ratio}")
        if t.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {t.epochs}")
        if t.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {t.lr}")
        if t.batch_size < 1 or t.grad_accum < 1 or t.batch_size % t.grad_accum:
            raise ConfigError(f"--batch-size ({t.batch_size}) must be a positive multiple of --grad-accum ({t.grad_accum})")
        if not 0 <= t.warmup_ratio < 1:
            raise ConfigError(f"--warmup-ratio must be in [0, 1), got {t.warmup_ratio}")
        if not 0 <= t.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {t.label_smoothing}")
        if t.focal_gamma < 0:
            raise ConfigError(f"--focal-gamma must be >= 0, got {t.focal_gamma}")
        if not 0 <= t.augment_prob <= 1 or not 0 <= t.token_mask_prob < 1:
            raise ConfigError("--augment-prob must be in [0, 1] and --token-mask-prob in [0, 1)")
        from rekit.data.augment import parse_augments

        try:
            parse_augments(t.augment)
        except ValueError as e:
            raise ConfigError(f"--augment: {e}") from None
        if m.max_length < 16:
            raise ConfigError(f"--max-length must be >= 16, got {m.max_length}")
        if m.dropout is not None and not 0 <= m.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {m.dropout}")
        if any(not isinstance(k, int) or not 0 <= k < t.folds for k in t.only_folds):
            raise ConfigError(f"--only-folds must be fold indices in 0..{t.folds - 1}, got {t.only_folds}")
        for section in (self.data, self.model, self.train):
            for f in dataclasses.fields(section):
                choices = f.metadata.get("choices")
                value = getattr(section, f.name)
                if choices and value is not None and value not in choices:
                    raise ConfigError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}; got {value!r}")

    # -- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, d: dict | None, overrides: dict | None = None) -> "RunConfig":
        """Build from nested sections ({data: {...}, model: {...}}) or flat keys, then apply flat overrides."""
        flat: dict[str, Any] = {}
        for key, value in (d or {}).items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"config section '{key}' must be a mapping")
                flat.update(value)
            else:
                flat[key] = value
        flat.update({k: v for k, v in (overrides or {}).items() if v is not None})
        kwargs: dict[str, dict] = {name: {} for name in SECTIONS}
        owners = field_owners()
        for key, value in flat.items():
            key_norm = key.replace("-", "_")
            if key_norm not in owners:
                raise ConfigError(f"unknown config key {key!r}; see `rekit train --help` for the options")
            kwargs[owners[key_norm]][key_norm] = value
        try:
            sections = {name: SECTIONS[name](**kw) for name, kw in kwargs.items()}
        except TypeError as e:
            raise ConfigError(str(e)) from None
        return cls(**sections)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> "RunConfig":
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of options")
        return cls.from_dict(data, overrides)


def read_yaml(path: str | Path) -> Any:
    """A YAML config file's content ({} when empty); a ConfigError naming the file if it cannot be
    read or parsed (safe_load: plain data only, no Python objects)."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (invalid byte at offset {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def field_owners() -> dict[str, str]:
    """Field name -> section name (field names are unique across sections)."""
    return {f.name: section for section, klass in SECTIONS.items() for f in dataclasses.fields(klass)}
