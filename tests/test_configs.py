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
