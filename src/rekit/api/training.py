"""`rekit.train`: K-fold training from Python, on a file, a list of examples or a DataFrame."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from rekit.api.examples import to_records
from rekit.errors import ConfigError

log = logging.getLogger("rekit")


@dataclass
class TrainResult:
    """What `rekit.train` made. `cv`: out-of-fold scores (micro_f1, auprc, accuracy, ...);
    `folds`: one dict per fold (its best validation scores under "best"); paths into the run."""

    output: Path
    status: str  # "finished", or "partial" when only some folds were trained (only_folds)
    cv: dict = field(default_factory=dict)
    folds: list[dict] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # the whole summary.json

    @property
    def fold_dirs(self) -> list[Path]:
        return sorted(self.output.glob("fold-*"), key=lambda d: int(d.name[5:]) if d.name[5:].isdigit() else 0)

    @property
    def oof_path(self) -> Path:
        return self.output / "oof.csv"

    @property
    def summary_path(self) -> Path:
        return self.output / "summary.json"


def train(train, output: str | Path, model: str = "scratch", folds: int = 5, **options) -> TrainResult:
    """Train a K-fold ensemble into `output` (a new directory; overwrite=True replaces one).

    train: a file path (any format `rekit train` reads), a list of examples (dicts or Records,
    with labels) or a DataFrame in the community CSV layout. options: any `rekit train` option by
    its config name (epochs=3, lr=5e-5, max_length=128, scratch_size="tiny", device="cpu", ...).
    Progress goes to the "rekit" logger.
    """
    from rekit.config import RunConfig
    from rekit.training.cv import train_cv

    is_path = isinstance(train, (str, Path))
    records = None if is_path else to_records(train)
    if "train" in options or "output" in options:
        raise ConfigError("pass the training data and output directory as train= and output=")
    options.setdefault("progress", False)
    cfg = RunConfig.from_dict({"data": {"train": str(train) if is_path else None}, "model": {"model": model},
                               "train": {"output": str(output), "folds": folds}}, overrides=options)
    summary = train_cv(cfg, echo=_log_lines, records=records)
    return TrainResult(Path(output), summary.get("status", "finished"), summary.get("cv") or {},
                       summary.get("folds") or [], summary.get("labels") or [], summary)


def _log_lines(*parts, **_) -> None:
    log.info(" ".join(str(p) for p in parts))
