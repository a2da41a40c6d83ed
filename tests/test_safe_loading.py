"""A run directory from a stranger can be predicted with, and cannot run code.

Planted files, each of which would create a marker file if it were ever executed:
  * pickles (`pytorch_model.bin`, `training_args.bin`, ...) with a __reduce__ payload — never read;
  * a config.json whose `auto_map` points at a planted `modeling_evil.py` — refused, with a clear
    error that names --trust-remote-code;
  * YAML with a python/object tag (config.yaml) — refused by the safe loader.
The pickle is written as raw opcodes (no pickle module: nothing here serialises objects) and
checked with pickletools, which only disassembles. Runtime: about 20 s (half of it imports).
"""

import json
import pickletools
import shutil

import pytest

from rekit.cli import main
from rekit.config import RunConfig
from rekit.data.labels import LabelMap
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.errors import RekitError
from rekit.modeling.backbone import build_model, load_tokenizer
from rekit.modeling.model import REModel
from rekit.training.cv import tokenizer_corpus

PICKLE_NAMES = ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pth", "scheduler.pt")


def pickle_payload(command: str) -> bytes:
    """Protocol-0 opcodes for `os.system(command)`: what a malicious __reduce__ produces."""
    assert "'" not in command and "\n" not in command
    return b"cos\nsystem\n(S'" + command.encode() + b"'\ntR."


def test_the_planted_pickle_is_armed(tmp_path):
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pickle_payload(f"touch {tmp_path / 'x'}"))]
    assert ops[0] == ("GLOBAL", "os system") and ("REDUCE", None) in ops and ops[-1][0] == "STOP"


@pytest.fixture(scope="module")
def stranger_run(tmp_path_factory):
    """A run directory with one (untrained) fold model, and a file to predict."""
    d = tmp_path_factory.mktemp("stranger")
    train, test = make_splits(seed=2, n_train=80, n_test=12)
    write_csv(test, d / "test.csv")
    cfg = RunConfig.from_dict({}, {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 800,
                                   "max_length": 64})
    lm = LabelMap.infer([r.label for r in train])
    tok = load_tokenizer(cfg.model, tokenizer_corpus(train, cfg), ["PER", "ORG", "LOC", "DAT"])
    build_model(cfg.model, tok, lm).save(d / "run" / "fold-0", tok, lm)
    return d


def copy_run(stranger_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stranger_run / "run", run)
    return run


def plant_pickles(run, marker):
    for name in PICKLE_NAMES:
        (run / "fold-0" / name).write_bytes(pickle_payload(f"touch {marker}"))
    (run / "labels.pkl").write_bytes(pickle_payload(f"touch {marker}"))


def test_planted_pickles_are_never_loaded(stranger_run, tmp_path, capsys):
    run, marker = copy_run(stranger_run, tmp_path), tmp_path / "PWNED"
    plant_pickles(run, marker)
    out = tmp_path / "submission.csv"
    assert main(["predict", str(run), "--input", str(stranger_run / "test.csv"), "--output", str(out),
                 "--device", "cpu"]) == 0
    assert len(out.read_text().splitlines()) == 13
    assert main(["evaluate", str(run), "--input", str(stranger_run / "test.csv"), "--device", "cpu",
                 "--unknown-labels", "skip"]) == 0
    assert not marker.exists()


def test_pickled_weights_alone_are_refused_not_loaded(stranger_run, tmp_path, capsys):
    run, marker = copy_run(stranger_run, tmp_path), tmp_path / "PWNED"
    plant_pickles(run, marker)
    (run / "fold-0" / "model.safetensors").unlink()  # only the pickle is left
    assert main(["predict", str(run), "--input", str(stranger_run / "test.csv"), "--output",
                 str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err  # the fold is refused by name: its safetensors weights are missing
    assert "fold-0 is not a rekit model directory: model.safetensors is missing" in err
    assert not marker.exists()


def plant_remote_code(model_dir, marker, model_type="evil-bert"):
    (model_dir / "modeling_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig, BertModel\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil-bert'\n"
        "class EvilModel(BertModel):\n    config_class = EvilConfig\n")
    config = json.loads((model_dir / "config.json").read_text())
    config.update(model_type=model_type,
                  auto_map={"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"})
    (model_dir / "config.json").write_text(json.dumps(config))


def test_remote_code_config_is_refused_without_the_flag(stranger_run, tmp_path, capsys):
    run, marker = copy_run(stranger_run, tmp_path), tmp_path / "PWNED"
    plant_remote_code(run / "fold-0", marker)
    assert main(["predict", str(run), "--input", str(stranger_run / "test.csv"), "--output",
                 str(tmp_path / "s.csv"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "asks to run its own Python code" in err and "--trust-remote-code" in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert "Traceback" not in err and len(errors) == 1 and errors[0].startswith("rekit: error: cannot load model")
    with pytest.raises(RekitError, match="--trust-remote-code"):
        REModel.load(run / "fold-0")
    assert not marker.exists()


def test_remote_code_next_to_a_known_architecture_is_not_run(stranger_run, tmp_path):
    # model_type stays "bert": transformers uses its own BERT code and ignores auto_map.
    run, marker = copy_run(stranger_run, tmp_path), tmp_path / "PWNED"
    plant_remote_code(run / "fold-0", marker, model_type="bert")
    tok_cfg = run / "fold-0" / "tokenizer_config.json"
    tok_cfg.write_text(json.dumps({**json.loads(tok_cfg.read_text()),
                                   "auto_map": {"AutoTokenizer": ["modeling_evil.EvilTok", None]}}))
    model, _, _ = REModel.load(run / "fold-0")
    assert type(model.encoder).__name__ == "BertModel"
    assert not marker.exists()


def test_training_from_a_remote_code_model_is_refused(stranger_run, tmp_path, capsys):
    model_dir, marker = tmp_path / "hubmodel", tmp_path / "PWNED"
    shutil.copytree(stranger_run / "run" / "fold-0", model_dir)
    plant_remote_code(model_dir, marker)
    train, _ = make_splits(seed=2, n_train=40, n_test=4)
    write_csv(train, tmp_path / "train.csv")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--model", str(model_dir), "--output",
                 str(tmp_path / "run"), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "contains custom code" in err
    assert not marker.exists()


def test_yaml_with_python_tags_is_refused(stranger_run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = f"train:\n  epochs: !!python/object/apply:os.system ['touch {marker}']\n"
    (tmp_path / "evil.yaml").write_text(evil)
    assert main(["train", "--config", str(tmp_path / "evil.yaml"), "--output", str(tmp_path / "r")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    run = copy_run(stranger_run, tmp_path)  # a stranger's run directory offered to --resume
    (run / "config.yaml").write_text(evil)
    assert main(["train", "--resume", str(run)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not marker.exists()
