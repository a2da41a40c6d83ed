"""Model cards: a `README.md` in the Hugging Face hub's format (YAML front matter, then Markdown)
for a run directory and each of its fold directories.

A card says what the model is and how it was made: base model, training file and its sha256,
labels, marker scheme, cross-validation and fold scores, and how to load it. Everything comes
from the run's own files (config.yaml, state.json, summary.json, fold-K/result.json), so a
card can be rewritten at any time (`write_run_cards`). Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from rekit.io import atomic_write_text

CARD = "README.md"
_SCORES = (("micro_f1", "micro-F1 (no_relation excluded)"), ("auprc", "AUPRC"), ("accuracy", "accuracy"))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _front_matter(base_model: str | None, labels: list[str], extra_tags: tuple[str, ...] = ()) -> str:
    meta = {"library_name": "transformers", "pipeline_tag": "text-classification",
            "tags": ["rekit", "relation-extraction", *extra_tags]}
    if base_model:
        meta["base_model"] = base_model
    meta["labels"] = list(labels)
    return "---\n" + yaml.safe_dump(meta, allow_unicode=True, sort_keys=False) + "---\n"


def _base_model(model_cfg: dict) -> str | None:
    """The hub id or path the encoder started from; None for a scratch model."""
    name = model_cfg.get("model")
    return None if not name or name == "scratch" else str(name)


def _describe_model(model_cfg: dict) -> str:
    base = _base_model(model_cfg)
    origin = (f"fine-tuned from `{base}`" if base else
              f"a `{model_cfg.get('scratch_size', '?')}` BERT trained from scratch (no pretrained weights), "
              f"with a {model_cfg.get('scratch_tokenizer', 'wordpiece')} tokenizer trained on the training file")
    return (f"- encoder: {origin}\n"
            f"- head: `{model_cfg.get('head', '?')}` (entity: the two entity-start tokens; cls: [CLS])\n"
            f"- entity markers: `{model_cfg.get('marker', '?')}`, first segment `{model_cfg.get('first_segment', '?')}`, "
            f"max_length {model_cfg.get('max_length', '?')}\n")


def _scores_line(scores: dict) -> str:
    parts = [f"{name} {scores[k]:.2f}" if k != "accuracy" else f"{name} {scores[k]:.4f}"
             for k, name in _SCORES if isinstance(scores.get(k), (int, float))]
    return ", ".join(parts) or "not available"


def _data_lines(cfg: dict, state: dict) -> str:
    train = (cfg.get("data") or {}).get("train")
    where = f"`{Path(train).name}`" if train else "in-memory records (rekit.train)"
    sha = state.get("data_sha256")
    return f"- training data: {where}" + (f", sha256 `{sha}`" if sha else "") + "\n"


def _how_to_load(fold: bool) -> str:
    text = ("## How to load\n\n```python\nimport rekit\n\nmodel = rekit.load(\"PATH\")  # this directory\n"
            "model.predict([{\"sentence\": ..., \"subject\": {\"text\": ..., \"start\": ..., \"end\": ..., \"type\": ...},\n"
            "               \"object\": {...}}])  # end offsets exclusive\n```\n\n")
    if fold:
        text += ("The encoder alone loads with transformers (`AutoModel.from_pretrained(\"PATH\")`, "
                 "`AutoTokenizer.from_pretrained(\"PATH\")`); the relation head is `head.safetensors` "
                 "(`dense.weight`, `dense.bias`, `out.weight`, `out.bias`: see rekit's README, \"Fold directories\").\n")
    else:
        text += "Command line: `rekit predict PATH --input test.csv --output submission.csv`.\n"
    return text


def _distilled_lines(run: Path, distill: dict, summary: dict) -> list[str]:
    """The card's story and scores for a run made by `rekit distill` (distill.json): one student, or
    K students on K folds (scored in summary.json)."""
    s = distill.get("settings") or {}
    k = int(s.get("folds") or 1)
    unlabeled = (f" and the ensemble's probabilities on {distill.get('n_unlabeled')} unlabeled sentences"
                 if distill.get("n_unlabeled") else "")
    teacher = (f"the {distill.get('teacher_models', '?')}-model ensemble `{distill.get('teacher', '?')}` "
               f"(fingerprint `{str(distill.get('teacher_fingerprint', '?'))[:16]}`)")
    settings = f"alpha {s.get('alpha')} (gold-label cross-entropy weight), temperature {s.get('temperature')}"
    teacher_cv = f"The teacher's cross-validation (out-of-fold): {_scores_line(distill.get('teacher_cv') or {})}\n\n"
    if k > 1:
        return [f"# {run.name}: a rekit relation-extraction ensemble of students distilled from an ensemble\n\n",
                (f"A soft-voting ensemble of {k} student models (`fold-*/`), one per fold of the "
                 f"{distill.get('n_labeled', '?')} training rows: each learned the rows outside its fold from their "
                 f"gold labels and the out-of-fold probabilities of {teacher}{unlabeled}, and kept its best "
                 f"checkpoint on its fold's held-out rows; {settings}.\n\n"),
                "## Scores\n\n",
                (f"Cross-validation of the students (out-of-fold; a little optimistic, as the teacher's targets "
                 f"came from models that had seen every row): {_scores_line(summary.get('cv') or {})}\n\n"),
                teacher_cv, *_fold_table(summary.get("folds") or []), "\n"]
    return [f"# {run.name}: a rekit relation-extraction model distilled from an ensemble\n\n",
            (f"One model (`fold-0/`) trained on all {distill.get('n_labeled', '?')} training rows from the "
             f"out-of-fold probabilities of {teacher}{unlabeled}: {settings}. It predicts at the cost of one "
             "fold model.\n\n"),
            "## Scores\n\n",
            ("Nothing was held out, so there is no cross-validation score of the student (its last epoch is "
             "kept); score it on a held-out file with `rekit evaluate`. " + teacher_cv)]


def _fold_table(folds: list[dict]) -> list[str]:
    lines = ["| fold | train | valid | best epoch | micro-F1 | AUPRC | accuracy |\n|---|---|---|---|---|---|---|\n"]
    for r in folds:
        b = r.get("best") or {}
        lines.append(f"| {r.get('fold')} | {r.get('n_train')} | {r.get('n_valid')} | {r.get('best_epoch')} | "
                     f"{b.get('micro_f1', float('nan')):.2f} | {b.get('auprc', float('nan')):.2f} | "
                     f"{b.get('accuracy', float('nan')):.4f} |\n")
    return lines


def run_card(run: Path) -> str:
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    summary, state = _read_json(run / "summary.json"), _read_json(run / "state.json")
    labels = summary.get("labels") or _read_json(run / "labels.json").get("labels", [])
    model_cfg = cfg.get("model") or {}
    folds = summary.get("folds") or []
    distill = _read_json(run / "distill.json")
    if distill:
        return "".join([_front_matter(_base_model(model_cfg), labels, ("distillation",)),
                        *_distilled_lines(run, distill, summary),
                        _describe_model(model_cfg), _data_lines(cfg, state),
                        f"- labels ({len(labels)}): " + ", ".join(f"`{x}`" for x in labels) + "\n\n",
                        _how_to_load(fold=False)])
    lines = [_front_matter(_base_model(model_cfg), labels),
             f"# {run.name}: a rekit relation-extraction ensemble\n\n",
             (f"A soft-voting ensemble of {len(folds)} fold models (K-fold cross-validation) that classifies the "
              "relation between a subject and an object entity in one sentence.\n\n"),
             _describe_model(model_cfg), _data_lines(cfg, state),
             f"- labels ({len(labels)}): " + ", ".join(f"`{x}`" for x in labels) + "\n\n",
             "## Scores\n\n", f"Cross-validation (out-of-fold): {_scores_line(summary.get('cv') or {})}\n\n",
             *_fold_table(folds), "\n", _how_to_load(fold=False)]
    return "".join(lines)


def fold_card(run: Path, fold_dir: Path) -> str:
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    state, result = _read_json(run / "state.json"), _read_json(fold_dir / "result.json")
    labels = _read_json(fold_dir / "labels.json").get("labels", [])
    model_cfg = cfg.get("model") or {}
    distilled, held_out = (run / "distill.json").is_file(), result.get("n_valid") != 0
    what = ("one student of a rekit ensemble distilled from an ensemble" if distilled and held_out
            else "the model of a rekit run distilled from an ensemble" if distilled
            else "one fold model of a rekit relation-extraction ensemble")
    scores = (f"This fold, on its validation split ({result.get('n_valid', '?')} rows, trained on "
              f"{result.get('n_train', '?')}): {_scores_line(result.get('best') or {})}" if held_out
              else f"Trained on {result.get('n_train', '?')} rows with nothing held out: no validation score here.")
    return "".join([
        _front_matter(_base_model(model_cfg), labels),
        f"# {run.name}/{fold_dir.name}: {what}\n\n",
        _describe_model(model_cfg), _data_lines(cfg, state),
        f"- labels ({len(labels)}): " + ", ".join(f"`{x}`" for x in labels) + "\n\n",
        "## Scores\n\n", scores + "\n\n",
        f"The ensemble's cross-validation scores are in `../{CARD}`.\n\n", _how_to_load(fold=True)])


def write_run_cards(run: str | Path) -> None:
    """(Re)write README.md in the run directory and in every finished fold directory."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        return
    for fold_dir in sorted(run.glob("fold-*")):
        if (fold_dir / "result.json").is_file() and (fold_dir / "labels.json").is_file():
            atomic_write_text(fold_dir / CARD, fold_card(run, fold_dir))
    atomic_write_text(run / CARD, run_card(run))


