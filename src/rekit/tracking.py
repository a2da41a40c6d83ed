"""Optional experiment tracking: mirror every evaluation row to TensorBoard, MLflow or W&B.

metrics.jsonl in the run directory stays the record of truth; a tracker is a view of it in a
tool people already keep open. `--report-to` picks the backend (TrainConfig.report_to). The
backend's package is imported when the tracker is opened, i.e. before the run directory is
created, so a missing package is one clear line, not a half-made run.

TensorBoard is tested end to end (event files read back); the MLflow and W&B backends are checked
against stand-ins that record the calls (their packages are heavy and not in the test extra).

A tracker is a `train_cv` callback: `tracker(fold, row)` after each evaluation, wrapped in
`with tracker.attached(run_dir, cfg):` so it is closed (and told whether the run failed) however
the run ends.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rekit.errors import ConfigError

if TYPE_CHECKING:
    from rekit.config import RunConfig

# metrics.jsonl key -> tracker tag; TensorBoard groups tags by the part before the slash.
SCALARS = {
    "train_loss": "loss/train", "valid_loss": "loss/valid",
    "micro_f1": "metrics/micro_f1", "auprc": "metrics/auprc",
    "accuracy": "metrics/accuracy", "macro_f1": "metrics/macro_f1",
    "lr": "train/lr", "epoch": "train/epoch", "samples_per_s": "train/samples_per_s",
}  # keys a row lacks are skipped
CV_KEYS = ("micro_f1", "auprc", "accuracy", "macro_f1")
# The settings worth a column in a tracker's run table (all of config.yaml goes in as text).
KEY_SETTINGS = ("model", "scratch_size", "marker", "first_segment", "head", "max_length", "dropout", "folds",
                "epochs", "lr", "batch_size", "grad_accum", "optimizer", "weight_decay", "warmup_ratio",
                "scheduler", "label_smoothing", "seed")


def flat_settings(cfg: RunConfig, keys=KEY_SETTINGS) -> dict[str, Any]:
    """Key config values as scalars (trackers' parameter tables take str/int/float/bool only)."""
    flat = {k: v for section in cfg.to_dict().values() for k, v in section.items()}
    return {k: ("none" if flat[k] is None else flat[k]) for k in keys if k in flat}


def _require(module: str, backend: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--report-to {backend} needs the {extra} package, which is not installed: "
                          f"pip install {extra}") from None


class Tracker:
    """No tracking (`--report-to none`); the base every backend overrides."""

    name = "none"

    def __call__(self, fold: int, row: dict) -> None:
        """One evaluation row of one fold, as written to metrics.jsonl."""

    def log_summary(self, summary: dict) -> None:
        """The run's CV summary (summary.json), once every fold ran."""

    def _start(self, run: Path, cfg: RunConfig) -> None:
        pass

    def _close(self, failed: bool) -> None:
        pass

    @contextlib.contextmanager
    def attached(self, run: Path, cfg: RunConfig) -> Iterator[Tracker]:
        self._start(run, cfg)
        failed = True
        try:
            yield self
            failed = False
        finally:
            self._close(failed)


class TensorBoardTracker(Tracker):
    """Event files under RUN_DIR/tensorboard/: one sub-run per fold (so TensorBoard overlays the
    folds' curves under the same tags) and `cv/` with the out-of-fold scores and the config."""

    name = "tensorboard"

    def __init__(self):
        tb = _require("torch.utils.tensorboard", "tensorboard", "tensorboard")
        self._writer_class = tb.SummaryWriter
        self._writers: dict[str, Any] = {}
        self._root: Path | None = None
        self._cfg: RunConfig | None = None

    def _writer(self, name: str):
        if name not in self._writers:
            assert self._root is not None, "start() sets the run directory first"
            self._writers[name] = self._writer_class(log_dir=str(self._root / name))
        return self._writers[name]

    def _start(self, run: Path, cfg: RunConfig) -> None:
        self._root, self._cfg = run / "tensorboard", cfg
        self._writer("cv").add_text("config", "```\n" + cfg.to_yaml() + "```")

    def __call__(self, fold: int, row: dict) -> None:
        writer = self._writer(f"fold-{fold}")
        for key, tag in SCALARS.items():
            if isinstance(row.get(key), (int, float)):
                writer.add_scalar(tag, row[key], global_step=row.get("step", 0))
        writer.flush()  # a live TensorBoard sees each evaluation; a crash keeps it

    def log_summary(self, summary: dict) -> None:
        cv = {f"cv/{k}": float(v) for k, v in (summary.get("cv") or {}).items() if k in CV_KEYS}
        writer = self._writer("cv")
        for tag, value in cv.items():
            writer.add_scalar(tag, value, global_step=0)
        if cv and self._cfg is not None:
            # The HParams tab then lists each run (e.g. each tuning trial) with its settings and score.
            writer.add_hparams(flat_settings(self._cfg), {f"hparam/{k[3:]}": v for k, v in cv.items()},
                               run_name="hparams")

    def _close(self, failed: bool) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class MLflowTracker(Tracker):
    """One MLflow run per rekit run (tracking URI from MLFLOW_TRACKING_URI, as MLflow reads it);
    fold metrics as `fold-K/<tag>` with the optimizer step."""

    name = "mlflow"

    def __init__(self):
        self._mlflow = _require("mlflow", "mlflow", "mlflow")

    def _start(self, run: Path, cfg: RunConfig) -> None:
        self._mlflow.start_run(run_name=run.name)
        self._mlflow.log_params(flat_settings(cfg))

    def __call__(self, fold: int, row: dict) -> None:
        values = {f"fold-{fold}/{tag}": float(row[k]) for k, tag in SCALARS.items()
                  if isinstance(row.get(k), (int, float))}
        self._mlflow.log_metrics(values, step=int(row.get("step", 0)))

    def log_summary(self, summary: dict) -> None:
        cv = {f"cv/{k}": float(v) for k, v in (summary.get("cv") or {}).items() if k in CV_KEYS}
        if cv:
            self._mlflow.log_metrics(cv, step=0)

    def _close(self, failed: bool) -> None:
        self._mlflow.end_run(status="FAILED" if failed else "FINISHED")


class WandbTracker(Tracker):
    """One W&B run per rekit run (project from WANDB_PROJECT, else 'rekit'). W&B wants one
    increasing step per run, and each fold restarts at step 0, so the step is logged as a value."""

    name = "wandb"

    def __init__(self):
        self._wandb = _require("wandb", "wandb", "wandb")
        self._run = None

    def _start(self, run: Path, cfg: RunConfig) -> None:
        import os

        self._run = self._wandb.init(project=os.environ.get("WANDB_PROJECT", "rekit"), name=run.name,
                                     dir=str(run), config=cfg.to_dict())

    def __call__(self, fold: int, row: dict) -> None:
        values = {f"fold-{fold}/{tag}": row[k] for k, tag in SCALARS.items() if isinstance(row.get(k), (int, float))}
        self._run.log({**values, f"fold-{fold}/step": row.get("step", 0)})

    def log_summary(self, summary: dict) -> None:
        self._run.summary.update({f"cv/{k}": v for k, v in (summary.get("cv") or {}).items() if k in CV_KEYS})

    def _close(self, failed: bool) -> None:
        if self._run is not None:
            self._run.finish(exit_code=1 if failed else 0)


BACKENDS: dict[str, type[Tracker]] = {b.name: b for b in (Tracker, TensorBoardTracker, MLflowTracker, WandbTracker)}


def open_tracker(cfg: RunConfig) -> Tracker:
    """The tracker `cfg.train.report_to` names; ConfigError when its package is missing."""
    name = cfg.train.report_to
    if name not in BACKENDS:
        raise ConfigError(f"--report-to must be one of {', '.join(BACKENDS)}; got {name!r}")
    return BACKENDS[name]()
