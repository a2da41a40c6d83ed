"""`rekit pretrain`: masked-language-model pretraining on the task's own sentences."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rekit import lock
from rekit.commands import READ_FIELDS, add_config_flags, read_options
from rekit.data.formats.source import check_file
from rekit.errors import ConfigError, RekitError
from rekit.modeling.source import check_model_source
from rekit.training.rundir import check_new


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
    keep = {"progress": args.progress, "device": args.device, "resume": args.resume, "output": args.resume}
    return argparse.Namespace(**{**saved, **keep, "func": args.func})


def check_args(args) -> Path:
    """Every flag checked, and the output location, before anything is read or written."""
    from rekit.config import MARKERS

    if args.resume:
        return Path(args.output)
    if not args.train or not args.output:
        raise ConfigError("pass --train FILE and --output DIR (or --resume DIR to continue an interrupted run)")
    if args.marker not in MARKERS:
        raise ConfigError(f"--marker must be one of {', '.join(MARKERS)}")
    if args.epochs < 1 or args.lr <= 0 or args.batch_size < 1 or not 0 < args.mask_prob < 1:
        raise ConfigError("--epochs and --batch-size must be >= 1, --lr > 0 and --mask-prob in (0, 1)")
    if args.max_length < 8 or not 0 <= args.warmup_ratio < 1:
        raise ConfigError("--max-length must be >= 8 and --warmup-ratio in [0, 1)")
    if args.save_minutes < 0:
        raise ConfigError(f"--save-minutes must be >= 0, got {args.save_minutes}")
    if args.save_every < -1:
        raise ConfigError(f"--save-every must be >= -1 (-1: never), got {args.save_every}")
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
    if args.resume:
        args = resumed_args(args)
    out = check_args(args)
    if args.model != "scratch":
        check_model_source(args.model)  # a mistyped --model fails now, before any reading or locking
    # One writer per output directory (rekit.lock). The engine builds the model in OUT.partial/
    # and replaces OUT only once the new one is complete, so --overwrite keeps the old one till then.
    with lock.locked(out, "output directory"):
        return _pretrain(args, out)


def _pretrain(args, out: Path) -> int:
    """Read the texts, build the tokenizer (and model), train and publish into `out`."""
    from rekit.encoding.markers import new_tokens
    from rekit.modeling import scratch
    from rekit.modeling.mlm_data import unique_texts
    from rekit.runtime import seed_everything
    from rekit.training.interrupts import TrainingInterrupted
    from rekit.training.mlm import work_dir
    from rekit.training.pretrain import PretrainSettings, pretrain

    work = work_dir(out)
    texts = unique_texts(read_texts([args.train, *args.extra_text], args, args.marker))
    if not texts:
        raise RekitError("no sentences to pretrain on")
    settings = PretrainSettings(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, mask_prob=args.mask_prob, masking=args.masking, max_length=args.max_length,
        seed=args.seed, max_minutes=args.max_minutes, precision=args.precision, device=args.device,
        progress=args.progress, graphs=args.graphs, save_every=args.save_every,
        save_minutes=args.save_minutes,
    )
    if args.tokenizer_only:
        extra = new_tokens(args.marker, sorted(set(args.entity_types)))
        tokenizer = scratch.train_tokenizer(texts, args.scratch_vocab_size, extra, kind=args.scratch_tokenizer)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out)
        print(f"tokenizer ({len(tokenizer):,} tokens, {args.scratch_tokenizer}) saved to {out}; "
              f"use it with: rekit pretrain --tokenizer {out} ...")
        return 0
    seed_everything(args.seed)  # before init: the weights draw from this RNG
    model, tokenizer = build(args, texts, work)
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


def build(args, texts: list[str], work: Path):
    """The model and tokenizer to pretrain. A resumed run takes the tokenizer it started with
    (saved in the work directory); its weights come from the saved state."""
    from rekit.encoding.markers import new_tokens
    from rekit.modeling import scratch
    from rekit.training.pretrain import scratch_mlm_model

    if args.model == "scratch":
        # Types seen in the data get their marker tokens now, so fine-tuning adds none.
        extra = new_tokens(args.marker, sorted(set(args.entity_types)))
        if args.resume and (work / "tokenizer").is_dir():
            tokenizer = _saved_tokenizer(str(work / "tokenizer"), [])
        elif args.tokenizer:
            tokenizer = _saved_tokenizer(args.tokenizer, extra)
        else:
            tokenizer = scratch.train_tokenizer(texts, args.scratch_vocab_size, extra, kind=args.scratch_tokenizer)
        return scratch_mlm_model(tokenizer, args.scratch_size, 512, args.dropout), tokenizer
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from rekit.modeling.backbone import _from_pretrained

    return _from_pretrained(AutoModelForMaskedLM, args.model), _from_pretrained(AutoTokenizer, args.model)


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="MLM-pretrain an encoder on your sentences (offline: no pretrained weights needed)",
        description="Masked-language-model pretraining of a scratch (or existing) encoder on the sentences of "
        "the training file, plus those of --extra-text files (e.g. the unlabeled test set; their labels, if any, "
        "are never read). Writes a Hugging Face model directory for `rekit train --model DIR`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    p.add_argument("--save-every", type=int, default=0,
                   help="also save the training state every N steps (0: at epoch ends only; -1: never)")
    p.add_argument("--save-minutes", type=float, default=5.0,
                   help="save the state at an epoch end only if the last save is at least this old (0: every epoch end)")
    p.add_argument("--model", default="scratch", help="'scratch' (new tokenizer + random init) or a model to continue pretraining")
    p.add_argument("--scratch-size", default="small", choices=("tiny", "small", "medium", "base"), help="size preset for scratch")
    p.add_argument("--scratch-vocab-size", type=int, default=12000, help="tokenizer vocabulary size for scratch")
    p.add_argument("--scratch-tokenizer", default="wordpiece", choices=("wordpiece", "morpheme"),
                   help="morpheme: vocabulary from Korean morphemes (needs kiwipiepy)")
    p.add_argument("--tokenizer", metavar="DIR", help="use this saved tokenizer instead of training one "
                   "(see `rekit pretrain --tokenizer-only`)")
    p.add_argument("--tokenizer-only", action="store_true",
                   help="only build the scratch tokenizer and save it to --output (no model, no training): "
                   "e.g. make a morpheme vocabulary where kiwipiepy is installed, pretrain elsewhere")
    p.add_argument("--marker", default="none",
                   help="'none': plain sentences; a marker scheme: the marked text of every row (as rekit train sees it)")
    p.add_argument("--entity-types", nargs="*", default=["PER", "ORG", "LOC", "DAT", "POH", "NOH"],
                   help="entity types whose marker tokens to add (typed_entity_marker only)")
    p.add_argument("--epochs", type=int, default=40, help="passes over the sentences")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (a 6-layer encoder diverged at 3e-4 on KLUE-RE; see BENCHMARKS.md)")
    p.add_argument("--batch-size", type=int, default=128, help="sentences per step")
    p.add_argument("--warmup-ratio", type=float, default=0.06, help="share of steps with linear warmup")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--mask-prob", type=float, default=0.15, help="share of tokens to predict")
    p.add_argument("--masking", default="word", choices=("token", "word", "span"),
                   help="token: single pieces; word: whole words; span: runs of whole words")
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence (longer ones are cut)")
    p.add_argument("--dropout", type=float, default=None, help="dropout of a scratch encoder (default 0.1)")
    p.add_argument("--max-minutes", type=float, default=None, help="time budget: shorten the schedule to fit it")
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--graphs", default=True, action=argparse.BooleanOptionalAction,
                   help="on CUDA (bf16/fp32): replay each batch shape's whole step as a CUDA graph, captured once "
                   "(the host launches one graph per step instead of thousands of kernels)")
    p.add_argument("--progress", default=True, action=argparse.BooleanOptionalAction, help="show a progress bar")
    add_config_flags(p, only=READ_FIELDS, sections=("data",))
    p.set_defaults(func=run)