def export_card(source: Path, manifest: dict) -> str:
    """The card of an ONNX export (`rekit export`): the source run's facts, then how to run it."""
    run = source if (source / "config.yaml").is_file() else source.parent
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) if (run / "config.yaml").is_file() else {}
    summary, state = _read_json(run / "summary.json"), _read_json(run / "state.json")
    labels = _read_json(source / "labels.json").get("labels") or summary.get("labels") or []
    quant = "int8 dynamic quantisation (onnxruntime)" if manifest.get("quantized") else "fp32"
    return "".join([
        _front_matter(_base_model((cfg or {}).get("model") or {}), labels, ("onnx",)),
        f"# {run.name}: a rekit relation-extraction ensemble, exported to ONNX\n\n",
        (f"{len(manifest['models'])} fold models (`{'`, `'.join(manifest['models'])}`), {quant}, opset "
         f"{manifest.get('opset')}; inputs {', '.join(manifest['inputs'])} with dynamic batch and sequence axes; "
         "output `probs` (batch, labels), averaged over the fold models.\n\n"),
        _describe_model((cfg or {}).get("model") or {}), _data_lines(cfg or {}, state),
        f"- labels ({len(labels)}): " + ", ".join(f"`{x}`" for x in labels) + "\n",
        f"- cross-validation of the source run: {_scores_line(summary.get('cv') or {})}\n\n",
        "## How to run\n\nWith onnxruntime only (PyTorch is not imported): `pip install 'rekit[onnx]'`, then\n\n",
        ("```python\nimport rekit\n\nmodel = rekit.load(\"PATH\")  # this directory\n"
         "model.predict_proba([{\"sentence\": ..., \"subject\": {...}, \"object\": {...}}])\n```\n\n"
         "or `rekit predict PATH --input test.csv --output submission.csv`.\n")])
