"""Issue 13: real-world (messy) files in, complete submissions out.

Span repairs by default, a bounded share of skipped training rows, --strict, one prediction per
input row, the read report on disk, --no-relation-label checked against the data, huge offsets,
a one-class warning, progress bars off in logs, and a scratch tokenizer that trains the same
way twice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rekit.cli import main
from rekit.config import DataConfig
from rekit.data.readers import ReadOptions, options_from_config, read_for_prediction, read_records
from rekit.data.schema import Entity, Record
from rekit.data.synthetic import make_splits
from rekit.errors import ConfigError, DataError

TINY = ["--model", "scratch", "--scratch-size", "tiny", "--scratch-vocab-size", "300", "--max-length", "48",
        "--epochs", "1", "--batch-size", "16", "--folds", "2", "--no-progress"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def cell(text: str, start, end, etype: str = "PER") -> str:
    return repr({"word": text, "start_idx": start, "end_idx": end, "type": etype})


def huge_cell(text: str) -> str:
    """An entity cell whose start offset is a bare 5,000-digit number (int() refuses > 4,300)."""
    return cell(text, 0, 3).replace("'start_idx': 0", "'start_idx': " + "9" * 5000)


def row(rid, rec: Record, subj: str | None = None, obj: str | None = None, label: str | None = None) -> list[str]:
    s, o = rec.subject, rec.object
    return [str(rid), rec.sentence, subj or cell(s.text, s.start, s.end - 1, s.type),
            obj or cell(o.text, o.start, o.end - 1, o.type), label or rec.label or "100", "synthetic"]


def write(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "sentence", "subject_entity", "object_entity", "label", "source"])
        w.writerows(rows)
    return path


def messy(records: list[Record]) -> tuple[list[list[str]], dict[int, str]]:
    """Rows with one repairable problem each in rows 1-3 (1-based), and the kind expected."""
    rows = [row(i, r) for i, r in enumerate(records)]
    r0, r1, r2 = records[:3]
    rows[0][2] = cell(r0.subject.text, r0.subject.start, r0.subject.end, r0.subject.type)  # exclusive end
    rows[1][3] = cell(r1.object.text, r1.object.start + 1, r1.object.end, r1.object.type)  # shifted by one
    rows[2][2] = cell(r2.subject.text, 900, 905, r2.subject.type)  # nonsense offsets, the text occurs once
    return rows, {1: "an exclusive end in an inclusive file", 2: "span shifted by one character",
                  3: "the entity text occurs once in the sentence"}


def misspelled(rid, rec: Record) -> list[str]:
    s = rec.subject
    return row(rid, rec, subj=cell("없는이름", s.start, s.end - 1, s.type))


@pytest.fixture(scope="module")
def data():
    train, test = make_splits(seed=5, n_train=200, n_test=12)
    return train, [Record(r.id, r.sentence, r.subject, r.object, None, r.source) for r in test]


# -- item 4: repairs by default, a bounded share of skips, --strict ----------------------------------

def test_certain_span_repairs_are_applied_and_counted(tmp_path, data):
    train, _ = data
    rows, kinds = messy(train[:50])
    path = write(tmp_path / "t.csv", rows)
    records, report = read_records(path, options_from_config(DataConfig()))
    assert len(records) == 50 and [i.row for i in report.repaired] == [1, 2, 3]
    for issue in report.repaired:
        assert kinds[issue.row] in issue.problem and issue.action == "repaired"
    assert records[:3] == [Record(str(i), r.sentence, r.subject, r.object, r.label, "synthetic")
                           for i, r in enumerate(train[:3])]
    # before/after in the file's (inclusive) convention
    r0 = train[0].subject
    assert report.repaired[0].spans == {"subject": {"text": r0.text, "before": [r0.start, r0.end],
                                                    "after": [r0.start, r0.end - 1]}}


def test_an_ambiguous_span_is_not_guessed_for_training(tmp_path):
    sentence = "삼성 그리고 삼성 그리고 또 삼성"
    rows = [["0", sentence, cell("삼성", 11, 12, "ORG"), cell("그리고", 3, 5, "POH"), "no_relation", ""]]
    path = write(tmp_path / "t.csv", rows * 1)
    with pytest.raises(DataError, match=r"occurs 3 times, none at or next to the given start"):
        read_records(path, options_from_config(DataConfig()))
    # the old nearest-occurrence repair is still there on request
    records, report = read_records(path, ReadOptions(on_mismatch="repair"))
    assert records[0].subject.start == 7 and len(report.repaired) == 1


def test_unrepairable_rows_are_skipped_up_to_the_share_then_an_error(tmp_path, data):
    train, _ = data
    rows = [row(i, r) for i, r in enumerate(train)]  # 200 rows: 1 % is 2 rows
    rows[10] = misspelled(10, train[10])
    rows[20] = misspelled(20, train[20])
    path = write(tmp_path / "two.csv", rows)
    records, report = read_records(path, options_from_config(DataConfig()))
    assert len(records) == 198 and [i.row for i in report.skipped] == [11, 21]
    assert "cannot repair: the entity text does not occur in the sentence" in report.skipped[0].problem
    rows[30] = misspelled(30, train[30])
    path = write(tmp_path / "three.csv", rows)
    with pytest.raises(DataError) as info:
        read_records(path, options_from_config(DataConfig()))
    msg = str(info.value)
    assert "three.csv, row 11: " in msg and "3 of 200 rows (1.5%)" in msg and "row 21:" in msg
    assert "--max-skip-share" in msg and "\n" not in msg
    records, _ = read_records(path, options_from_config(DataConfig(max_skip_share=0.02)))
    assert len(records) == 197
    records, _ = read_records(path, options_from_config(DataConfig(on_bad_row="skip", max_skip_share=0.0)))
    assert len(records) == 197


def test_strict_restores_the_first_mismatch_error(tmp_path, data):
    train, _ = data
    rows, _ = messy(train[:20])
    path = write(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"t\.csv, row 1: id '0': subject span"):
        read_records(path, options_from_config(DataConfig(strict=True)))
    with pytest.raises(ConfigError, match="--strict"):
        options_from_config(DataConfig(strict=True, on_mismatch="repair"))
    with pytest.raises(ConfigError, match="max_skip_share"):
        ReadOptions(max_skip_share=5)
    code = main(["train", "--train", str(path), "--output", str(tmp_path / "run"), "--strict", *TINY])
    assert code == 2 and not (tmp_path / "run").exists()


# -- items 4, 6, 7, 11: the CLI on a messy training file ---------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    train, _ = data
    d = tmp_path_factory.mktemp("messy")
    rows, _ = messy(train[:120])
    rows[50] = misspelled(50, train[50])
    write(d / "train.csv", rows)
    run = d / "run"
    proc = Captured()
    with contextlib.redirect_stdout(proc.out), contextlib.redirect_stderr(proc.err):  # not a terminal
        code = main(["train", "--train", str(d / "train.csv"), "--output", str(run), "--max-skip-share", "0.01",
                     *TINY[:-1]])
    assert code == 0, proc.stderr
    return d, run, proc


class Captured:
    """stdout and stderr of an in-process command, as a log file would get them."""

    def __init__(self):
        self.out, self.err = io.StringIO(), io.StringIO()

    @property
    def stdout(self) -> str:
        return self.out.getvalue()

    @property
    def stderr(self) -> str:
        return self.err.getvalue()


def test_train_with_no_flags_repairs_skips_and_keeps_the_read_report(trained):
    _d, run, proc = trained
    report = json.loads((run / "read_report.json").read_text(encoding="utf-8"))
    assert report["counts"] == {"rows": 120, "records": 119, "repaired": 3, "skipped": 1, "flagged": 0}
    assert [i["row"] for i in report["repaired"]] == [1, 2, 3]
    assert report["skipped"][0]["row"] == 51 and report["skipped"][0]["id"] == "50"
    assert report["skipped"][0]["spans"]["subject"]["after"] is None
    assert f"... and 1 more (every row is listed in the read report {run / 'read_report.json'})" in proc.stdout
    assert "it/s" not in proc.stderr  # --progress not given, stderr is a pipe: no bars in the log
    oof = list(csv.DictReader(open(run / "oof.csv", encoding="utf-8")))
    assert len(oof) == 119


def test_no_relation_label_not_in_the_data_is_an_error(tmp_path, data, capsys):
    train, _ = data
    path = write(tmp_path / "t.csv", [row(i, r) for i, r in enumerate(train[:30])])
    code = main(["train", "--train", str(path), "--output", str(tmp_path / "run"), "--no-relation-label", "Other",
                 *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "'Other'" in err and "labels seen: no_relation, org:" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_one_class_training_file_warns(tmp_path, data, capsys):
    train, _ = data
    rows = [row(i, r, label="per:title") for i, r in enumerate(train[:24])]
    path = write(tmp_path / "t.csv", rows)
    assert main(["train", "--train", str(path), "--output", str(tmp_path / "run"), *TINY]) == 0
    out = capsys.readouterr().out
    assert "warning: " in out and "every training row has the label 'per:title'" in out


# -- items 5, 6, 8, 11: predict writes every row --------------------------------------------------------

def test_predict_writes_one_row_per_input_row_and_the_report(trained, data, tmp_path):
    _d, run, _ = trained
    _, test = data
    rows = [row(100 + i, r) for i, r in enumerate(test)]
    s = test[0].subject
    rows[0][2] = cell("없는이름", s.start, 999, s.type)  # no such text: clamped offsets
    rows[1][3] = "{'word': '서울', 'start_idx"  # a cut-off cell: unreadable
    rows[2][2] = huge_cell(test[2].subject.text)  # a 5,000-digit offset
    rows.append(list(rows[5]))  # a duplicated row
    path = write(tmp_path / "test.csv", rows)
    out = tmp_path / "submission.csv"
    proc = Captured()
    with contextlib.redirect_stdout(proc.out), contextlib.redirect_stderr(proc.err):
        code = main(["predict", str(run), "--input", str(path), "--output", str(out), "--device", "cpu"])
    assert code == 0, proc.stderr
    written = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [r["id"] for r in written] == [r[0] for r in rows]  # same ids, same order, duplicates too
    assert written[1]["pred_label"] == "no_relation" and written[2]["pred_label"] == "no_relation"
    report = json.loads((tmp_path / "submission.csv.read_report.json").read_text(encoding="utf-8"))
    flagged = {i["row"]: i for i in report["flagged"]}
    assert flagged[1]["action"] == "clamped" and flagged[1]["spans"]["subject"]["after"][1] == len(test[0].sentence) - 1
    assert flagged[2]["action"] == "unreadable" and flagged[3]["action"] == "unreadable"
    assert "5,000 digits" in flagged[3]["problem"] and flagged[len(rows)]["action"] == "kept"
    assert "submission.csv.read_report.json" in proc.stdout and "it/s" not in proc.stderr


def test_predict_with_nothing_readable_fails(trained, data, tmp_path, capsys):
    _d, run, _ = trained
    rows = [[str(i), "문장", "{'word'", "{'word'", "100", ""] for i in range(3)]
    path = write(tmp_path / "bad.csv", rows)
    out = tmp_path / "sub.csv"
    code = main(["predict", str(run), "--input", str(path), "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "nothing to predict: all 3 rows are unreadable" in err and not out.exists()
    assert json.loads((tmp_path / "sub.csv.read_report.json").read_text())["counts"]["flagged"] == 3
    header_only = write(tmp_path / "empty.csv", [])
    assert main(["predict", str(run), "--input", str(header_only), "--output", str(out)]) == 2
    assert "no data rows" in capsys.readouterr().err and not out.exists()


def test_predict_strict_stops_at_the_first_bad_span(trained, data, tmp_path, capsys):
    _d, run, _ = trained
    _, test = data
    rows = [row(i, r) for i, r in enumerate(test)]
    rows[3][2] = cell("없는이름", 0, 3)
    path = write(tmp_path / "t.csv", rows)
    assert main(["predict", str(run), "--input", str(path), "--output", str(tmp_path / "s.csv"), "--strict"]) == 2
    assert "t.csv, row 4: id '3': subject span" in capsys.readouterr().err


def test_evaluate_keeps_the_report_beside_its_output(trained, data, tmp_path, capsys):
    _d, run, _ = trained
    train, _ = data
    rows, _ = messy(train[150:170])
    path = write(tmp_path / "dev.csv", rows)
    assert main(["evaluate", str(run), "--input", str(path), "--report", str(tmp_path / "m.json"), "--progress"]) == 0
    report = json.loads((tmp_path / "m.json.read_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["repaired"] == 3 and report["counts"]["records"] == 20


# -- item 8: a huge number in a cell is a bad row, in every format --------------------------------------

def test_a_5000_digit_offset_is_a_bad_row_not_a_crash(tmp_path, data):
    train, _ = data
    rows = [row(i, r) for i, r in enumerate(train[:5])]
    rows[2][3] = huge_cell(train[2].object.text)
    path = write(tmp_path / "h.csv", rows)
    with pytest.raises(DataError, match=r"h\.csv, row 3: id '2': object start_idx is <a number with 5,000 digits>, not"):
        read_records(path)
    records, report = read_records(path, ReadOptions(on_bad_row="skip"))
    assert len(records) == 4 and report.skipped[0].row == 3
    lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in train[:3]]
    lines[1] = lines[1].replace('"start": ', '"start": ' + "9" * 5000 + ", \"x\": ", 1)
    (tmp_path / "h.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, report = read_records(tmp_path / "h.jsonl", ReadOptions(on_bad_row="skip"))
    assert len(records) == 2 and "5,000 digits" in report.skipped[0].problem
    klue = [{"guid": r.id, "sentence": r.sentence, "label": r.label,
             "subject_entity": {"word": r.subject.text, "start_idx": r.subject.start, "end_idx": r.subject.end - 1},
             "object_entity": {"word": r.object.text, "start_idx": r.object.start, "end_idx": r.object.end - 1}}
            for r in train[:3]]
    text = json.dumps(klue, ensure_ascii=False).replace('"start_idx": ', '"start_idx": ' + "9" * 5000 + ', "y": ', 1)
    (tmp_path / "h.json").write_text(text, encoding="utf-8")
    records, report = read_records(tmp_path / "h.json", ReadOptions(on_bad_row="skip"))
    assert len(records) == 2 and "5,000 digits" in report.skipped[0].problem
    rows[2][3] = cell(train[2].object.text, 10**30, 7)
    records, report = read_records(write(tmp_path / "b.csv", rows), ReadOptions(on_bad_row="skip"))
    assert "has 31 digits, not an offset" in report.skipped[0].problem


def test_prediction_read_never_drops_a_row(tmp_path, data):
    train, _ = data
    rows = [row(i, r) for i, r in enumerate(train[:6])]
    rows[1][2] = "{'word': broken"
    rows.append(list(rows[0]))
    got = read_for_prediction(write(tmp_path / "p.csv", rows), options_from_config(DataConfig()))
    assert [r.id for r in got.rows] == [r[0] for r in rows]
    assert len(got.records) == 6 and len(got.unreadable) == 1
    assert got.records[0].subject == Entity(train[0].subject.text, train[0].subject.start, train[0].subject.end,
                                            train[0].subject.type)


# -- item 10: the same command trains the same run --------------------------------------------------------

def test_two_identical_scratch_runs_are_identical(tmp_path, data):
    train, _ = data
    path = write(tmp_path / "t.csv", [row(i, r) for i, r in enumerate(train[:60])])
    runs = []
    for name in ("a", "b"):  # separate processes: the tokenizers trainer's hash order differs per process
        run = tmp_path / name
        proc = subprocess.run([sys.executable, "-m", "rekit.cli", "train", "--train", str(path), "--output", str(run),
                               "--seed", "7", "--deterministic", "--device", "cpu", *TINY, "--scratch-vocab-size",
                               "2000", "--folds", "1", "--valid-ratio", "0.3"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": SRC, "PYTHONHASHSEED": "random"}, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs.append(run)
    a, b = runs
    assert (a / "fold-0" / "tokenizer.json").read_bytes() == (b / "fold-0" / "tokenizer.json").read_bytes()
    assert (a / "oof.csv").read_bytes() == (b / "oof.csv").read_bytes()
    cv_a, cv_b = (json.loads((r / "summary.json").read_text())["cv"] for r in runs)
    assert cv_a == cv_b
