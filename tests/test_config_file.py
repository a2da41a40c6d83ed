"""One config file for the pipeline (configs/offline-klue.yaml): each command reads its sections,
flags win, unknown sections/keys are one line naming the file, and the benchmark reads the same file."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from rekit.cli import build_parser, main
from rekit.commands import distill, explicit_flags, pretrain
from rekit.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "configs" / "offline-klue.yaml")


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def pretrain_options(*argv: str):
    args = parse("pretrain", *argv)
    return pretrain._checked(pretrain.with_config(args) if args.config else args)


def test_rekit_train_reads_its_sections_and_skips_the_others():
    args = parse("train", "--config", RECIPE, "--model", "enc/x", "--epochs", "2")
    cfg = RunConfig.from_yaml(args.config, explicit_flags(args))
    assert cfg.model.model == "enc/x" and cfg.train.epochs == 2  # flags win
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.folds, cfg.model.dropout) == (1e-4, 32, 5, 0.1)
    assert (cfg.model.marker, cfg.model.head, cfg.model.first_segment) == ("typed_entity_marker_punct", "entity", "none")
    assert list(cfg.to_dict()) == ["data", "model", "train"]  # what a run saves as config.yaml


def test_rekit_pretrain_reads_its_section_and_the_scratch_encoder():
    settings, model = pretrain_options("--config", RECIPE, "--lr", "3e-4")
    assert (settings.epochs, settings.batch_size, settings.masking, settings.max_length) == (200, 256, "word", 256)
    assert settings.lr == 3e-4  # the flag wins
    assert (model["scratch_size"], model["scratch_vocab_size"], model["scratch_tokenizer"]) == ("medium", 12000,
                                                                                               "wordpiece")
    assert model["marker"] == "none" and model["dropout"] is None  # fine-tuning's model options stay its own


def test_rekit_distill_reads_its_section_and_the_students_options():
    args = parse("distill", "runs/t", "--config", RECIPE, "--output", "runs/s", "--temperature", "2")
    flags, settings = distill.options(args)
    assert settings == {"alpha": 0.8, "temperature": 2.0}
    assert (flags["epochs"], flags["lr"], flags["marker"], flags["output"]) == (6, 1e-4, "typed_entity_marker_punct",
                                                                                "runs/s")
    assert "folds" not in flags  # a student has one fold


@pytest.mark.parametrize("text, key", [
    ("pretrian:\n  epochs: 3\n", "'pretrian'; did you mean 'pretrain'?"),
    ("pretrain:\n  epochz: 3\n", "'pretrain.epochz'; did you mean 'pretrain.epochs'?"),
    ("distill:\n  alpah: 0.5\n", "'distill.alpah'; did you mean 'distill.alpha'?"),
    ("data:\n  trian: x.csv\n", "'data.trian'; did you mean 'data.train'?"),
])
@pytest.mark.parametrize("command", [["train"], ["pretrain"], ["distill", "runs/t"]])
def test_an_unknown_section_or_key_is_one_line_naming_the_file(tmp_path, capsys, command, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(Path(RECIPE).read_text(encoding="utf-8") + text, encoding="utf-8")
    assert main([*command, "--config", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"rekit: error: {path}: unknown config key {key}\n"


def test_the_benchmark_runs_the_shipped_recipe(monkeypatch):
    # Every value of the file reaches the benchmark's commands (nothing dropped, nothing re-tuned).
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import klue_re_quality as q

    r, tmp = q.RECIPE, Path("/nonexistent")
    got = pretrain_options(*q.pretrain_cmd(r, "t.csv", [], tmp, 4.0, r["tokenizer"])[4:])
    want = pretrain_options("--config", RECIPE, "--max-minutes", "4.00", "--no-progress")
    assert got == want
    args = parse(*q.finetune_cmd(r, "enc", "t.csv", tmp, 0)[3:])
    want = parse("train", "--config", RECIPE, "--model", "enc", "--train", "t.csv", "--output", str(tmp),
                 "--overwrite", "--only-folds", "0", "--no-progress")
    assert RunConfig.from_dict({}, explicit_flags(args)) == RunConfig.from_yaml(RECIPE, explicit_flags(want))
    assert r["distill"] == {"alpha": 0.8, "temperature": 1.0}
    # an ablation's own option reaches its command; an addition's gain is its score minus (c)'s
    cmd = q.finetune_cmd(r, "enc", "t.csv", tmp, 0, **q.ABLATIONS["no_rdrop"][1])
    assert cmd[cmd.index("--rdrop") + 1] == "0" and cmd.count("--rdrop") == 1
    s, ref = {"micro_f1": 51.0, "auprc": 40.0}, {"micro_f1": 50.0, "auprc": 41.0}
    monkeypatch.setattr(q, "ADDITIONS", {"no_rdrop"})
    assert q.ablation_row("no_rdrop", s, ref, "ok")["gain_of_addition_micro_f1"] == 1.0
    assert q.ablation_row("focal", s, ref, "ok")["gain_of_recipe_auprc"] == 1.0


def test_rekit_pretrain_config_end_to_end(tmp_path, capsys):
    from rekit.data.readers import write_csv
    from rekit.data.synthetic import make_splits

    train, _ = make_splits(seed=3, n_train=40, n_test=0)
    write_csv(train, tmp_path / "train.csv")
    config = {"data": {"train": str(tmp_path / "train.csv")}, "model": {"scratch_size": "tiny",
              "scratch_vocab_size": 600, "marker": "typed_entity_marker"},
              "pretrain": {"epochs": 1, "batch_size": 32, "max_length": 32, "device": "cpu", "progress": False},
              "distill": {"alpha": 0.5}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    enc = tmp_path / "enc"
    assert main(["pretrain", "--config", str(tmp_path / "c.yaml"), "--output", str(enc)]) == 0
    summary = json.loads((enc / "pretrain.json").read_text())
    assert summary["texts"] == len({r.sentence for r in train}) and summary["epochs_run"] == 1
    assert json.loads((enc / "config.json").read_text())["hidden_size"] == 128  # tiny
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(enc), "--config", str(tmp_path / "c.yaml")]) == 2
    assert "drop --config" in capsys.readouterr().err
