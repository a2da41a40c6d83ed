"""Typed configuration, split by concern: one place for every option of train, pretrain and tune.

Every default and limit lives here, next to a one-line help text that `--help` shows; the CLI
flags (`rekit train/pretrain/tune`), the YAML keys and the checks are generated from these
fields. Values are converted by `rekit.convert` (`lr: 2e-5`, `epochs: "3"`, `overwrite: "false"`)
and a wrong one is one line naming the key, e.g. `train.lr: expected a positive number, got 'abc'`.
Field names are unique across the data/model/train sections so each one is also a flag
(`--max-length`). A file may also hold other commands' sections (pretrain:, distill:): RunConfig
checks them and leaves them to their commands (rekit/configfile.py).

Public API:
    RunConfig.from_dict({"train": {"lr": "2e-5"}}, overrides={"epochs": 3})  # YAML-shaped or flat keys
    RunConfig.from_yaml(path, overrides)
    check_value("lr", "2e-5") -> 2e-05    # one option, converted and checked (ConfigError if not valid)
    PretrainSettings.from_dict({...}), TuneSettings.from_dict({...}, overrides)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rekit.convert import build, coerce_fields, convert, flag_name, option, unknown_key
from rekit.errors import ConfigError

MARKERS = ("none", "entity_marker", "entity_marker_punct", "typed_entity_marker", "typed_entity_marker_punct")
FIRST_SEGMENTS = ("auto", "none", "entities", "query")
HEADS = ("entity", "cls")
SCRATCH_SIZES = ("tiny", "small", "medium", "base")
SCRATCH_TOKENIZERS = ("wordpiece", "morpheme")
LOSSES = ("ce", "focal")
AUGMENTS = ("swap", "entity", "punct", "mask")  # data/augment.py (records), modeling/masking.py (mask)
METRICS = ("micro_f1", "auprc", "accuracy", "macro_f1", "loss")
REPORT_TO = ("none", "tensorboard", "mlflow", "wandb")  # backends live in rekit/tracking.py
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SCHEDULERS = ("linear", "cosine", "constant")
MIN_MAX_LENGTH = 16  # fine-tuning and pretraining alike: markers and a window need room
OBJECTIVE_METRICS = ("micro_f1", "auprc", "accuracy", "macro_f1")  # tune objectives, all maximised
# Measured: with a 1 s heartbeat (2 s grace), 8 workers on 2 busy cores had a healthy trial failed as
# stale; heartbeats are cheap, but a long grace only delays recovery of workers on other machines.
MIN_HEARTBEAT_S = 10


def parse_augments(spec: str) -> tuple[str, ...]:
    """'swap,entity' -> ('swap', 'entity'); '' or 'none' -> ()."""
    names = tuple(x.strip() for x in spec.split(",") if x.strip() and x.strip() != "none")
    bad = [n for n in names if n not in AUGMENTS]
    if bad:
        raise ValueError(f"unknown augmentation {bad[0]!r}; choose from {', '.join(AUGMENTS)}")
    return names


def described(default: Any, **meta: Any) -> Any:
    """A dataclass field with CLI metadata (help, choices, flag, low/high...); see `rekit.convert.option`."""
    help_text = meta.pop("help", "")
    return option(default, help_text, **meta)


def _f(default: Any, help: str, choices: tuple | None = None, flag: bool = True, **limits: Any):
    return option(default, help, choices, flag=flag, **limits)


def _section(name: str):
    return lambda key: f"{name}.{key}"


def _count_or_auto(value: Any, where: str) -> str:
    """A count >= 1 or 'auto' (--concurrent-folds, tune --workers), kept as text."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return text
    raise ConfigError(f"{where} must be a number >= 1 or 'auto', got {value!r}")


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
    max_train_samples: int | None = _f(None, "use only the first N training rows (cheap smoke runs)", low=1)
    labels: str = _f("auto", "label set: auto (KLUE order when the labels fit), klue-re, klue-re-legacy, or a labels.json path")
    no_relation_label: str = _f("auto", "the no-relation label (excluded from micro-F1); 'none' if the data has none")
    strict: bool = _f(False, "stop at the first row with a wrong span or any other problem (no repairs, no skips)")
    max_skip_share: float = _f(0.01, "largest share of training rows skipped as unreadable or unrepairable before "
                               "it is an error (0.01 = 1 %)", low=0, high=1)

    def __post_init__(self):
        coerce_fields(self, _section("data"))


