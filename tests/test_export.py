"""`rekit export --format onnx`: parity with PyTorch, torch-free prediction, int8, errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rekit
from rekit.cli import main
from rekit.data.readers import read_records, write_csv
from rekit.data.synthetic import make_splits

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "scratch", "--scratch-size", "tiny", "--scratch-vocab-size", "1500", "--max-length", "64",
        "--epochs", "2", "--lr", "1e-3", "--batch-size", "32", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    train, test = make_splits(seed=7, n_train=200, n_test=60)
    write_csv(train, d / "train.csv")
    write_csv(test, d / "test.csv")
    assert main(["train", "--train", str(d / "train.csv"), "--output", str(d / "run"), "--folds", "2", *TINY]) == 0
    assert main(["export", str(d / "run"), "--format", "onnx", "--output", str(d / "onnx")]) == 0
    return d


def test_export_layout_and_dynamic_axes(exported):
    import onnxruntime as ort

    out = exported / "onnx"
    manifest = json.loads((out / "rekit-onnx.json").read_text())
    assert manifest["models"] == ["fold-0.onnx", "fold-1.onnx"] and manifest["quantized"] is False
    for name in ("labels.json", "rekit.json", "tokenizer.json", "README.md", *manifest["models"]):
        assert (out / name).is_file(), name
    inputs = {i.name: i.shape for i in ort.InferenceSession(str(out / "fold-0.onnx")).get_inputs()}
    assert inputs == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"], "subj_pos": ["batch"],
                      "obj_pos": ["batch"], "token_type_ids": ["batch", "seq"]}  # scratch BERT: 2 token types
    assert "onnx" in (out / "README.md").read_text().split("---")[1]


def test_onnx_fp32_matches_pytorch(exported):
    records, _ = read_records(exported / "test.csv")
    ref = rekit.load(exported / "run", device="cpu").predict_proba(records)
    onnx = rekit.load(exported / "onnx")
    for batch_size in (64, 1, 7):  # several paddings and batch shapes through the dynamic axes
        onnx.backend.batch_size = batch_size
        probs = onnx.predict_proba(records)
        assert np.abs(probs - ref).max() < 1e-4
        assert (probs.argmax(1) == ref.argmax(1)).all()


def test_predicting_with_an_export_never_imports_torch(exported):
    code = f"""
import json, sys
import rekit
from rekit.cli import main
m = rekit.load({str(exported / 'onnx')!r})
labels = m.predict([json.loads(line) for line in sys.stdin])
assert main(["predict", {str(exported / 'onnx')!r}, "--input", {str(exported / 'test.csv')!r},
             "--output", {str(exported / 'sub.csv')!r}]) == 0
assert "torch" not in sys.modules and "transformers" not in sys.modules, "torch imported"
print(json.dumps(labels))
"""
    records, _ = read_records(exported / "test.csv")
    lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
    done = subprocess.run([sys.executable, "-c", code], input=lines, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    labels = json.loads(done.stdout.strip().splitlines()[-1])
    assert labels == rekit.load(exported / "run", device="cpu").predict(records)
    sub = (exported / "sub.csv").read_text().splitlines()
    assert sub[0] == "id,pred_label,probs" and [s.split(",")[1] for s in sub[1:]] == labels


def test_int8_quantisation(exported):
    assert main(["export", str(exported / "run"), "--output", str(exported / "int8"), "--quantize"]) == 0
    manifest = json.loads((exported / "int8" / "rekit-onnx.json").read_text())
    assert manifest["quantized"] == "int8-dynamic"
    assert (exported / "int8" / "fold-0.onnx").stat().st_size < 0.5 * (exported / "onnx" / "fold-0.onnx").stat().st_size
    records, _ = read_records(exported / "test.csv")
    ref = rekit.load(exported / "onnx").predict_proba(records)
    probs = rekit.load(exported / "int8").predict_proba(records)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert np.abs(probs - ref).max() < 0.05  # the tiny model's int8 error; KLUE-RE numbers: BENCHMARKS.md


def test_export_errors_are_one_line(exported, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["export", str(exported / "run"), "--output", str(exported / "onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rekit: error: ") and "--overwrite" in err and "\n" not in err
    assert (exported / "onnx" / "fold-0.onnx").is_file()  # the existing export is left as it was
