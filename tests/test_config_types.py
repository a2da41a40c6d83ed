"""One typed configuration: values converted where unambiguous, refused in one line otherwise, before
anything is created or deleted (issue 13 item 1, issue 14 item 3); default tune space; packaging."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rekit.cli import build_parser, main
from rekit.commands import explicit_flags, read_options
from rekit.config import (
    MIN_MAX_LENGTH,
    ModelConfig,
    PretrainSettings,
    RunConfig,
    TrainConfig,
    TuneSettings,
    check_value,
)
from rekit.data.readers import ReadOptions, write_csv
from rekit.data.synthetic import make_splits
from rekit.errors import ConfigError
from rekit.training.optim import total_norm
from rekit.tuning.space import default_space
from rekit.tuning.study import META, prepare

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {"model": {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500, "max_length": 64},
        "train": {"folds": 2, "only_folds": 0, "progress": False}}


def rekit(*argv, cwd=None):
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "rekit.cli", *map(str, argv)], check=False, capture_output=True, text=True,
                          env=env, cwd=cwd)


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.csv"
    write_csv(make_splits(seed=3, n_train=120, n_test=10)[0], path)
    return path


# -- conversion ------------------------------------------------------------------------------------

def test_unambiguous_values_are_converted():
    cfg = RunConfig.from_dict({"train": {"lr": "2e-5", "epochs": "3", "batch_size": "32", "folds": 2.0,
                                         "only_folds": 0, "overwrite": "false", "warmup_ratio": "0.1",
                                         "progress": "No", "deterministic": "YES"},
                               "model": {"max_length": "64", "trust_remote_code": "false", "dropout": "0.2"},
                               "data": {"max_train_samples": "50", "columns": ["label=relation"]}})
    t, m = cfg.train, cfg.model
    assert (t.lr, t.epochs, t.batch_size, t.folds, t.only_folds) == (2e-5, 3, 32, 2, [0])
    assert type(t.lr) is float and type(t.epochs) is int and type(t.folds) is int
    assert t.overwrite is False and t.progress is False and t.deterministic is True
    assert m.trust_remote_code is False and m.max_length == 64 and m.dropout == 0.2
    assert cfg.data.max_train_samples == 50 and cfg.data.columns == {"label": "relation"}
    assert RunConfig.from_dict({"lr": "1e-4"}).train.lr == 1e-4  # flat keys too
    assert RunConfig.from_dict({"train": {"trust_remote_code": "TRUE"}}).model.trust_remote_code is True


def test_yaml_strings_that_look_like_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 2e-5\n  epochs: '3'\nmodel:\n  trust_remote_code: 'false'\n", encoding="utf-8")
    assert isinstance(yaml.safe_load(path.read_text())["train"]["lr"], str)  # why conversion is needed
    cfg = RunConfig.from_yaml(path)
    assert cfg.train.lr == 2e-5 and cfg.train.epochs == 3 and cfg.model.trust_remote_code is False


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "lr", "abc", "train.lr: expected a positive number, got 'abc'"),
    ("train", "lr", "nan", "train.lr: expected a positive number, got 'nan'"),
    ("train", "lr", -1e-3, "train.lr: expected a positive number, got -0.001"),
    ("train", "epochs", "three", "train.epochs: expected an integer >= 1, got 'three'"),
    ("train", "epochs", True, "train.epochs: expected an integer >= 1, got True"),
    ("train", "folds", 2.5, "train.folds: expected an integer >= 1, got 2.5"),
    ("train", "folds", 0, "train.folds: expected an integer >= 1, got 0"),
    ("model", "max_length", "64.5", "model.max_length: expected an integer >= 16, got '64.5'"),
    ("model", "max_length", 8, "model.max_length: expected an integer >= 16, got 8"),
    ("model", "model", 123, "model.model: expected text, got 123"),
    ("model", "trust_remote_code", "maybe", "model.trust_remote_code: expected true or false (or yes/no), got 'maybe'"),
    ("model", "trust_remote_code", 1, "model.trust_remote_code: expected true or false (or yes/no), got 1"),
    ("train", "overwrite", "", "train.overwrite: expected true or false (or yes/no), got ''"),
    ("train", "only_folds", [0, "x"], "train.only_folds: expected a list of integers >= 0, got [0, 'x']"),
    ("train", "only_folds", -1, "train.only_folds: expected a list of integers >= 0, got -1"),
    ("train", "warmup_ratio", 1, "train.warmup_ratio: expected a number in [0, 1), got 1"),
    ("model", "dropout", "0.5.1", "model.dropout: expected a number in [0, 1), got '0.5.1'"),
    ("data", "columns", "label", "data.columns: expected a mapping of KEY: VALUE, got 'label'"),
    ("train", "optimizer", "adamx", "train.optimizer must be one of adamw, adam; got 'adamx' (did you mean 'adam'?)"),
])
def test_wrong_values_are_one_line_naming_key_value_and_expectation(section, key, value, expected):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({section: {key: value}})
    assert str(e.value) == expected


def test_only_folds_must_exist():
    with pytest.raises(ConfigError, match=r"--only-folds must be fold indices in 0\.\.1, got \[2\]"):
        RunConfig.from_dict({"train": {"folds": 2, "only_folds": 2}})


@pytest.mark.parametrize("data, message", [
    ({"train": {"lrr": 1e-3}}, "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    ({"train": {"epoch": 3}}, "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
    ({"trian": {"epochs": 3}}, "unknown config key 'trian'; did you mean 'train'?"),
    ({"modle": "scratch"}, "unknown config key 'modle'; did you mean 'model'?"),
    ({"xyzzy": 1}, "unknown config key 'xyzzy'; see `rekit train --help` for the options"),
    ({"train": {"learning_rate": 1e-3}}, "unknown config key 'train.learning_rate'; did you mean 'train.lr'?"),
    ({"num_train_epochs": 3}, "unknown config key 'num_train_epochs'; did you mean 'epochs'?"),
])
def test_unknown_keys_suggest_the_closest(data, message):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(data)
    assert str(e.value) == message


def test_flags_are_named_as_flags_and_a_yaml_error_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^--lr: expected a positive number, got 'abc'$"):
        RunConfig.from_dict({}, {"lr": "abc"})
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: abc}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.lr: expected a positive number, got 'abc'$"):
        RunConfig.from_yaml(path)


def test_single_values_and_direct_construction_are_checked_alike():
    assert check_value("lr", "2e-5") == 2e-5 and check_value("only-folds", "0,1") == [0, 1]
    with pytest.raises(ConfigError, match=r"^train\.epochs: expected an integer >= 1, got 'x'$"):
        check_value("epochs", "x")
    with pytest.raises(ConfigError, match=r"did you mean 'train\.lr'"):
        check_value("train.lrr", 1)
    assert TrainConfig(lr="3e-4").lr == 3e-4 and ModelConfig(trust_remote_code="no").trust_remote_code is False


def test_pretrain_and_tune_settings_share_the_converter_and_limits():
    assert PretrainSettings.from_dict({"lr": "3e-4", "epochs": "2", "graphs": "false"}) == \
        PretrainSettings(lr=3e-4, epochs=2, graphs=False)
    with pytest.raises(ConfigError, match=rf"^pretrain\.max_length: expected an integer >= {MIN_MAX_LENGTH}, got 8$"):
        PretrainSettings.from_dict({"max_length": 8})
    with pytest.raises(ConfigError, match=r"did you mean 'pretrain\.mask_prob'"):
        PretrainSettings.from_dict({"mask_prop": 0.2})
    s = TuneSettings.from_dict({"trials": "5", "workers": 2, "folds": 0, "timeout": "60"})
    assert (s.trials, s.workers, s.folds, s.timeout) == (5, "2", [0], 60.0)
    with pytest.raises(ConfigError, match=r"^--trials: expected an integer >= 1, got 2\.5$"):
        TuneSettings.from_dict({"trials": 2.5})
    with pytest.raises(ConfigError, match="did you mean 'trials'"):
        TuneSettings.from_dict({"trails": 3})


def test_read_options_are_converted_like_the_config():
    opts = ReadOptions(limit="5", columns=["label=relation", "id=rid"])
    assert opts.limit == 5 and opts.columns == {"label": "relation", "id": "rid"}
    with pytest.raises(ConfigError, match="limit: expected an integer, got 'five'"):
        ReadOptions(limit="five")


# -- command line ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "predict", "pretrain"])
def test_several_key_value_pairs_after_one_flag(command):
    lead = {"train": [], "predict": ["RUN", "--input", "t.csv", "--output", "o.csv"],
            "pretrain": ["--train", "t.csv", "--output", "enc"]}[command]
    args = build_parser().parse_args([command, *lead, "--columns", "label=relation", "id=rid", "--entity-keys",
                                      "text=name", "start=s", "--entity-keys", "end=e"])
    assert explicit_flags(args)["columns"] == {"label": "relation", "id": "rid"}
    opts = read_options(args)
    assert opts.columns == {"label": "relation", "id": "rid"} and opts.entity_keys == {"text": "name", "start": "s", "end": "e"}


def test_help_documents_several_pairs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "several pairs after one flag (--columns a=b c=d)" in out
    assert "several pairs after one flag (--entity-keys a=b c=d)" in out


@pytest.mark.parametrize("yaml_text, needle", [
    ("train:\n  lr: abc\n", "train.lr: expected a positive number, got 'abc'"),
    ("train:\n  folds: 2.5\n", "train.folds: expected an integer >= 1, got 2.5"),
    ("train:\n  epochs: three\n", "train.epochs: expected an integer >= 1, got 'three'"),
    ("model:\n  model: 123\n", "model.model: expected text, got 123"),
    ("train:\n  lerning_rate: 1\n", "unknown config key 'train.lerning_rate'; did you mean 'train.lr'?"),
])
def test_a_wrong_yaml_value_is_one_line_exit_2_and_no_run_directory(tmp_path, train_csv, yaml_text, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text, encoding="utf-8")
    run = tmp_path / "run"
    p = rekit("train", "--config", cfg, "--train", train_csv, "--output", run)  # no flag may hide the value
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == f"rekit: error: {cfg}: {needle}"
    assert not run.exists()


def test_a_wrong_flag_value_is_one_line_exit_2(tmp_path, train_csv):
    p = rekit("train", "--train", train_csv, "--output", tmp_path / "run", "--model", "scratch", "--lr", "abc")
    assert p.returncode == 2 and p.stderr.strip() == "rekit: error: --lr: expected a positive number, got 'abc'"
    assert not (tmp_path / "run").exists()
    p = rekit("pretrain", "--train", train_csv, "--output", tmp_path / "enc", "--max-length", "8")
    assert p.returncode == 2
    assert p.stderr.strip() == f"rekit: error: --max-length: expected an integer >= {MIN_MAX_LENGTH}, got '8'"
    assert not (tmp_path / "enc").exists()


def test_overwrite_false_as_a_string_keeps_the_finished_run(tmp_path, train_csv, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "finished"}', encoding="utf-8")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"train:\n  overwrite: 'false'\n  output: {run}\n", encoding="utf-8")
    assert main(["train", "--config", str(cfg), "--train", str(train_csv), "--model", "scratch"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((run / "summary.json").read_text()) == {"status": "finished"}


def test_yaml_with_string_numbers_trains(tmp_path, train_csv):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY) + "  lr: 2e-5\n  epochs: '3'\n  batch_size: '32'\n", encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--train", str(train_csv), "--output", str(run),
                 "--max-train-samples", "80"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert saved["lr"] == 2e-5 and saved["epochs"] == 3 and saved["only_folds"] == [0]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs if e.get("fold") == 0][-1] == 3


# -- rekit tune without a search space ------------------------------------------------------------

def test_tune_without_a_space_uses_the_default_space_and_keeps_it(tmp_path, train_csv):
    study_dir = tmp_path / "study"
    flags = {"train": str(train_csv), "output": str(study_dir), "model": "scratch", "scratch_size": "tiny",
             "max_length": 64, "progress": False}
    lines = []
    study = prepare(None, flags, {"trials": 1}, echo=lines.append)
    assert study.settings.space == default_space("scratch")
    assert {p.name for p in study.params} == {"lr", "batch_size", "epochs", "warmup_ratio", "optimizer", "dropout"}
    assert any("default space" in line for line in lines)
    saved = json.loads((study_dir / META).read_text())["settings"]["space"]
    assert saved == default_space("scratch")
    again = prepare(None, {"output": str(study_dir)}, {})  # resumed: the saved space, not a new default
    assert again.settings.space == saved and [p.describe() for p in again.params] == [p.describe() for p in study.params]
    assert default_space("klue/roberta-base")["lr"]["high"] < default_space("scratch")["lr"]["high"]


def test_tune_checks_everything_before_overwrite_removes_the_old_study(tmp_path):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "keep.txt").write_text("old", encoding="utf-8")
    with pytest.raises(ConfigError, match="--heartbeat"):
        prepare(None, {"output": str(study_dir), "overwrite": True, "model": "scratch"}, {"heartbeat": "1"})
    assert (study_dir / "keep.txt").read_text() == "old"


# -- packaging -------------------------------------------------------------------------------------

def test_total_norm_fallback_for_torch_before_2_6(monkeypatch):
    grads = [torch.randn(5, 3), torch.randn(7), torch.randn(2, 2, 2)]
    expected = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    assert total_norm(grads).item() == pytest.approx(expected, rel=1e-5)
    monkeypatch.delattr(torch.nn.utils, "get_total_norm", raising=False)
    assert total_norm(grads).item() == pytest.approx(expected, rel=1e-5)
    assert total_norm([]).item() == 0.0


def test_the_package_declares_its_types():
    assert (Path(SRC) / "rekit" / "py.typed").is_file()
