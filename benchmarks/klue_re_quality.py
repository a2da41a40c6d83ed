"""Quality on KLUE-RE without a pretrained backbone: the whole comparison in one command.

Trains on KLUE-RE train, scores KLUE-RE dev (dev labels are used for scoring only; dev
*sentences*, unlabeled, are part of the MLM pretraining text, as a user may add unlabeled test
sentences with `rekit pretrain --extra-text`). Rows, side by side in one run:

  (a) the community HF-Trainer recipe, scratch bert-base (benchmarks/community_recipe.py)
  (b) the type-pair majority rule (rekit.baselines.TypePairMajority)
  (c) rekit single model: `rekit pretrain` + `rekit train` fold 0, alone on dev
  (d) rekit 5-fold ensemble (the five folds of the same run)
  (e) with --distill: (d) distilled into one model (`rekit distill`), with both rows' inference speed

plus ablations, each one change to (c) on fold 0 (pretraining, input/markers, head, tokenizer,
loss, augmentations) or one addition to it (R-Drop; ADDITIONS), and prior adaptation
(`--adapt-priors em`) on (c) and (d). Jobs run as subprocesses, several at a time on one GPU,
optional ones only while the time budget allows.

    python benchmarks/klue_re_quality.py --out $OUT --budget-minutes 9          # GPU
    python benchmarks/klue_re_quality.py --out /tmp/q --smoke                   # CPU, seconds
    python benchmarks/klue_re_quality.py --out $OUT --budget-minutes 14 --distill --ablations none  # + (e)

Writes OUT/quality.json, OUT/quality.md (a BENCHMARKS.md-ready table) and OUT/logs.txt (the end
of every job's log); models, runs and full logs go to --work (default OUT/work).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from jobs import Job, run_inline, run_jobs  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "klue-re"

RECIPE_FILE = ROOT / "configs" / "offline-klue.yaml"


def read_recipe(path: Path = RECIPE_FILE) -> dict:
    """The shipped recipe file in the shape the jobs use: size, vocab, tokenizer, pretrain, finetune
    (model + train sections), distill. Checked as `rekit train/pretrain/distill --config` check it."""
    from rekit import configfile

    c = configfile.load(path)
    finetune = configfile.run_options(c)  # the file's data/model/train options, converted
    return {"size": finetune.pop("scratch_size"), "vocab": finetune.pop("scratch_vocab_size"),
            "tokenizer": finetune.pop("scratch_tokenizer"), "pretrain": configfile.section(c, "pretrain"),
            "finetune": finetune, "distill": configfile.section(c, "distill")}


# The offline recipe (GPU), read from configs/offline-klue.yaml so the two cannot diverge.
# Pretraining: MLM on train + dev sentences; fine-tuning: typed entity markers (punct) read by the
# entity-start head. Every ablation changes one thing of "finetune".
RECIPE = read_recipe()
# The same pipeline at CPU-seconds scale (--smoke): tiny sizes, one epoch, two folds.
SMOKE = {
    **RECIPE, "size": "tiny", "vocab": 1500,
    "pretrain": {**RECIPE["pretrain"], "epochs": 1, "lr": 1e-3, "batch_size": 32, "max_length": 96},
    "finetune": {**RECIPE["finetune"], "epochs": 1, "lr": 1e-3, "max_length": 96, "folds": 2},
}
# name -> (what changes, flag overrides of the fold-0 fine-tune, pretraining variant or None).
# In priority order: optional jobs start in this order while the budget allows.
ABLATIONS = {
    "no_pretraining": ("pretraining: none (random init, lr 3e-4 as the issue's probe)",
                       {"model": "scratch", "lr": "3e-4"}, None),
    "no_rdrop": ("regularisation: no R-Drop (one dropout pass per step)", {"rdrop": "0"}, None),
    "no_llrd": ("optimisation: no layer-wise learning-rate decay", {"layer_decay": "1.0"}, None),
    "morpheme": ("tokenizer: morpheme vocabulary instead of WordPiece", {}, "morpheme"),
    "input_community": ("input: no markers, 'subj[SEP]obj' + sentence, [CLS] head",
                        {"marker": "none", "first_segment": "entities", "head": "cls"}, None),
    "focal": ("loss: focal (gamma 2)", {"loss": "focal"}, None),
    "aug_swap_entity": ("augmentation: subject/object swap + same-type entity replacement",
                        {"augment": "swap,entity"}, None),
    "aug_mask": ("augmentation: random token masking (10 %)", {"augment": "mask"}, None),
    "head_cls": ("head: [CLS] instead of entity starts (markers kept)", {"head": "cls"}, None),
    "query": ("input: Korean query first segment", {"first_segment": "query"}, None),
    "label_smoothing": ("loss: label smoothing 0.1", {"label_smoothing": "0.1"}, None),
    "aug_punct": ("augmentation: punctuation insertion (AEDA)", {"augment": "punct"}, None),
    "pretrain_train_only": ("pretraining text: train sentences only (no dev sentences)", {}, "train_only"),
    "epochs10": ("training: 10 epochs instead of the recipe's 6", {"epochs": "10"}, None),
    "rdrop2": ("regularisation: R-Drop weight 2.0 instead of 1.0", {"rdrop": "2.0"}, None),
    "llrd08": ("optimisation: layer-wise LR decay 0.8 instead of 0.9", {"layer_decay": "0.8"}, None),
}
SMOKE_ABLATIONS = ("no_pretraining", "focal")
# Ablations that need no job: the recipe's own fold models scored another way.
POSTHOC = {"no_type_constraints": "prediction: no type-pair constraints (the same models' raw probabilities)"}
# Ablations that add an option (c) leaves off, rather than change one of its choices: their gain is
# theirs over (c), the ablation minus (c), where the others' is (c)'s over them.
ADDITIONS: set[str] = {"epochs10", "rdrop2", "llrd08"}
# Each of these trains a second encoder, which would share the GPU with the main pretraining and
# slow it down: they run only when named in --ablations.
SECOND_PRETRAINING = ("morpheme", "pretrain_train_only")


def rekit(*args: str) -> list[str]:
    return [sys.executable, "-m", "rekit.cli", *args]


EAGER = False  # --eager: no CUDA graphs anywhere (a fallback if they fail on some machine)


def pretrain_cmd(r: dict, train: str, extra: list[str], out: Path, max_minutes: float, tokenizer: str) -> list[str]:
    """`tokenizer`: wordpiece, morpheme (built here with kiwipiepy) or a saved tokenizer directory."""
    p = r["pretrain"]
    tok = ["--scratch-tokenizer", tokenizer] if tokenizer in ("wordpiece", "morpheme") else ["--tokenizer", tokenizer]
    cmd = rekit("pretrain", "--train", train, "--output", str(out), "--overwrite", "--scratch-size", r["size"],
                "--scratch-vocab-size", str(r["vocab"]), *tok, "--epochs", str(p["epochs"]),
                "--lr", str(p["lr"]), "--batch-size", str(p["batch_size"]), "--masking", p["masking"],
                "--max-length", str(p["max_length"]), "--max-minutes", f"{max_minutes:.2f}", "--no-progress")
    cmd += ["--no-graphs"] if EAGER else []
    return cmd + (["--extra-text", *extra] if extra else [])


# The fine-tuning options passed on to `rekit train` (an ablation's or --variant's own as well).
FINETUNE_KEYS = ("epochs", "lr", "batch_size", "warmup_ratio", "dropout", "marker", "head", "first_segment",
                 "max_length", "metric", "loss", "augment", "label_smoothing", "rdrop", "layer_decay", "type_constraints")


# --variant keys that change the encoder: the variant's folds then start from a second pretraining.
PRETRAIN_VARIANT_KEYS = ("size", "pretrain_seed")


def finetune_cmd(r: dict, model: str, train: str, out: Path, fold: int, **over: str) -> list[str]:
    f = {**r["finetune"], **over}
    cmd = rekit("train", "--train", train, "--output", str(out), "--overwrite", "--model", model,
                "--scratch-size", r["size"], "--scratch-vocab-size", str(r["vocab"]), "--folds", str(f["folds"]),
                "--only-folds", str(fold), "--no-progress", "--eval-batch-size", "512")
    cmd += ["--compile", "off"] if EAGER else []
    for key in dict.fromkeys((*FINETUNE_KEYS, *over)):  # an ablation's own option always reaches the command
        flag = key.replace("_", "-")
        if isinstance(f.get(key), bool):
            cmd += [f"--{flag}" if f[key] else f"--no-{flag}"]
        elif key in f:
            cmd += [f"--{flag}", str(f[key])]
    return cmd


def matched_pretrain(r: dict, train: str, extra: list[str], out: Path, tokenizer: str, main_dir: Path):
    """A pretraining variant run for as many epochs as the main pretraining managed in its time
    budget (read when the variant starts), so the comparison is like for like."""
    def cmd() -> list[str]:
        done = _read_json(main_dir / "pretrain.json") or {}
        epochs = max(1, int(done.get("epochs_run") or r["pretrain"]["epochs"]))
        q = {**r, "pretrain": {**r["pretrain"], "epochs": epochs}}
        return pretrain_cmd(q, train, extra, out, 60.0, tokenizer)  # generous cap: same epochs matter
    return cmd


def merged_teacher(r: dict, work: Path, train: str) -> Path:
    """The fold runs merged into one run directory (when a job that reads it starts, after every fold)."""
    from rekit.data.labels import LabelMap
    from rekit.data.readers import read_records

    records, _ = read_records(train)
    merge_folds(work, r["finetune"]["folds"], records, LabelMap.infer([x.label for x in records]))
    return work / "rekit-5fold"


def distill_cmd(r: dict, work: Path, train: str, dev: str, unlabeled: bool, flags: str = ""):
    """`rekit distill` of the merged fold runs into one model."""
    def cmd() -> list[str]:
        cmd = rekit("distill", str(merged_teacher(r, work, train)), "--output", str(work / "distilled"), "--overwrite",
                    "--no-progress", "--eval-batch-size", "512")
        cmd += [x for k, v in r["distill"].items() for x in (f"--{k.replace('_', '-')}", str(v))]
        cmd += ["--compile", "off"] if EAGER else []
        return cmd + (["--unlabeled", dev] if unlabeled else []) + shlex.split(flags)
    return cmd


def students_cmd(r: dict, work: Path, train: str, dev: str):
    """Self-training: `rekit distill --folds K` of the merged fold runs: K students on the same folds,
    each learning its training rows (gold + out-of-fold probabilities) and the dev sentences
    (unlabeled: the ensemble's probabilities), each validated on its held-out rows."""
    def cmd() -> list[str]:
        cmd = rekit("distill", str(merged_teacher(r, work, train)), "--output", str(work / "students"), "--overwrite",
                    "--no-progress", "--eval-batch-size", "512", "--folds", str(r["finetune"]["folds"]),
                    "--unlabeled", dev)
        return cmd + (["--compile", "off"] if EAGER else [])
    return cmd


def community_cmd(args, train: str, dev: str, work: Path, t0: float):
    """The community recipe (row a), started once the encoder is pretrained: beside the pretraining
    its bert-base slowed the MLM steps of the encoder every rekit row starts from (16 against 9 ms
    per step). Its wall-time cap (setup, training and dev scoring), fixed when it starts, is what is
    left of the budget before the scoring; what it has trained by then is scored."""
    def cmd() -> list[str]:
        left = args.budget_minutes - (time.time() - t0) / 60 - (1.0 if args.smoke else 1.75)  # reserve + margin
        cmd = [sys.executable, str(ROOT / "benchmarks" / "community_recipe.py"), "--train", train, "--dev", dev,
               "--out", str(work / "community"), "--precision", args.community_precision,
               "--max-minutes", f"{max(0.2, left):.2f}"]
        return cmd + (["--smoke", "--epochs", "1", "--max-length", "64"] if args.smoke else [])
    return cmd


def variant_jobs(variant: dict, r: dict, work: Path, train: str, dev: str, pre_minutes: float, pre_estimate: float,
                 ft_estimate: float) -> list[Job]:
    """--variant: every fold of the recipe again with its fine-tuning options (the same folds), from a
    second encoder pretrained beside the main one when it names pretraining options (size, pretrain_seed)."""
    if not variant:
        return []
    ft = {k: v for k, v in variant.items() if k not in PRETRAIN_VARIANT_KEYS}
    jobs, model, after = [], str(work / "enc-main"), ["pretrain"]
    if set(variant) & set(PRETRAIN_VARIANT_KEYS):
        q = {**r, "size": variant.get("size", r["size"])}
        cmd = pretrain_cmd(q, train, [dev], work / "enc-var", pre_minutes, r["tokenizer"])
        jobs.append(Job("pretrain_var", [*cmd, "--seed", variant.get("pretrain_seed", "42")], estimate=pre_estimate,
                        required=True))
        model, after = str(work / "enc-var"), ["pretrain_var"]
    for k in range(r["finetune"]["folds"]):
        jobs.append(Job(f"var{k}", finetune_cmd(r, model, train, work / f"var-fold{k}", k, **ft), after=after,
                        estimate=ft_estimate, required=True))
    return jobs


def plan(args, r: dict, work: Path, train: str, dev: str) -> list[Job]:
    """The job list in priority order: the rows first, then ablations."""
    budget = args.budget_minutes * 60
    pre_minutes = max(0.2, min(args.pretrain_minutes, 0.5 * args.budget_minutes))
    ft_estimate = 30.0 if args.smoke else args.finetune_estimate
    pre_estimate = pre_minutes * 60 + 40
    jobs = [Job("pretrain", pretrain_cmd(r, train, [dev], work / "enc-main", pre_minutes, r["tokenizer"]),
                estimate=pre_estimate, required=True)]
    if not args.no_community:
        jobs.append(Job("community", community_cmd(args, train, dev, work, t0=time.time()), estimate=budget,
                        required=True, after=["pretrain"]))
    folds = r["finetune"]["folds"]
    for k in range(folds):
        jobs.append(Job(f"fold{k}", finetune_cmd(r, str(work / "enc-main"), train, work / f"run-fold{k}", k),
                        after=["pretrain"], estimate=ft_estimate, required=True))
    jobs += variant_jobs(args.variant, r, work, train, dev, pre_minutes, pre_estimate, ft_estimate)
    if args.self_train:  # K students on train + dev sentences: about 1.3 fold jobs per epoch, at the same time
        jobs.append(Job("students", students_cmd(r, work, train, dev), after=[f"fold{k}" for k in range(folds)],
                        estimate=ft_estimate * 1.4, required=True))
    if args.distill:  # one model on every row: about K/(K-1) of a fold job per epoch, plus the merge
        jobs.append(Job("distill", distill_cmd(r, work, train, dev, args.distill_unlabeled, args.distill_flags),
                        after=[f"fold{k}" for k in range(folds)], estimate=ft_estimate * 1.5))
    if args.ablations:
        names = () if args.ablations == "none" else tuple(x.strip() for x in args.ablations.split(",") if x.strip())
    else:
        names = SMOKE_ABLATIONS if args.smoke else tuple(n for n in ABLATIONS if n not in SECOND_PRETRAINING)
    # The morpheme vocabulary: a prebuilt one (`rekit pretrain --tokenizer-only --scratch-tokenizer
    # morpheme`, where kiwipiepy is installed) or built here if kiwipiepy is importable.
    morph = args.morpheme_tokenizer if args.morpheme_tokenizer and Path(args.morpheme_tokenizer).is_dir() else (
        "morpheme" if importlib.util.find_spec("kiwipiepy") else None)
    for name in names:
        _, over, variant = ABLATIONS[name]
        if variant == "morpheme" and morph is None:
            continue
        after, model = ["pretrain"], str(work / "enc-main")
        if variant:
            enc = work / f"enc-{variant}"
            extra = [] if variant == "train_only" else [dev]
            tok = morph if variant == "morpheme" else "wordpiece"
            jobs.append(Job(f"pretrain_{variant}", matched_pretrain(r, train, extra, enc, tok, work / "enc-main"),
                            after=["pretrain"], estimate=pre_estimate))
            after, model = [f"pretrain_{variant}"], str(enc)
        early = over.get("model") == "scratch"  # needs no pretraining: may share the GPU with it
        if early:
            after, model = [], "scratch"
        over = {k: v for k, v in over.items() if k != "model"}
        jobs.append(Job(f"abl_{name}", finetune_cmd(r, model, train, work / f"abl-{name}", 0, **over),
                        after=after, estimate=ft_estimate, early=early))
    return jobs


# -- scoring ---------------------------------------------------------------------------------
def scores(y, probs, label_map) -> dict:
    from rekit.metrics import evaluate

    m = evaluate(y, probs, label_map)
    return {k: round(float(m[k]), 4 if k == "accuracy" else 2) for k in ("micro_f1", "auprc", "accuracy")}


def model_ready(d: Path) -> bool:
    return (d / "model.safetensors").is_file() and (d / "rekit.json").is_file()


def dev_probas(dirs: list[Path], dev_records, device: str) -> tuple[list, list, list[int]]:
    """Each model's dev probabilities as `rekit predict` gives them (with its type-pair constraints,
    if it has them), the same without them, and parameter counts (dev encoded once per tokenizer)."""
    from rekit.data.constraints import constrain
    from rekit.ensemble import Ensemble

    ens = Ensemble(dirs, device=device, batch_size=512, keep_loaded=False, type_constraints=False)
    raw = ens.member_probas(dev_records)
    pairs = [(_read_json(d / "rekit.json") or {}).get("type_pairs") for d in dirs]
    probs = [constrain(p, dev_records, tp, ens.classes_) for p, tp in zip(raw, pairs)]
    from safetensors import safe_open

    params = []
    for d in dirs:
        with safe_open(str(d / "model.safetensors"), "np") as f:
            params.append(sum(_numel(f.get_slice(k).get_shape()) for k in f.keys()))  # noqa: SIM118 (safe_open is not iterable)
    return probs, raw, params


def median_rate(n: int, run, sync, repeats: int) -> float:
    """Samples/s of `run()` over n rows: the median of `repeats` timed calls (one short pass on a
    GPU is at the mercy of clocks and of other processes, so a single timing is not enough)."""
    rates = []
    for _ in range(max(1, repeats)):
        sync()
        t = time.perf_counter()
        run()
        sync()
        rates.append(n / (time.perf_counter() - t))
    return round(statistics.median(rates), 1)


def inference_rates(dirs: list[Path], records, device: str, repeats: int = 3) -> dict[str, float]:
    """Samples/s of the models in `dirs` as one ensemble, loaded once and warmed up first:
    `infer_samples_per_s`, the whole prediction (tokenising, batching, the models), and
    `forward_samples_per_s`, the models' forward passes alone (rows encoded once, before the clock
    starts): what K models cost against one, without the tokenising and copying both pay."""
    import torch

    from rekit.encoding.tokenize import REEncoder
    from rekit.ensemble import Ensemble
    from rekit.modeling.inference import predict_proba

    ens = Ensemble(dirs, device=device, batch_size=512)
    ens.predict_proba(records[:512])  # loads every member (bf16 on a GPU), warms the kernels up
    sync = torch.cuda.synchronize if ens.device.type == "cuda" else (lambda: None)
    whole = median_rate(len(records), lambda: ens.predict_proba(records), sync, repeats)
    members = [ens._member(i) for i in range(len(dirs))]  # the loaded models, as predict runs them
    spec = members[0][0].spec
    feats = REEncoder(members[0][1], spec.marker, spec.max_length, spec.first_segment).encode(records)
    amp = None if ens.amp_dtype == torch.bfloat16 else ens.amp_dtype

    def forward() -> None:
        for model, tok, _ in members:
            predict_proba(model, feats, tok.pad_token_id, 512, ens.device, amp)

    return {"infer_samples_per_s": whole, "forward_samples_per_s": median_rate(len(records), forward, sync, repeats)}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def oof_of(dirs: list[Path], y_train, average: bool = False):
    """(probs, labels) of the folds' out-of-fold predictions (training rows only), or None. With
    `average`, rows predicted by several models (folds of two runs on the same split) get their mean."""
    import numpy as np

    from rekit import rundir

    ps, idxs = [], []
    for d in dirs:
        if (d / rundir.FOLD_OOF).is_file() and (d / rundir.RESULT).is_file():
            idx, probs, _ = rundir.load_fold(d)
            ps.append(probs)
            idxs.append(idx)
    if not ps:
        return None
    idx, probs = np.concatenate(idxs), np.concatenate(ps)
    if average:
        rows, inverse = np.unique(idx, return_inverse=True)
        total = np.zeros((len(rows), probs.shape[1]))
        np.add.at(total, inverse, probs)
        idx, probs = rows, total / np.bincount(inverse)[:, None]
    return probs, y_train[idx]


def typepair_mixture(dirs: list[Path], train, y_train, label_map):
    """Mixture weights (network, type-pair rule) maximising the OOF likelihood. The rule's OOF
    probabilities come from rules fit on each fold's training rows only. -> weights (2,) or None."""
    import numpy as np

    from rekit import rundir
    from rekit.baselines import TypePairMajority
    from rekit.ensemble import fit_run_weights

    nets, rules, ys = [], [], []
    for d in dirs:
        if not ((d / rundir.FOLD_OOF).is_file() and (d / rundir.RESULT).is_file()):
            continue
        idx, probs, _ = rundir.load_fold(d)
        held = set(idx.tolist())
        rule = TypePairMajority().fit([r for i, r in enumerate(train) if i not in held])
        nets.append(probs)
        rules.append(rule.predict_proba([train[i] for i in idx], label_map))
        ys.append(y_train[idx])
    if not nets:
        return None
    return fit_run_weights([np.concatenate(nets), np.concatenate(rules)], np.concatenate(ys))


def merge_folds(work: Path, folds: int, records, label_map) -> Path | None:
    """The fold runs (one process each) merged into one rekit run directory (oof.csv, summary.json)."""
    from rekit import rundir
    from rekit.training.cv import finalize

    merged = work / "rekit-5fold"
    merged.mkdir(exist_ok=True)
    for k in range(folds):
        src = work / f"run-fold{k}" / f"fold-{k}"
        if (src / "result.json").is_file() and not (merged / f"fold-{k}").exists():
            shutil.move(str(src), str(merged / f"fold-{k}"))
    if not rundir.folds_done(merged):
        return None
    for name in ("config.yaml", "labels.json"):
        if (work / "run-fold0" / name).is_file():
            shutil.copy(work / "run-fold0" / name, merged / name)
    try:
        finalize(merged, records, label_map, {"merged_from": [f"run-fold{k}" for k in range(folds)]}, echo=lambda *_: None)
    except Exception as e:  # noqa: BLE001 - the dev scores do not need the OOF file
        print(f"warning: could not write the merged run's OOF summary: {e}", file=sys.stderr)
    return merged


def evaluate_all(args, r: dict, work: Path, jobs: dict[str, Job], train_path: str, dev_path: str) -> dict:
    import numpy as np

    from rekit.adapt import apply_bcts, em_priors, fit_bcts, label_prior
    from rekit.baselines import TypePairMajority
    from rekit.data.labels import LabelMap
    from rekit.data.readers import read_records

    train, _ = read_records(train_path)
    dev, _ = read_records(dev_path)
    label_map = LabelMap.infer([x.label for x in train])
    dev = [x for x in dev if x.label in label_map.label2id]
    y = np.asarray([label_map.label2id[x.label] for x in dev])
    prior = label_prior(np.asarray([label_map.label2id[x.label] for x in train]), len(label_map))
    rows: dict[str, dict] = {}
    minutes = lambda *names: round(sum((jobs[n].seconds or 0) for n in names if n in jobs) / 60, 2)  # noqa: E731

    # (a) community recipe
    cres = work / "community" / "result.json"
    if cres.is_file():
        c = json.loads(cres.read_text())
        rows["a"] = {"name": "community HF-Trainer recipe, scratch bert-base", **c["metrics"],
                     "job_minutes": minutes("community"), "parameters": c["parameters"],
                     "detail": f"{c['steps']} steps, {c['precision']}, padded to {c['padded_length']} tokens"}
        rows["a"] = {k: (round(v, 4 if k == "accuracy" else 2) if isinstance(v, float) else v) for k, v in rows["a"].items()}
    # (b) type-pair majority
    base = TypePairMajority().fit(train)
    rows["b"] = {"name": "type-pair majority rule", **scores(y, base.predict_proba(dev, label_map), label_map),
                 "job_minutes": 0.0, "parameters": 0}

    # fold models of the main recipe and the ablations, scored on dev in one pass
    folds = r["finetune"]["folds"]
    merged = merge_folds(work, folds, train, label_map)
    fold_dirs = {k: (merged / f"fold-{k}" if merged and (merged / f"fold-{k}").is_dir()
                     else work / f"run-fold{k}" / f"fold-{k}") for k in range(folds)}
    fold_dirs = {k: d for k, d in fold_dirs.items() if model_ready(d)}
    abl_dirs = {n: work / f"abl-{n}" / "fold-0" for n in ABLATIONS if model_ready(work / f"abl-{n}" / "fold-0")}
    var_dirs = {k: work / f"var-fold{k}" / f"fold-{k}" for k in range(folds) if model_ready(work / f"var-fold{k}" / f"fold-{k}")}
    dirs = list(fold_dirs.values()) + list(abl_dirs.values()) + list(var_dirs.values())
    probs, raw, params = dev_probas(dirs, dev, args.device) if dirs else ([], [], [])
    by_dir = {str(d): (p, n) for d, p, n in zip(dirs, probs, params)}
    raw_of = {str(d): p for d, p in zip(dirs, raw)}
    pre = jobs.get("pretrain")
    y_train = np.asarray([label_map.label2id[x.label] for x in train])

    def add(key: str, name: str, probs, oof, job_min: float, n_params: int) -> None:
        """A row, plus its prior-adapted variants: EM alone, and EM after BCTS calibration on OOF."""
        rows[key] = {"name": name, **scores(y, probs, label_map), "job_minutes": job_min, "parameters": n_params}
        adapted = em_priors(probs, prior)
        rows[key + "+em"] = {"name": name + " + --adapt-priors em", **scores(y, adapted[0], label_map),
                             "job_minutes": job_min, "parameters": n_params,
                             "estimated_no_relation_share": round(float(adapted[1][label_map.label2id.get("no_relation", 0)]), 4)}
        if oof is not None:
            t, b = fit_bcts(*oof)
            adapted = em_priors(apply_bcts(probs, t, b), prior)
            rows[key + "+bcts+em"] = {"name": name + " + --calibrate bcts --adapt-priors em", **scores(y, adapted[0], label_map),
                                      "job_minutes": job_min, "parameters": n_params, "temperature": round(t, 3),
                                      "estimated_no_relation_share":
                                          round(float(adapted[1][label_map.label2id.get("no_relation", 0)]), 4)}

    if 0 in fold_dirs:
        p0, n0 = by_dir[str(fold_dirs[0])]
        add("c", "rekit single model (fold 0)", p0, oof_of([fold_dirs[0]], y_train), minutes("pretrain", "fold0"), n0)
        rows["c"]["holdout_micro_f1"] = holdout_f1(fold_dirs[0])
        rows["c-tc"] = {"name": "(c) without type-pair constraints", **scores(y, raw_of[str(fold_dirs[0])], label_map)}
    if fold_dirs:
        pe = np.mean([by_dir[str(d)][0] for d in fold_dirs.values()], axis=0)
        rows["d-tc"] = {"name": "(d) without type-pair constraints",
                        **scores(y, np.mean([raw_of[str(d)] for d in fold_dirs.values()], axis=0), label_map)}
        n = sum(by_dir[str(d)][1] for d in fold_dirs.values())
        add("d", f"rekit {len(fold_dirs)}-fold ensemble", pe, oof_of(list(fold_dirs.values()), y_train),
            minutes("pretrain", *[f"fold{i}" for i in fold_dirs]), n)
        w = typepair_mixture(list(fold_dirs.values()), train, y_train, label_map)
        if w is not None:
            q = w[0] * pe + w[1] * base.predict_proba(dev, label_map)
            rows["d+typepair"] = {"name": f"(d) mixed with the type-pair rule, weight {w[0]:.2f}/{w[1]:.2f} fit on OOF",
                                  **scores(y, q, label_map), "job_minutes": rows["d"]["job_minutes"], "parameters": n}

    if var_dirs:
        rows.update(variant_rows(args.variant, var_dirs, by_dir, y, label_map))
    if var_dirs and fold_dirs:
        both = [by_dir[str(d)][0] for d in (*fold_dirs.values(), *var_dirs.values())]
        rows["d+dv"] = {"name": f"(d) and (dv) averaged ({len(both)} models)", **scores(y, np.mean(both, axis=0), label_map),
                        "job_minutes": 0.0, "parameters": rows["d"]["parameters"] + rows["dv"]["parameters"]}
    main_folds, var_folds = list(fold_dirs.values()), list(var_dirs.values())
    for key, fdirs in (("d", main_folds), ("dv", var_folds), ("d+dv", main_folds + var_folds)):
        oof = oof_of(fdirs, y_train, average=True)
        if key in rows and oof is not None:
            rows[key]["oof"] = {**scores(oof[1], oof[0], label_map), "rows": len(oof[1])}

    student = work / "distilled" / "fold-0"
    if model_ready(student) and jobs.get("distill") and jobs["distill"].status == "ok":
        (ps,), (ps_raw,), (ns,) = dev_probas([student], dev, args.device)
        raw_of["student"] = ps_raw
        info = _read_json(work / "distilled" / "distill.json") or {}
        how = ", dev sentences unlabeled" if info.get("n_unlabeled") else ""
        rows["e"] = {"name": f"(d) distilled into one model (rekit distill{how})",
                     **scores(y, ps, label_map), "parameters": ns,
                     "job_minutes": minutes("pretrain", *[f"fold{i}" for i in fold_dirs], "distill")}
        if "d" in rows:
            rows["d"].update(inference_rates(list(fold_dirs.values()), dev, args.device))
            rows["e"].update(inference_rates([student], dev, args.device))

    rows.update(students_row(args, work, jobs, dev, y, label_map, minutes("pretrain", *[f"fold{i}" for i in fold_dirs],
                                                                          "students")))
    improvements = []
    if "c" in rows:
        ref = rows["c"]
        for name, d in abl_dirs.items():
            p, _ = by_dir[str(d)]
            job = jobs.get(f"abl_{name}")
            improvements.append({**ablation_row(name, scores(y, p, label_map), ref, job.status if job else "?"),
                                 "holdout_micro_f1": holdout_f1(d)})
        if "c-tc" in rows and (_read_json(fold_dirs[0] / "rekit.json") or {}).get("type_pairs"):  # the recipe has them
            improvements.append(ablation_row("no_type_constraints", rows["c-tc"], ref, "ok"))
    if args.save_probs:
        save_probs(Path(args.out) / "probs.npz", y, y_train, raw_of, fold_dirs, abl_dirs, var_dirs)
    return {"rows": rows, "ablations": improvements,
            "type_constraints_oof": type_constraints_oof(list(fold_dirs.values()), train, y_train, label_map),
            "pretrain": _read_json(work / "enc-main" / "pretrain.json"),
            "stopped_folds": [k for k in range(folds) if jobs.get(f"fold{k}") and jobs[f"fold{k}"].status == "stopped"],
            "dev_rows": len(dev), "train_rows": len(train), "parameters_note": "(d) counts all fold models",
            "pretrain_seconds": pre.seconds if pre else None}


def type_constraints_oof(dirs: list[Path], train, y_train, label_map) -> dict | None:
    """The choice made on training data: the folds' out-of-fold rows scored raw and with type-pair
    constraints learned from each fold's own training rows. -> {"raw": scores, "constrained": scores}."""
    import numpy as np

    from type_constraints import constrained_oof

    folds = constrained_oof(dirs, train, label_map)
    if not folds:
        return None
    y = np.concatenate([y_train[idx] for _, idx, *_ in folds])
    return {"raw": scores(y, np.concatenate([f[2] for f in folds]), label_map),
            "constrained": scores(y, np.concatenate([f[3] for f in folds]), label_map)}


def variant_rows(variant: dict, var_dirs: dict, by_dir: dict, y, label_map) -> dict:
    """Rows (cv) and (dv): fold 0 and the K-fold ensemble of the recipe with --variant's options."""
    import numpy as np

    what = ", ".join(f"{k} {v}" for k, v in variant.items())
    rows = {}
    if 0 in var_dirs:
        p, n = by_dir[str(var_dirs[0])]
        rows["cv"] = {"name": f"(c) with {what}", **scores(y, p, label_map), "job_minutes": 0.0, "parameters": n,
                      "holdout_micro_f1": holdout_f1(var_dirs[0])}
    probs = [by_dir[str(d)][0] for d in var_dirs.values()]
    rows["dv"] = {"name": f"(d) with {what} ({len(probs)} folds)", **scores(y, np.mean(probs, axis=0), label_map),
                  "job_minutes": 0.0, "parameters": sum(by_dir[str(d)][1] for d in var_dirs.values())}
    return rows


def save_probs(path: Path, y, y_train, raw_of: dict, fold_dirs: dict, abl_dirs: dict, var_dirs: dict) -> None:
    """Every scored model's raw dev probabilities (no type constraints) and the folds' out-of-fold
    ones, for post-hoc work on a CPU without a GPU run (choices on the OOF arrays, dev to score):
    dev_y, dev_fold{k}, dev_abl_{name}, dev_student, oof_probs, oof_y, oof_index, oof_fold; with
    --variant also dev_var_fold{k} and var_oof_*."""
    import numpy as np

    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    arrays = {"dev_y": np.asarray(y)}
    arrays.update({f"dev_fold{k}": f32(raw_of[str(d)]) for k, d in fold_dirs.items() if str(d) in raw_of})
    arrays.update({f"dev_var_fold{k}": f32(raw_of[str(d)]) for k, d in var_dirs.items() if str(d) in raw_of})
    arrays.update({f"dev_abl_{n}": f32(raw_of[str(d)]) for n, d in abl_dirs.items() if str(d) in raw_of})
    if "student" in raw_of:
        arrays["dev_student"] = f32(raw_of["student"])
    arrays.update(_oof_arrays(fold_dirs, y_train, "oof_"))
    arrays.update(_oof_arrays(var_dirs, y_train, "var_oof_"))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _oof_arrays(fold_dirs: dict, y_train, prefix: str) -> dict:
    """The folds' out-of-fold rows: {prefix}index, probs, fold, y (nothing if no fold has them)."""
    import numpy as np

    from rekit import rundir

    parts = [(k, *rundir.load_fold(d)[:2]) for k, d in fold_dirs.items()
             if (d / rundir.FOLD_OOF).is_file() and (d / rundir.RESULT).is_file()]
    if not parts:
        return {}
    index = np.concatenate([idx for _, idx, _ in parts])
    return {f"{prefix}index": index, f"{prefix}probs": np.concatenate([p for _, _, p in parts]).astype(np.float32),
            f"{prefix}fold": np.concatenate([np.full(len(idx), k) for k, idx, _ in parts]),
            f"{prefix}y": np.asarray(y_train)[index]}


def holdout_f1(fold_dir: Path) -> float | None:
    """The fold's best micro-F1 on its own held-out training rows (what a user can choose by: no dev labels)."""
    best = (_read_json(fold_dir / "result.json") or {}).get("best") or {}
    return round(best["micro_f1"], 2) if "micro_f1" in best else None


def ablation_row(name: str, s: dict, ref: dict, status: str) -> dict:
    """An ablation's dev scores and its gain: (c) minus the ablation (what the recipe's choice gains),
    or for one of ADDITIONS the ablation minus (c) (what the addition gains), under its own key."""
    kind, sign = ("addition", -1) if name in ADDITIONS else ("recipe", 1)
    change = POSTHOC[name] if name in POSTHOC else ABLATIONS[name][0]
    return {"change": change, "ablation": name, **s, "adds": name in ADDITIONS,
            f"gain_of_{kind}_micro_f1": round(sign * (ref["micro_f1"] - s["micro_f1"]), 2),
            f"gain_of_{kind}_auprc": round(sign * (ref["auprc"] - s["auprc"]), 2), "status": status}


def students_row(args, work: Path, jobs: dict[str, Job], dev, y, label_map, job_minutes: float) -> dict:
    """Row (f): the self-trained students' ensemble (`rekit distill --folds K`), if it finished."""
    import numpy as np

    job = jobs.get("students")
    dirs = sorted(d for d in (work / "students").glob("fold-*") if model_ready(d))
    if not dirs or job is None or job.status != "ok":
        return {}
    probs, _, params = dev_probas(dirs, dev, args.device)
    return {"f": {"name": f"self-trained: {len(dirs)} students on (d)'s folds + dev sentences (rekit distill --folds)",
                  **scores(y, np.mean(probs, axis=0), label_map), "job_minutes": job_minutes,
                  "parameters": sum(params)}}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- report ----------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    rows = result["rows"]
    if result.get("error"):
        return f"Scoring failed after the jobs ran:\n\n```\n{result['error']}```\n"
    lines = [f"Machine: {result['machine']}. Command: `{result['command']}`. Wall clock {result['wall_minutes']:.1f} min "
             f"(budget {result['budget_minutes']} min); jobs ran concurrently on one device, so job-minutes overlap.",
             "", "| row | recipe | micro-F1 | AUPRC | accuracy | job-minutes | parameters |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for key in ("a", "b", "c", "c+em", "c+bcts+em", "d", "d+em", "d+bcts+em", "d+typepair", "cv", "dv", "d+dv", "f", "e"):
        if key in rows:
            x = rows[key]
            lines.append(f"| ({key}) | {x['name']} | {x['micro_f1']:.2f} | {x['auprc']:.2f} | {x['accuracy']:.3f} | "
                         f"{x['job_minutes']:.1f} | {x['parameters'] / 1e6:.1f}M |")
        elif key in ("a", "b", "c", "d"):
            lines.append(f"| ({key}) | not finished in this run | | | | | |")
    abl = result.get("ablations") or []
    held = rows.get("c", {}).get("holdout_micro_f1")
    lines += ablation_table([a for a in abl if not a.get("adds")], "recipe",
                            "Each ablation changes one thing of (c) (fold 0, same split, dev scored without "
                            "adaptation); gain = (c) minus the ablation.", held)
    # The comparisons below (row minus its reference) continue the additions' table if there is one.
    lines += ablation_table([a for a in abl if a.get("adds")], "addition",
                            "Each addition adds one option to (c) (fold 0, same split, dev scored without "
                            "adaptation); gain = the addition minus (c).", held)
    if "c" in rows and "d" in rows:
        lines.append(f"| ensemble: {rows['d']['name']} vs fold 0 | {rows['d']['micro_f1']:.2f} | {rows['d']['auprc']:.2f} | "
                     f"{rows['d']['micro_f1'] - rows['c']['micro_f1']:+.2f} | {rows['d']['auprc'] - rows['c']['auprc']:+.2f} |")
    if "no_type_constraints" in {a["ablation"] for a in abl} and "d-tc" in rows:
        d, x = rows["d"], rows["d-tc"]
        lines.append(f"| type-pair constraints: (d) without them | {x['micro_f1']:.2f} | {x['auprc']:.2f} | "
                     f"{d['micro_f1'] - x['micro_f1']:+.2f} | {d['auprc'] - x['auprc']:+.2f} |")
    if "d" in rows and "f" in rows:
        f, d = rows["f"], rows["d"]
        lines.append(f"| self-training: (f) instead of (d) | {f['micro_f1']:.2f} | {f['auprc']:.2f} | "
                     f"{f['micro_f1'] - d['micro_f1']:+.2f} | {f['auprc'] - d['auprc']:+.2f} |")
    for key, what in (("d+em", "--adapt-priors em"), ("d+bcts+em", "--calibrate bcts --adapt-priors em")):
        if key in rows:
            lines.append(f"| prior adaptation: {what} on (d) | {rows[key]['micro_f1']:.2f} | {rows[key]['auprc']:.2f} | "
                         f"{rows[key]['micro_f1'] - rows['d']['micro_f1']:+.2f} | "
                         f"{rows[key]['auprc'] - rows['d']['auprc']:+.2f} |")
    if "d" in rows and "e" in rows:
        d, e = rows["d"], rows["e"]
        lines += ["", f"Distillation: (e) vs (d): micro-F1 {e['micro_f1'] - d['micro_f1']:+.2f}, AUPRC "
                  f"{e['auprc'] - d['auprc']:+.2f}; inference on dev {e['infer_samples_per_s']:,.0f} vs "
                  f"{d['infer_samples_per_s']:,.0f} samples/s ({e['infer_samples_per_s'] / d['infer_samples_per_s']:.1f}x); "
                  f"the models' forward passes alone {e['forward_samples_per_s']:,.0f} vs {d['forward_samples_per_s']:,.0f} "
                  f"samples/s ({e['forward_samples_per_s'] / d['forward_samples_per_s']:.1f}x)."]
    oof = [f"({k}) {rows[k]['oof']['micro_f1']:.2f} / {rows[k]['oof']['auprc']:.2f}" for k in ("d", "dv", "d+dv")
           if "oof" in rows.get(k, {})]
    if oof:
        lines += ["", "Out-of-fold rows (training data, the measure to choose by), micro-F1 / AUPRC: " + "; ".join(oof) + "."]
    tc = result.get("type_constraints_oof")
    if tc:
        lines += ["", "Type-pair constraints on the folds' out-of-fold rows (training data; each fold's constraints "
                  f"learned from its own training rows): micro-F1 {tc['raw']['micro_f1']:.2f} -> "
                  f"{tc['constrained']['micro_f1']:.2f}, AUPRC {tc['raw']['auprc']:.2f} -> {tc['constrained']['auprc']:.2f}."]
    pre = result.get("pretrain") or {}
    if pre.get("final"):
        lines += ["", f"Pretraining: {pre['steps']:,} steps ({pre['epochs_run']} epochs) in {pre['seconds']:.0f}s, "
                  f"held-out MLM perplexity {pre['final']['valid_perplexity']}" + (f"; {pre['note']}" if pre.get("note") else "")]
    return "\n".join(lines) + "\n"


def ablation_table(abl: list[dict], kind: str, intro: str, ref_holdout: float | None = None) -> list[str]:
    """Markdown lines of the ablations' table: kind 'recipe' (gain of (c) over each) or 'addition'.
    The last column is the fold's micro-F1 on its held-out training rows, (c)'s in the heading."""
    if not abl:
        return []
    ref = f"{ref_holdout:.2f}" if ref_holdout is not None else "?"
    lines = ["", intro, "", f"| change | micro-F1 | AUPRC | gain of the {kind} (micro-F1) | gain (AUPRC) | "
             f"held-out train rows micro-F1 ((c): {ref}) |", "|---|---:|---:|---:|---:|---:|"]
    for a in abl:
        note = "" if a["status"] == "ok" else f" ({a['status']})"
        held = a.get("holdout_micro_f1")
        lines.append(f"| {a['change']}{note} | {a['micro_f1']:.2f} | {a['auprc']:.2f} | "
                     f"{a[f'gain_of_{kind}_micro_f1']:+.2f} | {a[f'gain_of_{kind}_auprc']:+.2f} | "
                     f"{'' if held is None else f'{held:.2f}'} |")
    return lines


def write_log_tails(log_dir: Path, dest: Path, lines: int = 25) -> None:
    """The end of every job's log in one file (a device run returns only a few files)."""
    parts = []
    for log in sorted(log_dir.glob("*.log")):
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        parts.append(f"==> {log.name} <==\n" + "\n".join(tail))
    dest.write_text("\n\n".join(parts) + "\n", encoding="utf-8")


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, Python {platform.python_version()}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}, Python {platform.python_version()}"


def inline_runner(job: Job) -> int:
    """Run a job's command in this process (rekit CLI or the community script)."""
    if job.cmd[1:3] == ["-m", "rekit.cli"]:
        from rekit.cli import main as rekit_main

        return rekit_main(job.cmd[3:])
    import community_recipe

    return community_recipe.main(job.cmd[2:])


def smoke_data(work: Path) -> tuple[str, str]:
    """A few hundred synthetic rows as community CSV files (no KLUE data needed)."""
    from rekit.data.readers import write_csv
    from rekit.data.synthetic import make_splits

    train, dev = make_splits(seed=3, n_train=240, n_test=100)
    write_csv(train, work / "train.csv")
    write_csv(dev, work / "dev.csv")
    return str(work / "train.csv"), str(work / "dev.csv")


def parse_variant(text: str) -> dict[str, str]:
    """'rdrop=2.0,layer_decay=0.8' -> {'rdrop': '2.0', 'layer_decay': '0.8'} (FINETUNE_KEYS, PRETRAIN_VARIANT_KEYS)."""
    return _key_values(text, (*FINETUNE_KEYS, *PRETRAIN_VARIANT_KEYS))


def parse_pretrain_set(text: str) -> dict[str, str]:
    """'batch_size=256,lr=1.5e-4' -> {'batch_size': '256', 'lr': '1.5e-4'} (keys of the recipe's pretrain:)."""
    return _key_values(text, tuple(RECIPE["pretrain"]))


def _key_values(text: str, keys: tuple[str, ...]) -> dict[str, str]:
    pairs = [x.split("=", 1) for x in text.split(",") if x.strip()]
    bad = [x[0] for x in pairs if len(x) != 2 or x[0].strip() not in keys]
    if bad or not pairs:
        raise argparse.ArgumentTypeError(f"want KEY=VALUE pairs with keys from {', '.join(keys)}"
                                         + (f"; got {bad[0]!r}" if bad else ""))
    return {k.strip(): v.strip() for k, v in pairs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="where quality.json / quality.md / logs go")
    p.add_argument("--work", help="models and runs (default OUT/work; large)")
    p.add_argument("--train", default=str(SHARED / "train.csv"))
    p.add_argument("--dev", default=str(SHARED / "dev.csv"))
    p.add_argument("--budget-minutes", type=float, default=9.0, help="wall-clock budget of the whole run")
    p.add_argument("--pretrain-minutes", type=float, default=4.0,
                   help="time cap of each MLM pretraining (at most half the budget)")
    p.add_argument("--eager", action="store_true", help="no CUDA graphs (pretrain --no-graphs, train --compile off)")
    p.add_argument("--finetune-estimate", type=float, default=120.0,
                   help="expected seconds of one fold job (gates optional jobs)")
    p.add_argument("--jobs", type=int, default=None, help="concurrent jobs (default 8 on CUDA, 2 on CPU)")
    p.add_argument("--size", choices=("tiny", "small", "medium", "base"), help="encoder size (default: the recipe's)")
    p.add_argument("--morpheme-tokenizer", default=str(ROOT / "out" / "klue-morpheme-tokenizer"),
                   help="prebuilt morpheme tokenizer for the tokenizer ablation (else kiwipiepy, else skipped)")
    p.add_argument("--community-precision", choices=("tf32", "fp32"), default="tf32")
    p.add_argument("--no-community", action="store_true")
    p.add_argument("--ablations", help=f"comma-separated ablations to run, in priority order, or 'none' "
                   f"(default: all; --smoke: {','.join(SMOKE_ABLATIONS)}); choices: {', '.join(ABLATIONS)}")
    p.add_argument("--distill", action="store_true",
                   help="also distil (d) into one model after its folds (rekit distill; optional job) and score it: row (e)")
    p.add_argument("--distill-unlabeled", action="store_true",
                   help="with --distill: the dev sentences (labels unused) are the student's unlabeled text, as "
                   "they are the MLM pretraining's")
    p.add_argument("--distill-flags", default="", help="with --distill: more `rekit distill` flags for the student, "
                   "e.g. '--alpha 0.8 --epochs 4' (default: rekit's defaults and the folds' settings)")
    p.add_argument("--self-train", action="store_true",
                   help="row (f): after (d), `rekit distill --folds K --unlabeled DEV` trains K students on the same "
                   "folds, each also learning (d)'s probabilities on the dev sentences (labels unused); their ensemble")
    p.add_argument("--pretrain-set", type=parse_pretrain_set, default={}, metavar="KEY=VALUE[,KEY=VALUE...]",
                   help="change the recipe file's pretraining options for this run (e.g. batch_size=256,lr=1.5e-4); "
                   f"keys: {', '.join(RECIPE['pretrain'])}")
    p.add_argument("--variant", type=parse_variant, default={},
                   help="KEY=VALUE[,KEY=VALUE...]: also train every fold of the recipe with these fine-tuning options "
                   "(e.g. rdrop=2.0,layer_decay=0.8), from a second encoder pretrained beside the main one if they "
                   "name size or pretrain_seed (the two pretrainings then share the device: on one H200 each gets "
                   "about half the MLM steps): rows (cv), (dv), (d+dv) (both ensembles averaged), and their "
                   "out-of-fold scores, the training-data measure to choose by")
    p.add_argument("--save-probs", action="store_true",
                   help="also write OUT/probs.npz: every scored model's raw dev probabilities and the folds' "
                   "out-of-fold ones (about 10 MB on KLUE-RE), for post-hoc work without a GPU")
    p.add_argument("--device", default="auto", help="device for the dev evaluation")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on synthetic data: seconds on a CPU (implies --inline)")
    p.add_argument("--inline", action="store_true", help="run the jobs one by one in this process (no subprocesses)")
    p.add_argument("--subprocesses", action="store_true", help="run jobs as subprocesses even with --smoke")
    p.add_argument("--dry-run", action="store_true", help="print the job plan (commands, dependencies) and exit")
    args = p.parse_args(argv)
    global EAGER
    EAGER = args.eager
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub anywhere in this benchmark
    args.inline = (args.inline or args.smoke) and not args.subprocesses
    unknown = [n for n in (args.ablations or "").split(",") if n.strip() and n.strip() not in (*ABLATIONS, "none")]
    if unknown:
        p.error(f"unknown ablation {unknown[0]!r}; choose from {', '.join(ABLATIONS)}")
    import torch

    threads = torch.get_num_threads()
    if args.inline and not torch.cuda.is_available():
        torch.set_num_threads(1)  # small models on a shared CPU: extra threads only contend
    try:
        return run(args, p, argv)
    finally:
        torch.set_num_threads(threads)  # leave the process as it was (the smoke test runs in pytest's)


def run(args, p: argparse.ArgumentParser, argv: list[str] | None) -> int:
    import torch

    t0 = time.time()
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    r = json.loads(json.dumps(SMOKE if args.smoke else RECIPE))
    if args.size:
        r["size"] = args.size
    r["pretrain"].update(args.pretrain_set)
    train, dev = smoke_data(work) if args.smoke else (args.train, args.dev)
    for path in (train, dev):
        if not Path(path).is_file():
            p.error(f"{path} not found; pass --train/--dev")
    cuda = torch.cuda.is_available()
    max_parallel = args.jobs or (8 if cuda else 2)
    reserve = 20 if args.smoke else 75  # for the dev evaluation and the report after the jobs
    deadline = t0 + args.budget_minutes * 60 - reserve
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1" if cuda else "2", "RAYON_NUM_THREADS": "2",
           "TOKENIZERS_PARALLELISM": "true"}
    jobs = plan(args, r, work, train, dev)
    command = "python benchmarks/klue_re_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.dry_run:
        for j in jobs:
            cmd = " ".join(j.cmd) if isinstance(j.cmd, list) else "(built when it starts)"
            print(f"{j.name}: {'required' if j.required else 'optional'}{', early' if j.early else ''}, after {j.after or '-'}, "
                  f"~{j.estimate:.0f}s\n    {cmd}")
        return 0
    print(f"{len(jobs)} jobs, up to {max_parallel} at a time, deadline in {deadline - t0:.0f}s", flush=True)
    if args.inline:
        os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
        done = run_inline(jobs, inline_runner)
    else:
        done = run_jobs(jobs, max_parallel, deadline, work / "logs", env)
    result = {"machine": machine(), "command": command, "budget_minutes": args.budget_minutes, "recipe": r,
              "smoke": args.smoke, "jobs": {n: j.summary() for n, j in done.items()}}
    try:
        result.update(evaluate_all(args, r, work, done, train, dev))
    except Exception:  # noqa: BLE001 - a one-shot GPU run must still return what it measured
        import traceback

        result.update(rows={}, ablations=[], error=traceback.format_exc())
        print(result["error"], file=sys.stderr)
    result["wall_minutes"] = round((time.time() - t0) / 60, 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "quality.md").write_text(markdown(result), encoding="utf-8")
    write_log_tails(work / "logs", out / "logs.txt")
    print(markdown(result))
    print(f"wrote {out / 'quality.json'} and {out / 'quality.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
