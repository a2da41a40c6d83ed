"""--report-to: TensorBoard event files mirror metrics.jsonl; missing backends fail before a run starts.

One tiny 2-fold, 2-epoch scratch run (about 5-10 s on 2 CPU cores); the rest needs no training.
"""

import json
import sys
import types

import pytest

from rekit.cli import main
from rekit.config import RunConfig
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.errors import ConfigError
from rekit.tracking import SCALARS, open_tracker

TINY = {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500, "max_length": 64, "folds": 2,
        "epochs": 2, "lr": 1e-3, "progress": False}


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("track") / "train.csv"
    write_csv(make_splits(seed=1, n_train=160, n_test=10)[0], path)
    return path


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_every_evaluation_and_the_cv_score(train_csv, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard (the tensorboard/test extra) is not installed")
    from rekit.training.cv import train_cv

    run = tmp_path / "run"
    summary = train_cv(RunConfig.from_dict({}, {**TINY, "train": str(train_csv), "output": str(run),
                                                "report_to": "tensorboard"}), echo=lambda *_: None)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted((run / "tensorboard").iterdir()) == [run / "tensorboard" / n for n in ("cv", "fold-0", "fold-1")]
    for fold in (0, 1):
        logged = scalars(run / "tensorboard" / f"fold-{fold}")
        mine = [r for r in rows if r["fold"] == fold]
        assert set(logged) == {tag for key, tag in SCALARS.items() if key in mine[0]}
        assert len(mine) == 2  # one evaluation per epoch
        for key in ("micro_f1", "auprc", "train_loss", "valid_loss"):
            assert logged[SCALARS[key]] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in mine]
    cv = scalars(run / "tensorboard" / "cv")
    assert cv["cv/micro_f1"] == [(0, pytest.approx(summary["cv"]["micro_f1"], rel=1e-6))]
    assert cv["cv/auprc"] == [(0, pytest.approx(summary["cv"]["auprc"], rel=1e-6))]
    assert any((run / "tensorboard" / "cv" / "hparams").glob("events.out.tfevents.*"))  # the HParams tab


@pytest.mark.parametrize("backend, module, install", [
    ("mlflow", "mlflow", "pip install mlflow"),
    ("wandb", "wandb", "pip install wandb"),
    ("tensorboard", "torch.utils.tensorboard", "pip install tensorboard"),
])
def test_missing_backend_is_one_clear_line_and_no_run_directory(backend, module, install, train_csv, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError, as when not installed
    with pytest.raises(ConfigError, match=f"--report-to {backend} needs .* not installed: {install}"):
        open_tracker(RunConfig.from_dict({}, {"report_to": backend}))
    out = tmp_path / "run"
    rc = main(["train", "--train", str(train_csv), "--output", str(out), "--model", "scratch", "--report-to", backend])
    err = capsys.readouterr().err
    assert rc == 2 and install in err and err.count("\n") == 1
    assert not out.exists()  # failed before the run directory was made


def test_report_to_rejects_unknown_backends():
    with pytest.raises(ConfigError, match="--report-to must be one of none, tensorboard, mlflow, wandb"):
        RunConfig.from_dict({}, {"report_to": "neptune"})


class Recorder(types.ModuleType):
    """A stand-in module that records the calls made to it (checks rekit's side of the contract only)."""

    def __init__(self, name):
        super().__init__(name)
        self.calls = []

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def record(*args, **kwargs):
            self.calls.append((attr, args, kwargs))
            return self

        return record


ROW = {"epoch": 1.0, "step": 7, "lr": 1e-3, "train_loss": 2.5, "valid_loss": 2.0, "micro_f1": 40.0, "auprc": 30.0,
       "accuracy": 0.5, "macro_f1": 20.0, "time": 1.0}


def test_mlflow_tracker_logs_params_fold_metrics_and_cv(monkeypatch, tmp_path):
    fake = Recorder("mlflow")
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    cfg = RunConfig.from_dict({}, {"report_to": "mlflow", "lr": 3e-4})
    tracker = open_tracker(cfg)
    with tracker.attached(tmp_path / "my-run", cfg):
        tracker(1, ROW)
        tracker.log_summary({"cv": {"micro_f1": 55.0, "n": 10}})
    names = [c[0] for c in fake.calls]
    assert names == ["start_run", "log_params", "log_metrics", "log_metrics", "end_run"]
    assert fake.calls[0][2] == {"run_name": "my-run"} and fake.calls[1][1][0]["lr"] == 3e-4
    assert fake.calls[2][1][0]["fold-1/metrics/micro_f1"] == 40.0 and fake.calls[2][2] == {"step": 7}
    assert fake.calls[3][1][0] == {"cv/micro_f1": 55.0}
    assert fake.calls[4][2] == {"status": "FINISHED"}


def test_a_failing_run_closes_the_tracker_as_failed(monkeypatch, tmp_path):
    fake = Recorder("mlflow")
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    cfg = RunConfig.from_dict({}, {"report_to": "mlflow"})
    tracker = open_tracker(cfg)
    with pytest.raises(RuntimeError), tracker.attached(tmp_path / "r", cfg):
        raise RuntimeError("boom")
    assert fake.calls[-1] == ("end_run", (), {"status": "FAILED"})


def test_wandb_tracker_logs_each_fold_step_as_a_value(monkeypatch, tmp_path):
    class Run:
        def __init__(self, **kwargs):
            self.init, self.logged, self.summary, self.exit_code = kwargs, [], {}, None

        def log(self, values):
            self.logged.append(values)

        def finish(self, exit_code):
            self.exit_code = exit_code

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: fake.__dict__.setdefault("run", Run(**kw))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    cfg = RunConfig.from_dict({}, {"report_to": "wandb", "lr": 2e-4})
    tracker = open_tracker(cfg)
    with tracker.attached(tmp_path / "r", cfg):
        tracker(0, ROW)
        tracker.log_summary({"cv": {"auprc": 61.0}})
    run = fake.run
    assert run.init["project"] == "rekit" and run.init["name"] == "r" and run.init["config"]["train"]["lr"] == 2e-4
    assert run.logged == [{**{f"fold-0/{tag}": ROW[k] for k, tag in SCALARS.items() if k in ROW}, "fold-0/step": 7}]
    assert run.summary == {"cv/auprc": 61.0} and run.exit_code == 0
