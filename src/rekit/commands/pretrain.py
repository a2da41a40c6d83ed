"""`rekit pretrain`: masked-language-model pretraining on the task's own sentences."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rekit import configfile, lock
from rekit.commands import READ_FIELDS, add_config_flags, add_field_flag, read_options
from rekit.config import ModelConfig, PretrainSettings, check_value
from rekit.convert import flag_name
from rekit.data.formats.source import check_file
from rekit.errors import ConfigError, RekitError
from rekit.modeling.source import check_model_source
from rekit.rundir import check_new


def read_texts(paths: list[str], args, marker: str) -> list[str]:
    """Sentences of every file (labels are never read). With a marker scheme: the marked text
    of every row, exactly as `rekit train --marker` will show it to the model."""
    from rekit.data.readers import read_records
    from rekit.encoding.markers import mark

    texts: list[str] = []
    for path in paths:
        if Path(path).suffix.lower() == ".txt":  # plain text: one sentence per line
            try:
                texts.extend(Path(path).read_text(encoding="utf-8").splitlines())
            except OSError as e:
                raise ConfigError(f"cannot read {path}: {e.strerror}") from None
            continue
        records, report = read_records(path, read_options(args))
        print(report.summary())
        texts.extend(r.sentence if marker == "none" else mark(r, marker).text for r in records)
    return texts


def _saved_tokenizer(path: str, extra: list[str]):
    """A tokenizer built earlier (e.g. a morpheme vocabulary made where the analyser is installed)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--tokenizer {path}: cannot load a tokenizer there ({str(e).splitlines()[0]})") from None
    if tok.mask_token is None:
        raise ConfigError(f"--tokenizer {path}: the tokenizer has no mask token, which MLM pretraining needs")
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    return tok


MODEL_FIELDS = {"model": "scratch", "scratch_size": "small", "scratch_vocab_size": 12000, "scratch_tokenizer": "wordpiece",
                "marker": "none", "dropout": None}  # ModelConfig's options, with pretraining's defaults


def _checked(args) -> tuple[PretrainSettings, dict]:
    """The loop's settings and the model options, converted and checked like `rekit train`'s (same
    limits, same one-line errors) before any file is read or written."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainSettings) if hasattr(args, f.name)}
    settings = PretrainSettings.from_dict(flags, flags=True)
    model = {name: check_value(name, getattr(args, name), flag_name(name)) if hasattr(args, name) else default
             for name, default in MODEL_FIELDS.items()}
    return settings, model


ARGS_FILE = "command.json"  # in OUT.partial/: the arguments `--resume OUT` continues with


def resumed_args(args):
    """`--resume OUT`: the interrupted command's arguments (saved in OUT.partial/), with this
    command's --progress and --device."""
    from rekit.training.mlm import work_dir

    out = Path(args.resume)
    path = work_dir(out) / ARGS_FILE
    if not path.is_file():
        raise ConfigError(f"--resume {out}: no interrupted pretraining there (no {path})")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e}); delete {work_dir(out)} and start over") from None
    # Flags left out are absent from `args` (only given flags override), so these two are optional.
    keep = {k: getattr(args, k) for k in ("progress", "device") if getattr(args, k, None) is not None}
    keep.update(resume=args.resume, output=args.resume)
    return argparse.Namespace(**{**saved, **keep, "func": args.func})


# What `--config FILE` gives pretraining besides its pretrain: section: the scratch encoder's
# build (model.scratch_*, shared with `rekit train --model scratch`), the file and how to read it.
# model.model/marker/dropout/max_length stay fine-tuning's: pretraining has its own defaults.
FROM_RUN_CONFIG = ("train", "scratch_size", "scratch_vocab_size", "scratch_tokenizer", *READ_FIELDS)


def with_config(args):
    """The file's values for every option not given as a flag (flags win)."""
    data = configfile.load(args.config)
    values = {**configfile.run_options(data, FROM_RUN_CONFIG), **configfile.section(data, "pretrain")}
    for name, value in values.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def check_args(args) -> Path:
    """The files and the output location, checked before anything is read or written (the
    options are checked by `_checked`)."""
    if args.resume:
        return Path(args.output)
    if not args.train or not args.output:
        raise ConfigError("pass --train FILE and --output DIR (or --resume DIR to continue an interrupted run)")
    for path in [args.train, *args.extra_text]:
        check_file(Path(path))  # a mistyped path fails at once, before torch is imported
    from rekit.training.mlm import work_dir

    work = work_dir(Path(args.output))
    if (work / ARGS_FILE).is_file() and not args.overwrite:
        raise ConfigError(f"{work} holds an interrupted pretraining into {args.output}: continue it with "
                          f"rekit pretrain --resume {args.output}, or pass --overwrite to start over")
    # An earlier model there is replaced (--overwrite) only once the new one is complete.
    return check_new(args.output, args.overwrite, what="output directory", resumable=False)


def run(args) -> int:
    if args.resume and args.config:
        raise ConfigError(f"--resume {args.resume} continues with the interrupted run's own arguments; "
                          "drop --config (only --device and --progress may be given again)")
    if args.resume:
        args = resumed_args(args)
    elif args.config:
        args = with_config(args)
    settings, m = _checked(args)
    out = check_args(args)
    if m["model"] != "scratch":
        check_model_source(m["model"])  # a mistyped --model fails now, before any reading or locking
    # One writer per output directory (rekit.lock). The engine builds the model in OUT.partial/
    # and replaces OUT only once the new one is complete, so --overwrite keeps the old one till then.
    with lock.locked(out, "output directory"):
        return _pretrain(args, out, settings, m)