@dataclass
class ModelConfig:
    model: str = _f("klue/roberta-base", "Hugging Face encoder name, local directory, or 'scratch' (offline, random init)")
    scratch_size: str = _f("small", "size preset for --model scratch", SCRATCH_SIZES)
    scratch_vocab_size: int = _f(12000, "WordPiece vocabulary size for --model scratch", low=100)
    scratch_tokenizer: str = _f("wordpiece", "tokenizer for --model scratch: wordpiece, or morpheme (vocabulary from "
                                "Korean morphemes; needs kiwipiepy)", SCRATCH_TOKENIZERS)
    marker: str = _f("typed_entity_marker_punct", "entity representation (Zhou & Chen 2022)", MARKERS)
    first_segment: str = _f("auto", "first input segment: auto (entities for marker 'none', else none), none, "
                            "entities ('subj[SEP]obj'), query (a Korean question built from the entities)", FIRST_SEGMENTS)
    head: str = _f("entity", "classifier head: entity (subject+object start tokens) or cls", HEADS)
    max_length: int = _f(256, "max tokens per example; longer sentences are windowed around both entities",
                         low=MIN_MAX_LENGTH)
    dropout: float | None = _f(None, "classifier/backbone dropout; default: the backbone's own", low=0, high=1,
                                high_open=True)
    type_constraints: bool = _f(False, "keep the labels each (subject type, object type) pair with at least 20 rows "
                                "takes in the training file; predictions then give 0 to labels a row's pair never "
                                "took (rekit predict/serve --no-type-constraints turns it off)")
    trust_remote_code: bool = _f(False, "allow a model directory to run its own Python code (only for sources you trust)")

    def __post_init__(self):
        coerce_fields(self, _section("model"))


