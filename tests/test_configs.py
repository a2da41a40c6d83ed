"""The hub-model recipe configs in configs/ load into RunConfig and through `rekit train --config`."""

from pathlib import Path

import pytest

from rekit.cli import build_parser
from rekit.commands import explicit_flags
from rekit.config import RunConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name, model, lr, epochs, batch, warmup", [
    ("klue-roberta-base.yaml", "klue/roberta-base", 5e-5, 3, 32, 0.1),
    ("klue-roberta-large.yaml", "klue/roberta-large", 2e-5, 10, 16, 0.2),
])
def test_klue_recipe_configs_load(name, model, lr, epochs, batch, warmup):
    cfg = RunConfig.from_yaml(CONFIGS / name)
    assert cfg.model.model == model
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size, cfg.train.warmup_ratio) == (lr, epochs, batch, warmup)
    assert isinstance(cfg.train.lr, float)
    assert cfg.model.marker == "typed_entity_marker_punct" and cfg.model.head == "entity"
    assert cfg.data.labels == "klue-re" and cfg.train.folds == 5


def test_config_file_and_flags_combine_like_rekit_train():
    # What `rekit train --config FILE --epochs 1` does: the file, then only the flags given.
    args = build_parser().parse_args(["train", "--config", str(CONFIGS / "klue-roberta-large.yaml"), "--epochs", "1",
                                      "--model", "/models/roberta-large"])
    cfg = RunConfig.from_yaml(args.config, explicit_flags(args))
    assert cfg.train.epochs == 1 and cfg.model.model == "/models/roberta-large"
    assert cfg.train.lr == 2e-5 and cfg.train.batch_size == 16  # from the file


def test_every_option_is_a_flag_generated_from_its_field():
    # One definition per option: `rekit train` has a flag for every data/model/train field and
    # `rekit pretrain` one for every PretrainSettings field, each with the field's help text.
    import argparse
    import dataclasses

    from rekit.config import SECTIONS, PretrainSettings

    def flags(command: str) -> dict:
        sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        return {s: a.help for a in sub.choices[command]._actions for s in a.option_strings}

    train, pretrain = flags("train"), flags("pretrain")
    for klass, table in [*((k, train) for k in SECTIONS.values()), (PretrainSettings, pretrain)]:
        for f in dataclasses.fields(klass):
            flag = "--" + f.name.replace("_", "-")
            assert flag in table, (klass.__name__, flag)
            assert table[flag].startswith(f.metadata["help"].replace("%", "%%")[:40]), flag


def test_recipe_configs_with_yaml_strings_load(tmp_path):
    # The KLUE-large recipe as people write it by hand: 2e-5 without a dot is a YAML string.
    text = (CONFIGS / "klue-roberta-large.yaml").read_text(encoding="utf-8")
    path = tmp_path / "large.yaml"
    hand = text.replace("lr: 2.0e-5", "lr: 2e-5").replace("epochs: 10", 'epochs: "10"')
    assert hand != text
    path.write_text(hand, encoding="utf-8")
    cfg = RunConfig.from_yaml(path)
    assert cfg.train.lr == 2e-5 and cfg.train.epochs == 10