def _pretrain(args, out: Path, settings: PretrainSettings, m: dict) -> int:
    """Read the texts, build the tokenizer (and model), train and publish into `out`."""
    from rekit.encoding.markers import new_tokens
    from rekit.modeling import scratch
    from rekit.modeling.mlm_data import unique_texts
    from rekit.runtime import seed_everything
    from rekit.training.interrupts import TrainingInterrupted
    from rekit.training.mlm import work_dir
    from rekit.training.pretrain import pretrain

    work = work_dir(out)
    texts = unique_texts(read_texts([args.train, *args.extra_text], args, m["marker"]))
    if not texts:
        raise RekitError("no sentences to pretrain on")
    if args.tokenizer_only:
        extra = new_tokens(m["marker"], sorted(set(args.entity_types)))
        tokenizer = scratch.train_tokenizer(texts, m["scratch_vocab_size"], extra, kind=m["scratch_tokenizer"])
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out)
        print(f"tokenizer ({len(tokenizer):,} tokens, {m['scratch_tokenizer']}) saved to {out}; "
              f"use it with: rekit pretrain --tokenizer {out} ...")
        return 0
    seed_everything(settings.seed)  # before init: the weights draw from this RNG
    model, tokenizer = build(args, m, texts, work)
    try:
        pretrain(model, tokenizer, texts, settings, out, resume=bool(args.resume),
                 on_start=lambda: save_args(args, work))
    except TrainingInterrupted as e:
        print(f"rekit: interrupted ({e}). Continue with: rekit pretrain --resume {out}", file=sys.stderr)
        return 130
    print(f"encoder directory: {out}  (log: {out}/pretrain.jsonl)")
    print(f"next: rekit train --model {out} --train {args.train} --output RUN_DIR")
    return 0


def save_args(args, work: Path) -> None:
    from rekit.io import atomic_write_text

    saved = {k: v for k, v in vars(args).items() if k not in ("func", "resume")}
    atomic_write_text(work / ARGS_FILE, json.dumps(saved, indent=1, default=str) + "\n")


def build(args, m: dict, texts: list[str], work: Path):
    """The model and tokenizer to pretrain. A resumed run takes the tokenizer it started with
    (saved in the work directory); its weights come from the saved state."""
    from rekit.encoding.markers import new_tokens
    from rekit.modeling import scratch
    from rekit.training.pretrain import scratch_mlm_model

    if m["model"] == "scratch":
        # Types seen in the data get their marker tokens now, so fine-tuning adds none.
        extra = new_tokens(m["marker"], sorted(set(args.entity_types)))
        if args.resume and (work / "tokenizer").is_dir():
            tokenizer = _saved_tokenizer(str(work / "tokenizer"), [])
        elif args.tokenizer:
            tokenizer = _saved_tokenizer(args.tokenizer, extra)
        else:
            tokenizer = scratch.train_tokenizer(texts, m["scratch_vocab_size"], extra, kind=m["scratch_tokenizer"])
        return scratch_mlm_model(tokenizer, m["scratch_size"], 512, m["dropout"]), tokenizer
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from rekit.modeling.backbone import from_pretrained

    return from_pretrained(AutoModelForMaskedLM, m["model"]), from_pretrained(AutoTokenizer, m["model"])


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="MLM-pretrain an encoder on your sentences (offline: no pretrained weights needed)",
        description="Masked-language-model pretraining of a scratch (or existing) encoder on the sentences of "
        "the training file, plus those of --extra-text files (e.g. the unlabeled test set; their labels, if any, "
        "are never read). Writes a Hugging Face model directory for `rekit train --model DIR`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="YAML file: its pretrain: section, the model section's "
                   "scratch_size, scratch_vocab_size and scratch_tokenizer, data.train and how to read it (other "
                   "options and sections are left to their commands; flags win); see configs/offline-klue.yaml")
    p.add_argument("--train", help="file whose sentences to pretrain on (any format rekit reads, or .txt)")
    p.add_argument("--extra-text", nargs="+", default=[], metavar="FILE",
                   help="more files whose sentences to add (labels ignored), e.g. the unlabeled test file")
    p.add_argument("--output", help="encoder directory to write (written whole at the end; the work in progress "
                   "is kept in OUTPUT.partial/)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty output directory (the old one stays until the new one is complete)")
    p.add_argument("--resume", metavar="OUTPUT",
                   help="continue an interrupted `rekit pretrain --output OUTPUT` (crash, kill, Ctrl-C) from its saved "
                   "state, with its arguments (only --device and --progress may be given again)")
    model_group = p.add_argument_group("model options (as for rekit train)")
    for f in dataclasses.fields(ModelConfig):
        if f.name in MODEL_FIELDS:
            add_field_flag(model_group, f, MODEL_FIELDS[f.name])
    p.add_argument("--tokenizer", metavar="DIR", help="use this saved tokenizer instead of training one "
                   "(see `rekit pretrain --tokenizer-only`)")
    p.add_argument("--tokenizer-only", action="store_true",
                   help="only build the scratch tokenizer and save it to --output (no model, no training): "
                   "e.g. make a morpheme vocabulary where kiwipiepy is installed, pretrain elsewhere")
    p.add_argument("--entity-types", nargs="*", default=["PER", "ORG", "LOC", "DAT", "POH", "NOH"],
                   help="entity types whose marker tokens to add (typed_entity_marker only)")
    group = p.add_argument_group("pretraining options")
    for f in dataclasses.fields(PretrainSettings):
        add_field_flag(group, f, f.default)
    add_config_flags(p, only=READ_FIELDS, sections=("data",))
    p.set_defaults(func=run)