@dataclass
class TrainConfig:
    output: str | None = _f(None, "run directory to create")
    overwrite: bool = _f(False, "replace a non-empty run directory")
    folds: int = _f(5, "number of CV folds; 1 = one stratified holdout of --valid-ratio", low=1)
    split: str = _f("stratified", "fold assignment", ("stratified", "kfold"))
    valid_ratio: float = _f(0.1, "validation share when --folds 1", low=0, high=1, low_open=True, high_open=True)
    only_folds: list = _f([], "train only these fold indices (e.g. for fold-parallel runs); default all",
                      low=0)
    epochs: int = _f(3, "training epochs per fold", low=1)
    lr: float = _f(5e-5, "peak learning rate", low=0, low_open=True)
    batch_size: int = _f(32, "examples per optimizer step (micro-batch x accumulation)", low=1)
    grad_accum: int = _f(1, "gradient accumulation steps (micro-batch = batch-size / grad-accum)", low=1)
    eval_batch_size: int = _f(512, "examples per evaluation/prediction batch (512: one RoBERTa-large fold model "
                              "predicts 11,500 rows/s on an H200, against 9,100 at 256; BENCHMARKS.md)", low=1)
    optimizer: str = _f("adamw", "optimizer; adamw skips weight decay on biases and norms", ("adamw", "adam"))
    weight_decay: float = _f(0.01, "weight decay (adamw)", low=0)
    layer_decay: float = _f(1.0, "layer-wise learning-rate decay: the top layer and head get --lr, each encoder "
                            "layer below it this factor times the one above (e.g. 0.9); 1 = off", low=0, high=1,
                            low_open=True)
    warmup_ratio: float = _f(0.1, "share of steps with linear warmup", low=0, high=1, high_open=True)
    scheduler: str = _f("linear", "decay after warmup", ("linear", "cosine", "constant"))
    max_grad_norm: float = _f(1.0, "gradient clipping norm; 0 disables", low=0)
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing", low=0, high=1, high_open=True)
    loss: str = _f("ce", "classification loss: ce (cross-entropy) or focal", LOSSES)
    focal_gamma: float = _f(2.0, "focusing exponent of --loss focal (0 = cross-entropy)", low=0)
    rdrop: float = _f(0.0, "R-Drop (Liang et al. 2021): every training row runs twice, with different dropout, and "
                      "this weight times the symmetric KL of the two predictions joins the loss; about 2x compute "
                      "per step; 0 = off", low=0)
    augment: str = _f("none", "training-time augmentations, comma-separated: swap (subject/object of symmetric "
                      "and inverse relations), entity (same-type entity replacement), punct (punctuation "
                      "insertion), mask (random token masking); none")
    augment_prob: float = _f(0.3, "share of training rows that get an entity/punct augmented copy", low=0,
                              high=1)
    token_mask_prob: float = _f(0.1, "share of ordinary tokens masked per step with --augment mask", low=0,
                                 high=1, high_open=True)
    precision: str = _f("auto", "auto: bf16 autocast on CUDA (fp16 if no bf16), fp32 on CPU", ("auto", "bf16", "fp16", "fp32"))
    compile: str = _f("auto", "how the training step runs on a GPU: auto (CUDA: graphs-inductor for folds of 3 or more epochs, "
                      "where its compiling pays back, else graphs; CPU: off), off "
                      "(eager), graphs (each padded batch shape captured once as a CUDA graph of the whole step: "
                      "forward, backward, clipping, AdamW), graphs-inductor (the same over torch.compile-fused "
                      "kernels: 16 % faster per step, after 20-30 s of compiling; for runs of several epochs), or "
                      "torch.compile's default, reduce-overhead, "
                      "max-autotune; see BENCHMARKS.md", ("auto", "off", "graphs", "graphs-inductor", "default",
                                                          "reduce-overhead", "max-autotune"))
    pad_multiple: int = _f(0, "pad each batch's length to a multiple of this (0 = auto: 32 with torch.compile modes, 8 "
                           "otherwise on CUDA, 1 on CPU); coarser = fewer shapes to compile, more padding", low=0)
    concurrent_folds: str = _f("auto", "folds that train at the same time on one GPU, each on its own CUDA stream "
                               "with exactly the optimisation it has alone: a number, or auto (CUDA: as many as "
                               "fit in 80 % of the free memory; CPU: 1); see BENCHMARKS.md", parse=_count_or_auto)
    parallel: str = _f("folds", "under torchrun: folds (one fold per process) or ddp (all processes train each "
                       "fold together); ignored in a single process", ("folds", "ddp"))
    metric: str = _f("micro_f1", "metric that picks the best checkpoint per fold", METRICS)
    patience: int = _f(0, "early stopping: evaluations without improvement before stopping (0 = off)", low=0)
    eval_every: int = _f(0, "also evaluate every N optimizer steps (0 = once per epoch)", low=0)
    save_every: int = _f(0, "also save the resumable training state every N optimizer steps (0 = at each epoch "
                         "end and each new best only; -1 = never, no resume); continue with --resume RUN_DIR", low=-1)
    oom_retry: bool = _f(False, "on CUDA out-of-memory, retry the step with half the micro-batch and twice the "
                         "--grad-accum (same effective batch); off under --parallel ddp")
    seed: int = _f(42, "random seed (folds, init, shuffling)")
    deterministic: bool = _f(False, "deterministic kernels (slower; bit-identical reruns on CPU)")
    device: str = _f("auto", "auto, cpu, cuda, cuda:1, ...")
    progress: bool = _f(True, "show progress bars")
    report_to: str = _f("none", "also log metrics to a tracker: tensorboard (RUN_DIR/tensorboard/), mlflow or wandb "
                        "(each needs its package installed)", REPORT_TO)

    def __post_init__(self):
        coerce_fields(self, _section("train"))


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
TRAIN_HELP = "see `rekit train --help` for the options"
# Other tools' names for rekit's options, so an unknown key can point at the right one.
ALIASES = {"learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs", "max_epochs": "epochs",
           "train_batch_size": "batch_size", "per_device_train_batch_size": "batch_size",
           "gradient_accumulation_steps": "grad_accum", "max_seq_length": "max_length", "warmup": "warmup_ratio",
           "model_name_or_path": "model", "output_dir": "output", "n_folds": "folds", "k_folds": "folds"}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Checks across options (each option's own type and limits are checked when it is set)."""
        t = self.train
        if t.batch_size % t.grad_accum:
            raise ConfigError(f"--batch-size ({t.batch_size}) must be a positive multiple of --grad-accum ({t.grad_accum})")
        try:
            parse_augments(t.augment)
        except ValueError as e:
            raise ConfigError(f"--augment: {e}") from None
        if any(not 0 <= k < t.folds for k in t.only_folds):
            raise ConfigError(f"--only-folds must be fold indices in 0..{t.folds - 1}, got {t.only_folds}")

    # -- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, d: dict | None, overrides: dict | None = None) -> RunConfig:
        """Build from nested sections ({data: {...}, model: {...}}) or flat keys, then apply flat
        overrides (flags: a None value means "not given"). Values are converted; a wrong one, or an
        unknown key, is a one-line ConfigError naming it (`train.lr: ...`; `--lr: ...` for an override)."""
        owners = field_owners()
        given = given_options(d)
        given.update({k.replace("-", "_"): (v, flag_name(k)) for k, v in (overrides or {}).items() if v is not None})
        kwargs: dict[str, dict] = {name: {} for name in SECTIONS}
        for name, (value, where) in given.items():
            if name not in owners:
                raise unknown_key(where, [*owners, *SECTIONS, *COMMAND_SECTIONS], hint=TRAIN_HELP, aliases=ALIASES)
            klass = SECTIONS[owners[name]]
            kwargs[owners[name]][name] = convert(_field(klass, name), value, where)
        return cls(**{name: SECTIONS[name](**kw) for name, kw in kwargs.items()})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> RunConfig:
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of options")
        try:
            return cls.from_dict(data, overrides)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def section_of(d: dict, name: str) -> dict:
    """One section of a config mapping ({} if absent or empty); a one-line error if not a mapping."""
    value = d.get(name)
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"config section '{name}' must be a mapping, got {value!r}")
    return value or {}


