"""`rekit runs` and `rekit compare` on real (tiny) run directories: two finished runs and a partial one.

Three 1-epoch scratch runs on 120 synthetic rows: about 10 s on 2 CPU cores.
"""

import json

import pytest

from rekit.cli import main
from rekit.config import RunConfig
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.training.cv import train_cv

TINY = {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500, "max_length": 64, "folds": 2,
        "epochs": 1, "progress": False}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_csv(make_splits(seed=2, n_train=120, n_test=10)[0], root / "train.csv")
    settings = {"a": {"lr": 1e-3}, "b": {"lr": 3e-3, "head": "cls"}, "sub/c": {"lr": 1e-3, "only_folds": [1]}}
    for name, extra in settings.items():
        cfg = RunConfig.from_dict({}, {**TINY, **extra, "train": str(root / "train.csv"), "output": str(root / name)})
        train_cv(cfg, echo=lambda *_: None)
    return root


def test_runs_lists_every_run_with_status_scores_and_settings(runs, capsys):
    assert main(["runs", str(runs)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line and not line.startswith("*")}
    assert set(lines) == {"a", "b", "sub/c"}
    a = json.loads((runs / "a" / "summary.json").read_text())
    assert lines["a"][1] == "finished" and lines["a"][2] == f"{a['cv']['micro_f1']:.2f}"
    assert lines["a"][3] == f"{a['cv']['auprc']:.2f}"
    assert lines["b"][4:7] == ["scratch", "typed_entity_marker_punct", "cls"] and lines["b"][7] == "0.003"
    c_best = json.loads((runs / "sub" / "c" / "fold-1" / "result.json").read_text())["best"]
    assert lines["sub/c"][1] == "partial" and lines["sub/c"][2] == f"{c_best['micro_f1']:.2f}*"
    assert lines["sub/c"][-1] == "1/2"
    assert "* mean of the folds that ran" in out


def test_runs_sorts_by_score_and_handles_empty_or_missing_dirs(runs, tmp_path, capsys):
    assert main(["runs", str(runs), "--sort", "auprc"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:] if line and not line.startswith("*")]
    scores = [float(r[3].rstrip("*")) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert main(["runs", str(tmp_path)]) == 0
    assert "no run directories" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_compare_shows_config_differences_scores_and_per_class_f1(runs, capsys):
    assert main(["compare", str(runs / "a"), str(runs / "b")]) == 0
    out = capsys.readouterr().out
    diffs = {line.split()[0]: line.split()[1:] for line in out.split("config differences:")[1].split("CV scores")[0]
             .splitlines()[3:] if line.strip()}
    assert diffs == {"head": ["entity", "->", "cls"], "lr": ["0.001", "->", "0.003"]}
    a = json.loads((runs / "a" / "summary.json").read_text())
    b = json.loads((runs / "b" / "summary.json").read_text())
    micro = next(line.split() for line in out.splitlines() if line.startswith("micro_f1"))
    assert float(micro[3]) == pytest.approx(b["cv"]["micro_f1"] - a["cv"]["micro_f1"], abs=0.01)
    per_class = out.split("per-class F1")[1]
    for row in a["per_class"]:
        if row["support"]:
            assert row["label"] in per_class


def test_compare_with_a_partial_run_says_per_class_needs_finished_runs(runs, capsys):
    assert main(["compare", str(runs / "a"), str(runs / "sub" / "c"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "only_folds" in out and "[]" in out and "[1]" in out
    assert "B has no per-class scores" in out
    assert main(["compare", str(runs / "a"), str(runs)]) == 2  # not a run directory
