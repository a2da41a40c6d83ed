"""Malformed training input through `rekit train`: the cases the reader corpus cannot show alone.

tests/test_malformed_inputs.py checks what the readers make of each malformed file; here the
same problems meet training, which must stop with one line naming the file and the problem
(no traceback, the run directory marked failed) before any model is built. Runtime: ~10 s,
mostly importing the training stack.
"""

import dataclasses
from pathlib import Path

from rekit.cli import main
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits

MALFORMED = Path(__file__).parent / "malformed"


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rekit: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_training_refuses_nan_labels(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--train", str(MALFORMED / "nan_labels.csv"), "--output", str(run),
                 "--model", "scratch", "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "nan_labels.csv" in line and "2 training rows have no label (first: id 0)" in line
    assert not run.exists()  # the data is read before the run directory is made: nothing half-made is left


def test_training_refuses_labels_outside_a_fixed_label_set(tmp_path, capsys):
    train, _ = make_splits(seed=4, n_train=20, n_test=2)
    train[3] = dataclasses.replace(train[3], label="per:made_up")
    write_csv(train, tmp_path / "train.csv")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--output", str(tmp_path / "run"),
                 "--labels", "klue-re", "--model", "scratch", "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "train.csv" in line and "labels not in the klue-re label set: per:made_up" in line


def test_training_on_a_malformed_file_names_file_and_row(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--train", str(MALFORMED / "code_in_cell.csv"), "--output", str(run),
                 "--model", "scratch", "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "code_in_cell.csv, row 1" in line and "not a valid entity dict" in line
    assert not run.exists()