def given_options(d: dict | None) -> dict[str, tuple[Any, str]]:
    """The data/model/train options a config mapping sets, in sections or as flat keys:
    field -> (value, how the user named it, e.g. 'train.lr'). Another command's section
    (pretrain:, distill:) is checked whole, then left to that command."""
    given: dict[str, tuple[Any, str]] = {}
    d = d or {}
    for key, value in d.items():
        key = str(key)
        if key in SECTIONS:
            given.update({str(k).replace("-", "_"): (v, f"{key}.{k}") for k, v in section_of(d, key).items()})
        elif key in COMMAND_SECTIONS:
            COMMAND_SECTIONS[key].from_dict(section_of(d, key))
        else:
            given[key.replace("-", "_")] = (value, key)
    return given


def _field(klass: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(klass) if f.name == name)


def check_value(name: str, value: Any, where: str | None = None) -> Any:
    """One data/model/train option converted and checked on its own (e.g. a trial's value or an
    API argument): `check_value("lr", "2e-5") == 2e-05`; ConfigError naming it otherwise."""
    owners = field_owners()
    name = name.replace("-", "_")
    if name not in owners:
        raise unknown_key(where or name, owners, hint=TRAIN_HELP, aliases=ALIASES)
    return convert(_field(SECTIONS[owners[name]], name), value, where or f"{owners[name]}.{name}")


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
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def field_owners() -> dict[str, str]:
    """Field name -> section name (field names are unique across sections)."""
    return {f.name: section for section, klass in SECTIONS.items() for f in dataclasses.fields(klass)}


