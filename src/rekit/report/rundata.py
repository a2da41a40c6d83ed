"""Read a run directory back: config, state, summary, metrics, fold results, out-of-fold predictions.

Everything is optional except config.yaml: a run that is still running, was interrupted or ran only
some folds has fewer files, and the readers of this module (`rekit runs`, `compare`, `report`) show
what there is instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from rekit.errors import ConfigError
from rekit.rundir import OOF_CSV, oof_rows


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _json_object(path: Path) -> dict | None:
    """A JSON object file; None if absent; ConfigError naming the file if it is there but malformed."""
    if not path.is_file():
        return None
    data = _json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: malformed (not a JSON object)")
    return data


@dataclass
class RunData:
    dir: Path
    config: dict  # config.yaml, sections data/model/train
    state: dict = field(default_factory=dict)
    summary: dict | None = None
    folds: list[dict] = field(default_factory=list)  # each done fold's result.json
    labels: list[str] = field(default_factory=list)
    no_relation: str | None = None

    def setting(self, key: str, default=None):
        for section in self.config.values():
            if isinstance(section, dict) and key in section:
                return section[key]
        return default

    @property
    def status(self) -> str:
        return self.state.get("status") or ("finished" if self.summary else "unknown")

    def score(self, metric: str) -> tuple[float | None, str]:
        """(value, source): the out-of-fold CV score, else the mean of the finished folds' best. A fold
        that held nothing out (`rekit distill`'s, n_valid 0) has no score to count."""
        cv = (self.summary or {}).get("cv") or {}
        if metric in cv:
            return float(cv[metric]), "oof"
        values = [f["best"][metric] for f in self.folds if metric in (f.get("best") or {}) and f.get("n_valid") != 0]
        return (float(np.mean(values)), "folds") if values else (None, "")

    def per_class(self) -> list[dict]:
        return list((self.summary or {}).get("per_class") or [])

    def metrics(self) -> list[dict]:
        """metrics.jsonl rows (fold, epoch, step, train_loss, valid_loss, micro_f1, auprc, ...)."""
        rows = []
        try:
            with open(self.dir / "metrics.jsonl", encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a crash
                    if isinstance(row, dict):  # anything else is not a metrics row
                        rows.append(row)
        except OSError:
            pass
        return rows


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and ((path / "state.json").is_file() or (path / "summary.json").is_file())


def load_run(path: str | Path) -> RunData:
    run = Path(path)
    if not is_run_dir(run):
        raise ConfigError(f"{run} is not a run directory (no config.yaml and state.json)")
    try:
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as e:  # ValueError: not UTF-8
        raise ConfigError(f"{run / 'config.yaml'}: cannot read ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise ConfigError(f"{run / 'config.yaml'}: malformed (expected data/model/train sections)")
    summary = _json_object(run / "summary.json")
    if summary is not None and not isinstance(summary.get("cv", {}), dict):
        raise ConfigError(f"{run / 'summary.json'}: malformed (cv is not an object)")
    folds = []
    for d in sorted(run.glob("fold-*"), key=lambda p: (len(p.name), p.name)):
        result = _json(d / "result.json")
        if isinstance(result, dict) and isinstance(result.get("best", {}), dict):
            folds.append(result)
    labels_file = _json(run / "labels.json")
    labels_file = labels_file if isinstance(labels_file, dict) else {}
    labels = list(labels_file.get("labels") or (summary or {}).get("labels") or [])
    no_rel = labels_file.get("no_relation", (summary or {}).get("no_relation"))
    state = _json(run / "state.json")
    return RunData(run, config, state if isinstance(state, dict) else {}, summary,
                   folds, labels, no_rel)


def find_runs(root: str | Path) -> list[Path]:
    """Run directories at or under `root` (a study's trials included), sorted by path."""
    root = Path(root)
    found = {p.parent for p in root.rglob("config.yaml") if is_run_dir(p.parent)}
    return sorted(found, key=lambda p: str(p))


@dataclass
class OOF:
    ids: list[str]
    fold: np.ndarray  # (N,)
    gold: np.ndarray  # (N,) label ids
    probs: np.ndarray  # (N, C)

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)


def load_oof(run: RunData) -> OOF | None:
    """The held-out rows of oof.csv (rows never held out, fold -1, are left out); None without it."""
    path = run.dir / OOF_CSV
    if not path.is_file() or not run.labels:
        return None
    index = {label: i for i, label in enumerate(run.labels)}
    ids, folds, gold, probs = [], [], [], []
    for id_, fold, label, p in oof_rows(path):
        if fold < 0 or p is None or label not in index:
            continue
        ids.append(id_)
        folds.append(fold)
        gold.append(index[label])
        probs.append(p)
    if not ids:
        return None
    return OOF(ids, np.asarray(folds), np.asarray(gold), np.asarray(probs, dtype=np.float64))