# -- rekit pretrain ------------------------------------------------------------------------------
@dataclass
class PretrainSettings:
    """How `rekit pretrain` trains (the MLM loop in training/pretrain.py reads these)."""

    epochs: int = _f(40, "passes over the sentences (small corpora need many; dynamic masking keeps them different)",
                     low=1)
    lr: float = _f(1e-4, "peak learning rate (a 6-layer encoder diverged at 3e-4 on KLUE-RE; see BENCHMARKS.md)",
                   low=0, low_open=True)
    batch_size: int = _f(128, "sentences per step", low=1)
    warmup_ratio: float = _f(0.06, "share of steps with linear warmup", low=0, high=1, high_open=True)
    scheduler: str = _f("linear", "decay after warmup", SCHEDULERS)
    weight_decay: float = _f(0.01, "AdamW weight decay", low=0)
    max_grad_norm: float = _f(1.0, "gradient clipping norm; 0 disables", low=0)
    mask_prob: float = _f(0.15, "share of tokens to predict", low=0, high=1, low_open=True, high_open=True)
    masking: str = _f("word", "token: single pieces; word: whole words; span: runs of whole words",
                      ("token", "word", "span"))
    max_length: int = _f(128, "tokens per sentence, longer ones are cut (KLUE-RE: 99 % fit in 128 word pieces)",
                         low=MIN_MAX_LENGTH)
    valid_share: float = _f(0.02, "share of sentences held out for an honest perplexity", low=0, high=1,
                            high_open=True)
    seed: int = _f(42, "random seed")
    max_minutes: float | None = _f(None, "time budget: shorten the schedule to fit it", low=0, low_open=True)
    precision: str = _f("auto", "auto: bf16 autocast on CUDA, fp32 on CPU", PRECISIONS)
    device: str = _f("auto", "auto, cpu, cuda, cuda:N")
    progress: bool = _f(True, "show a progress bar")
    graphs: bool = _f(True, "on CUDA (bf16/fp32): replay each batch shape's whole step as a CUDA graph, captured "
                      "once (the host launches one graph per step instead of thousands of kernels)")
    save_every: int = _f(0, "training state saved at epoch ends (0), also every N steps (N), or never (-1); "
                         "continue with --resume OUTPUT", low=-1)
    save_minutes: float = _f(5.0, "epoch-end state saves at most this often (0: every epoch end; short epochs are "
                             "common)", low=0)

    def __post_init__(self):
        coerce_fields(self, _section("pretrain"))

    @classmethod
    def from_dict(cls, d: dict | None, flags: bool = False) -> PretrainSettings:
        """From a `pretrain:` mapping (or the flags given, labelled `--name`); None values are skipped."""
        label = flag_name if flags else _section("pretrain")
        return build(cls, {k: v for k, v in (d or {}).items() if v is not None}, label,
                     hint="see `rekit pretrain --help` for the options")


# -- rekit distill -------------------------------------------------------------------------------
@dataclass
class DistillSettings:
    """How `rekit distill` trains one student from a run's fold ensemble (training/distill.py).

    Per labeled row the loss is alpha * CE(gold) + (1 - alpha) * T^2 * KL(teacher_T || student_T),
    where x_T is a distribution sharpened or softened by the temperature T (Hinton et al. 2015);
    an unlabeled row (--unlabeled) has only the T^2 * KL term."""

    # Defaults: on KLUE-RE they gave a student within 0.3 micro-F1 of its 5-fold ensemble
    # (BENCHMARKS.md "Distilling the ensemble"); no sweep of alpha and T on real data yet.
    alpha: float = _f(0.8, "weight of the gold label's cross-entropy; 1 - alpha goes to matching the ensemble's "
                      "probabilities (0: the ensemble only, 1: plain training)", low=0, high=1)
    temperature: float = _f(1.0, "softens (above 1) both the ensemble's and the student's distributions before they "
                            "are compared; out-of-fold probabilities are soft already", low=0, low_open=True)
    unlabeled: str | None = _f(None, "also learn the ensemble's probabilities on these sentences (any format "
                               "`rekit predict` reads; labels in it are ignored)")
    folds: int = _f(1, "students: 1 = one student on every labeled row (serving costs one model); K >= 2 = K "
                    "students on K folds split as `rekit train` splits them, each also learning every unlabeled "
                    "sentence and keeping its best checkpoint on its fold's held-out rows: an ensemble of students "
                    "with an out-of-fold CV score, served like any K-fold run", low=1)

    def __post_init__(self):
        coerce_fields(self, _section("distill"))

    @classmethod
    def from_dict(cls, d: dict | None, flags: bool = False) -> DistillSettings:
        """From a mapping (or the flags given, labelled `--name`); None values are skipped."""
        label = flag_name if flags else _section("distill")
        return build(cls, {k: v for k, v in (d or {}).items() if v is not None}, label,
                     hint="see `rekit distill --help` for the options")


# -- rekit tune ----------------------------------------------------------------------------------
def _s(default: Any, flag: str, help: str, choices: tuple | None = None, **limits: Any):
    return option(default, help, choices, flag=flag, **limits)


@dataclass
class TuneSettings:
    """The `tune:` section of a config file (see tuning/settings.py); every setting but `space` is a flag."""

    trials: int = _s(20, "--trials", "trials to finish (complete or pruned); a resumed study runs only the rest", low=1)
    timeout: float | None = _s(None, "--timeout", "start no new trial after this many seconds", low=0, low_open=True)
    metric: str = _s("micro_f1", "--tune-metric", "objective to maximise", OBJECTIVE_METRICS)
    folds: list = _s([], "--tune-folds", "tune on these fold indices only (the objective is then the mean of "
                     "their best scores); default: all folds (the out-of-fold CV score)", low=0)
    pruner: str = _s("median", "--pruner", "stop a trial whose score after an evaluation is below the median "
                     "of earlier trials at the same fold and evaluation", ("median", "none"))
    startup_trials: int = _s(5, "--pruner-startup-trials", "finished trials before pruning starts", low=0)
    warmup_evals: int = _s(1, "--pruner-warmup-evals", "evaluations of each fold before it can be pruned", low=0)
    sampler: str = _s("tpe", "--sampler", "how trials pick values", ("tpe", "random"))
    seed: int | None = _s(None, "--tune-seed", "sampler seed (each worker adds its index)")
    storage: str | None = _s(None, "--storage", "database URL shared by workers on several machines, e.g. "
                             "postgresql://user@host/db; default: sqlite in the study directory")
    study_name: str | None = _s(None, "--study-name", "study name in the storage; default: the study directory's name")
    workers: str = option("1", "worker processes on this machine ('auto': one per GPU, else 1)", flag="--workers",
                          parse=_count_or_auto)
    heartbeat: int = _s(60, "--heartbeat", "seconds between a running trial's heartbeats; a trial silent for "
                        f"twice as long (its worker died) is failed and re-queued; at least {MIN_HEARTBEAT_S} (a "
                        "shorter one can fail a healthy trial whose heartbeat is late on a busy machine)",
                        low=MIN_HEARTBEAT_S)
    retries: int = _s(2, "--retries", "times a trial whose worker died is re-queued", low=0)
    space: dict = _s({}, "", "the search space (config file only; default: tuning/space.py DEFAULT_SPACE)")

    def __post_init__(self):
        coerce_fields(self, _tune_label)

    @classmethod
    def from_dict(cls, d: dict | None, overrides: dict | None = None) -> TuneSettings:
        merged = {**(d or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
        return build(cls, merged, _tune_label, what="tune setting")


def _tune_label(name: str) -> str:
    flags = {f.name: f.metadata["flag"] for f in dataclasses.fields(TuneSettings)}
    if name not in flags:  # an unknown setting: named as the user wrote it
        return name
    return flags[name] or f"tune.{name}"


# The sections of other commands that a config file may hold beside data/model/train (one file
# for the whole pipeline, e.g. configs/offline-klue.yaml); each command reads its own. Not `tune:`:
# `rekit train --config` must not silently ignore a search space (rekit tune splits it off first).
COMMAND_SECTIONS: dict[str, Any] = {"pretrain": PretrainSettings, "distill": DistillSettings}
